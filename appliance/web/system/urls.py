from django.urls import path

from appliance.web.system import views

app_name = "system"
urlpatterns = [
    path("", views.index, name="index"),
    path("backup/", views.backup, name="backup"),
    path("alerts/", views.alerts_edit, name="alerts"),
    path("restore/", views.restore, name="restore"),
    path("keys/add/", views.key_add, name="key_add"),
    path("keys/<int:pk>/delete/", views.key_delete, name="key_delete"),
]
