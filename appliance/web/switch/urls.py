from django.urls import path

from appliance.web.switch import views

app_name = "switch"
urlpatterns = [
    path("", views.index, name="index"),
    path("flows/", views.flow_table, name="flows"),
    path("custom/", views.custom_edit, name="custom"),
    path("lint/", views.lint, name="lint"),
    path("trace/", views.trace, name="trace"),
]
