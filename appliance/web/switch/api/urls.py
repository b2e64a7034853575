from django.urls import path

from appliance.web.sections import singleton_routes
from appliance.web.switch.api import views

urlpatterns = [
    path("custom-flows/", singleton_routes(views.CustomFlowsViewSet), name="custom-flows"),
    path("flows/", views.FlowDumpView.as_view(), name="flows"),
    path("trace/", views.TraceView.as_view(), name="trace"),
    path("lint/", views.LintView.as_view(), name="lint"),
]
