from dataclasses import asdict

from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from appliance.web.audit.log import record
from appliance.web.devices import inventory
from appliance.web.devices.api.serializers import UPDATE_SCHEMA, DeviceSerializer, DeviceUpdateSerializer


class DeviceViewSet(viewsets.ViewSet):
    """The home's devices: what the box saw of each, and the traffic its datapath counted."""

    lookup_field = "mac"
    lookup_value_regex = "[^/]+"
    serializer_class = DeviceSerializer

    @extend_schema(responses=DeviceSerializer(many=True))
    def list(self, request):
        """Every device seen on the home side. `counted: false` on all of them: the datapath is not loaded."""
        views, _ = inventory.devices()
        return Response(DeviceSerializer([asdict(v) for v in views], many=True).data)

    @extend_schema(responses=DeviceSerializer)
    def retrieve(self, request, mac=None):
        return Response(DeviceSerializer(asdict(self._get(mac))).data)

    @extend_schema(request={"application/json": UPDATE_SCHEMA}, responses=DeviceSerializer)
    def partial_update(self, request, mac=None):
        """Rename (`name`), pause or resume (`paused`) a device. A pause takes effect at the
        device's next frame, without an apply; 503 when the box could not keep it."""
        found = self._get(mac)
        s = DeviceUpdateSerializer(data=request.data)
        s.is_valid(raise_exception=True)
        if "paused" in s.validated_data and s.validated_data["paused"] != found.paused:
            done = inventory.pause(found.mac, s.validated_data["paused"])
            if not done.ok:
                return Response({"detail": done.problem}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
            record(request.user, "pause-device" if s.validated_data["paused"] else "resume-device", found.mac)
        if "name" in s.validated_data:
            renamed = inventory.rename(found.mac, s.validated_data["name"])
            if renamed is None:
                raise NotFound("no such device")
            record(request.user, "rename-device", found.mac, f"{found.name!r} -> {renamed.name!r}")
        return Response(DeviceSerializer(asdict(self._get(found.mac))).data)

    @extend_schema(responses={204: None})
    def destroy(self, request, mac=None):
        found = self._get(mac)
        if not inventory.forget(found.mac):
            raise NotFound("no such device")
        record(request.user, "forget-device", found.mac)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _get(self, mac):
        found = inventory.device(mac or "")
        if found is None:
            raise NotFound("no such device")
        return found
