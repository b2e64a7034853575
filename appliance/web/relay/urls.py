from django.urls import path

from appliance.web.relay import views

app_name = "relay"
urlpatterns = [
    path("", views.index, name="index"),
    path("config/", views.config_edit, name="config"),
]
