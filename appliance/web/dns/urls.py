from django.urls import path

from appliance.web.dns import views

app_name = "dns"
urlpatterns = [
    path("", views.index, name="index"),
    path("config/", views.config_edit, name="config"),
    path("log/", views.query_log, name="log"),
    path("fake-ips/flush/", views.flush_fake_ips, name="flush_fake_ips"),
]
