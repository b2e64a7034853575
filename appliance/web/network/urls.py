from django.urls import path

from appliance.web.network import views

app_name = "network"
urlpatterns = [
    path("", views.index, name="index"),
    path("wizard/", views.setup_wizard, name="wizard"),
    *[path(f"{key}/", views.edit_view(key, title, model), name=key) for key, title, model in views.SECTIONS],
]
