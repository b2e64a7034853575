"""Console-wide request handling: first-run redirect, seeding the document, security headers."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.shortcuts import redirect

_EXEMPT = ("/setup/", "/static/", "/api/", "/ws/")


class FirstRunMiddleware:
    """Until an admin account exists, every page leads to /setup/ (no default password)."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.has_users = False

    def __call__(self, request):
        if not self.has_users and not request.path.startswith(_EXEMPT):
            self.has_users = get_user_model().objects.exists()
            if not self.has_users:
                return redirect("/setup/")
        return self.get_response(request)


class DocumentSeedMiddleware:
    """An empty console starts from what the box runs, else from the wizard's proposal."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.seeded = False  # once there is a document there always is one (restore replaces it in one go)

    def __call__(self, request):
        from appliance.web.network.models import Ports

        if not self.seeded and not request.path.startswith("/static/"):
            if not Ports.objects.exists():
                seed()
            self.seeded = Ports.objects.exists()
        return self.get_response(request)


def seed() -> bool:
    from appliance.box.settings import parse_settings
    from appliance.web import boxes, document
    from appliance.web.network import wizard

    def initial():
        try:
            box = boxes.get_box()
            applied = box.applied_settings()
            if applied is not None:
                return applied
            found = wizard.detect(box.kernel, box.placement.host_ns)
        except Exception:  # noqa: BLE001 - no box to look at: the seed's defaults
            found = wizard.Detected()
        return parse_settings(wizard.propose(found))

    return document.ensure_document(initial)


class SecurityHeadersMiddleware:
    """A strict Content-Security-Policy: every script and style is served by the box itself.

    `connect-src 'self'` covers the console's own websocket (CSP 3: 'self' matches ws:/wss: of the
    page's host); `ws: wss:` allowed a script to send to any host at all.
    """

    CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
           "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        # Swagger UI starts itself with an inline script; its page alone goes without the policy.
        if not request.path.startswith("/api/docs"):
            response.setdefault("Content-Security-Policy", self.CSP)
        response.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        response.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        return response


class BackendDownMiddleware:
    """A view that needed Redis or the task queue while it is down answers 503 saying so, not 500.

    Pages that do not need them render as usual, with the banner
    (`appliance.web.console.banners`).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        from django.http import JsonResponse
        from django.shortcuts import render
        from kombu.exceptions import OperationalError
        from redis.exceptions import ConnectionError as RedisDown, TimeoutError as RedisSlow

        if not isinstance(exception, (RedisDown, RedisSlow, OperationalError)):
            return None
        from appliance.web.console import banners

        banners.forget()
        said = banners.backends() or [banners.Banner("error", "redis", f"Redis does not answer ({exception})")]
        if request.path.startswith("/api/"):
            return JsonResponse({"detail": said[0].text}, status=503)
        return render(request, "console/unavailable.html", {"banners": said}, status=503)
