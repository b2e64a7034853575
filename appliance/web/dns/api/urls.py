from django.urls import path

from appliance.web.dns.api import views
from appliance.web.sections import singleton_routes

urlpatterns = [
    path("config/", singleton_routes(views.DnsServiceViewSet), name="config"),
    path("stats/", views.DnsStatsView.as_view(), name="stats"),
    path("log/", views.DnsLogView.as_view(), name="log"),
    path("fake-ips/flush/", views.DnsFakeIpFlushView.as_view(), name="fake-ips-flush"),
]
