from django.urls import path

from appliance.web.core import views

urlpatterns = [
    path("", views.home, name="home"),
]
