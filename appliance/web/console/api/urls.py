from django.urls import path

from appliance.web.console.api import views

urlpatterns = [
    path("status/", views.StatusView.as_view(), name="status"),
    path("auth/token/", views.TokenView.as_view(), name="token"),
]
