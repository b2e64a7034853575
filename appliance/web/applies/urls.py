from django.urls import path

from appliance.web.applies import views

app_name = "applies"
urlpatterns = [
    path("", views.index, name="index"),
    path("apply/", views.apply, name="apply"),
    path("<int:pk>/", views.detail, name="detail"),
    path("<int:pk>/confirm/", views.confirm, name="confirm"),
    path("<int:pk>/rollback/", views.rollback, name="rollback"),
]
