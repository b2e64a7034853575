from django.urls import path

from appliance.web.relay.api import views
from appliance.web.sections import singleton_routes

urlpatterns = [
    path("config/", singleton_routes(views.RelayServiceViewSet), name="config"),
    path("stats/", views.RelayStatsView.as_view(), name="stats"),
    path("connections/", views.RelayConnectionsView.as_view(), name="connections"),
]
