from rest_framework.routers import DefaultRouter

from appliance.web.audit.api import views

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("entries", views.AuditEntryViewSet)
urlpatterns = router.urls
