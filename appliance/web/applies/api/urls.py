from django.urls import path
from rest_framework.routers import DefaultRouter

from appliance.web.applies.api import views

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("applies", views.ApplyViewSet, basename="apply")
urlpatterns = [
    path("tasks/<str:task_id>/", views.TaskStatusView.as_view(), name="task"),
    *router.urls,
]
