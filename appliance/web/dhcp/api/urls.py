from django.urls import path
from rest_framework.routers import DefaultRouter

from appliance.web.dhcp.api import views
from appliance.web.sections import singleton_routes

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("pools", views.DhcpPoolViewSet, basename="dhcppool")
router.register("static-leases", views.StaticLeaseViewSet, basename="staticlease")
urlpatterns = [
    path("server/", singleton_routes(views.DhcpServerViewSet), name="server"),
    path("leases/", views.LeaseListView.as_view(), name="leases"),
    *router.urls,
]
