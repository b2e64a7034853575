from django.urls import path

from appliance.web.console import views

app_name = "console"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("tiles/", views.tiles, name="tiles"),
    path("status.json", views.status_json, name="status_json"),
    path("setup/", views.setup, name="setup"),
    path("login/", views.login_view, name="login"),
    path("login/totp/", views.totp_view, name="totp"),
    path("logout/", views.logout_view, name="logout"),
    path("account/", views.account, name="account"),
]
