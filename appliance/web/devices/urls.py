from django.urls import path

from appliance.web.devices import views

app_name = "devices"
urlpatterns = [
    path("", views.index, name="index"),
    # Before the device's paths: a group may be called "pause".
    path("groups/<str:name>/", views.group, name="group"),
    path("<str:mac>/rename/", views.rename, name="rename"),
    path("<str:mac>/forget/", views.forget, name="forget"),
    path("<str:mac>/pause/", views.pause, name="pause"),
    path("<str:mac>/policy/", views.policy, name="policy"),

]
