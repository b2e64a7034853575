import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "appliance.web.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi = get_asgi_application()  # sets Django up before the imports below

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.urls import get_resolver  # noqa: E402

from appliance.web.console.routing import websocket_urlpatterns  # noqa: E402
from appliance.web.wsgibridge import WSGIApp  # noqa: E402

# Every view is sync. Django's ASGI handler runs each request in a thread
# made for it, with a database connection opened for it and a thread hop per
# middleware boundary: under load that was most of a request's cost. As WSGI
# (`wsgibridge`: one hop into a thread and one back per request) the views run
# in a few long-lived threads per worker process, each keeping its SQLite
# connection (CONN_MAX_AGE); the worker processes give the parallelism
# (appliance.web.serve). The websocket stays async, on the same socket.
# (asgiref's own WsgiToAsgi shares the thread-sensitive executor with
# async_to_sync in the views and breaks when an apply event is sent.)
application = ProtocolTypeRouter({
    "http": WSGIApp(get_wsgi_application(), threads=int(os.environ.get("APPLIANCE_WEB_THREADS", "2")),
                    max_body=settings.APPLIANCE_MAX_BODY_BYTES),
    # Session-authenticated, same-origin only: the console's own pages.
    "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
})

# Everything imported so far lives as long as the process: out of the collector's
# sight, so a full collection walks only what requests made since (it walked
# ~150,000 objects of Django, DRF and the app, a pause of every request thread).
get_resolver().url_patterns  # every view module imported now, not by the first request
# The IEEE registry (42,000 vendors) read now, not by the first devices page, and frozen with the rest.
from appliance.web.devices import oui  # noqa: E402
oui.registry(oui.REGISTRY_DIR)
from appliance.web import warm  # noqa: E402
warm.warm()  # what the first requests would load while the others wait (warm.py)
gc.collect()
gc.freeze()
