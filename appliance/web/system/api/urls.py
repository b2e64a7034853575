from django.urls import path
from rest_framework.routers import DefaultRouter

from appliance.web.sections import singleton_routes
from appliance.web.system.api import views

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("ssh-keys", views.SshKeyViewSet, basename="sshkey")
urlpatterns = [
    path("settings/", views.SettingsDocumentView.as_view(), name="settings"),
    path("alerts/", singleton_routes(views.AlertsViewSet), name="alerts"),
    *router.urls,
]
