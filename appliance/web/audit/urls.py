from django.urls import path

from appliance.web.audit import views

app_name = "audit"
urlpatterns = [path("", views.index, name="index")]
