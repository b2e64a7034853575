from dataclasses import asdict

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from appliance.web.audit.log import record
from appliance.web.devices import inventory
from appliance.services.devices.policy import GROUP_MAX, GROUP_PATTERN, PolicyError, check_group
from appliance.web.devices.api.serializers import (
    GROUP_UPDATE_SCHEMA, UPDATE_SCHEMA, DeviceSerializer, DeviceUpdateSerializer, GroupSerializer,
    GroupUpdateSerializer,
)


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
        """Rename (`name`), pause or resume (`paused`) a device, put it in a group (`group`), give it
        schedules (`schedules`) or a data budget (`budget`). A pause takes effect at the device's
        next frame, a schedule within 2 s, without an apply; 503 when the box could not keep it."""
        found = self._get(mac)
        s = DeviceUpdateSerializer(data=request.data)
        s.is_valid(raise_exception=True)
        policy = {k: s.validated_data[k] for k in ("group", "schedules", "budget") if k in s.validated_data}
        if policy:
            try:
                inventory.set_policy(found.mac, policy)
            except OSError as e:
                return Response({"detail": f"the box could not keep it: {e}"},
                                status=status.HTTP_503_SERVICE_UNAVAILABLE)
            record(request.user, "device-policy", found.mac, ", ".join(sorted(policy)))
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


GROUP_NAME = OpenApiParameter("name", OpenApiTypes.STR, OpenApiParameter.PATH,
                              description="the group's name",
                              pattern=GROUP_PATTERN.replace("]*$", f"]{{1,{GROUP_MAX}}}$"))


class DeviceGroupViewSet(viewsets.ViewSet):
    """Groups of devices ("Kids"): a name on devices (`PATCH /api/devices/{mac}/` `group`), and the
    schedules that apply to every device of the group."""

    lookup_field = "name"
    lookup_value_regex = "[^/]+"
    serializer_class = GroupSerializer

    @extend_schema(responses=GroupSerializer(many=True))
    def list(self, request):
        """Every group: named on a device, or with schedules."""
        return Response(GroupSerializer(inventory.groups(), many=True).data)

    @extend_schema(parameters=[GROUP_NAME], responses=GroupSerializer)
    def retrieve(self, request, name=None):
        found = inventory.group(name or "")
        if found is None:
            raise NotFound("no such group")
        return Response(GroupSerializer(found).data)

    @extend_schema(parameters=[GROUP_NAME], request={"application/json": GROUP_UPDATE_SCHEMA},
                   responses=GroupSerializer)
    def update(self, request, name=None):
        """Set the group's schedules (the group is made if it was not there); within 2 s, no apply."""
        try:
            check_group(name or "", "name")
        except PolicyError as e:
            raise NotFound(f"no group can be called so: {e.message}") from None
        if not name:
            raise NotFound("no such group")
        s = GroupUpdateSerializer(data=request.data)
        s.is_valid(raise_exception=True)
        try:
            done = inventory.set_group_schedules(name, s.validated_data["schedules"])
        except OSError as e:
            return Response({"detail": f"the box could not keep it: {e}"}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        record(request.user, "group-schedules", name, f"{len(s.validated_data['schedules'])} schedules")
        return Response(GroupSerializer(done).data)

    @extend_schema(parameters=[GROUP_NAME], responses={204: None})
    def destroy(self, request, name=None):
        """Remove the group: its schedules, and its name from its devices."""
        if not inventory.delete_group(name or ""):
            raise NotFound("no such group")
        record(request.user, "delete-group", name)
        return Response(status=status.HTTP_204_NO_CONTENT)
