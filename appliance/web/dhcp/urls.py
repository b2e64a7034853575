from django.urls import path

from appliance.web.dhcp import views

app_name = "dhcp"
urlpatterns = [
    path("", views.index, name="index"),
    path("server/", views.server_edit, name="server"),
    path("leases/", views.lease_table, name="leases"),
    path("leases/make-static/", views.make_static, name="make_static"),
    path("pools/add/", views.pool_edit, name="pool_add"),
    path("pools/<int:pk>/", views.pool_edit, name="pool_edit"),
    path("pools/<int:pk>/delete/", views.pool_delete, name="pool_delete"),
    path("static/add/", views.static_edit, name="static_add"),
    path("static/<int:pk>/", views.static_edit, name="static_edit"),
    path("static/<int:pk>/delete/", views.static_delete, name="static_delete"),
]
