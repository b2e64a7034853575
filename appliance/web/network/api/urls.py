from django.urls import path

from appliance.web.network.api import views
from appliance.web.sections import singleton_routes

urlpatterns = [
    path("ports/", singleton_routes(views.PortsViewSet), name="ports"),
    path("gateway/", singleton_routes(views.GatewayViewSet), name="gateway"),
    path("lan/", singleton_routes(views.LanViewSet), name="lan"),
    path("admin/", singleton_routes(views.AdminViewSet), name="admin"),
    path("vproxy/", singleton_routes(views.VProxyViewSet), name="vproxy"),
    path("ipv6/", singleton_routes(views.Ipv6ViewSet), name="ipv6"),
    path("failsafe/", singleton_routes(views.FailsafeViewSet), name="failsafe"),
]
