from django.urls import path

from appliance.web.stats.api import views

urlpatterns = [
    path("series/", views.SeriesView.as_view(), name="series"),
    path("top-devices/", views.TopDevicesView.as_view(), name="top-devices"),
]
