from rest_framework.routers import DefaultRouter

from appliance.web.devices.api import views

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("", views.DeviceGroupViewSet, basename="device-group")
urlpatterns = router.urls
