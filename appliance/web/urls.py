from django.contrib.staticfiles.views import serve as static_serve
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from appliance.web.core import views


api = [
    path("", include("appliance.web.console.api.urls")),
    path("network/", include(("appliance.web.network.api.urls", "network-api"))),
    path("dhcp/", include(("appliance.web.dhcp.api.urls", "dhcp-api"))),
    path("dns/", include(("appliance.web.dns.api.urls", "dns-api"))),
    path("relay/", include(("appliance.web.relay.api.urls", "relay-api"))),
    path("devices/", include(("appliance.web.devices.api.urls", "devices-api"))),
    path("stats/", include(("appliance.web.stats.api.urls", "stats-api"))),
    path("device-groups/", include(("appliance.web.devices.api.group_urls", "device-groups-api"))),
    path("switch/", include(("appliance.web.switch.api.urls", "switch-api"))),
    path("", include("appliance.web.applies.api.urls")),
    path("audit/", include("appliance.web.audit.api.urls")),
    path("system/", include("appliance.web.system.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]

handler404 = "appliance.web.console.views.not_found"
handler500 = "appliance.web.console.views.server_error"

urlpatterns = [
    # The API first: no other pattern starts with "api/", and an API call no longer
    # walks (and fails) the console's "" include on every request.
    path("api/", include(api)),
    path("", include("appliance.web.console.urls")),
    path("network/", include("appliance.web.network.urls")),
    path("dhcp/", include("appliance.web.dhcp.urls")),
    path("dns/", include("appliance.web.dns.urls")),
    path("relay/", include("appliance.web.relay.urls")),
    path("devices/", include("appliance.web.devices.urls")),
    path("stats/", include("appliance.web.stats.urls")),
    path("switch/", include("appliance.web.switch.urls")),
    path("applies/", include("appliance.web.applies.urls")),
    path("audit/", include("appliance.web.audit.urls")),
    path("system/", include("appliance.web.system.urls")),
    path("home/", views.home, name="home"),
    # The box has no separate web server: the console's ASGI server serves its own
    # files (htmx, uPlot, CSS, JS) from the apps' static/ directories.
    re_path(r"^static/(?P<path>.*)$", static_serve, {"insecure": True}),
]
