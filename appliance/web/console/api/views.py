from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from appliance.web.audit.log import record_failure
from appliance.web.console import lockout, tokens
from appliance.web.console.api import serializers as s
from appliance.web.console.views import status


class StatusView(APIView):
    """The dashboard's figures."""

    @extend_schema(responses={200: s.StatusSerializer})
    def get(self, request):
        return Response(status())


class TokenView(APIView):
    """Trade a user name and password (and TOTP code) for an API token; same lockout as the login page.

    The token is good for APPLIANCE_API_TOKEN_DAYS, and until the password changes.
    """

    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = [AnonRateThrottle]

    @extend_schema(request=s.TokenRequestSerializer, responses={200: s.TokenSerializer})
    def post(self, request):
        req = s.TokenRequestSerializer(data=request.data)
        req.is_valid(raise_exception=True)
        username, ip = req.validated_data["username"], lockout.client_ip(request)
        wait = lockout.locked(username, ip)
        if wait:
            record_failure("login-locked", f"{username} (API token)", ip)
            return Response({"detail": f"too many failed logins; try again in {lockout.wait_text(wait)}"},
                            status=429, headers={"Retry-After": str(int(wait + 0.999))})
        user = authenticate(request, username=username, password=req.validated_data["password"])
        device = getattr(user, "totp", None) if user else None
        if user is not None and device is not None and device.confirmed:
            if not device.verify(req.validated_data.get("code", "")):
                user = None
        if user is None:
            lockout.failed(username, ip)
            record_failure("login-failed", f"{username} (API token)", ip)
            return Response({"detail": "wrong user name, password or code"}, status=401)
        lockout.succeeded(username, ip)  # every factor was right
        token = tokens.fresh_token(user)
        return Response({"token": token.key, "expires": tokens.expires(token)})
