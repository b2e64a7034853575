import re

from rest_framework import serializers

NAME_MAX = 63
# No control characters (C0, DEL, C1): the same rule in the schema and the check.
NAME_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def check_name(value: str) -> str:
    if _CONTROL.search(value):
        raise serializers.ValidationError("the name has a control character")
    return value


class DeviceSerializer(serializers.Serializer):
    mac = serializers.CharField(read_only=True, help_text="aa:bb:cc:dd:ee:ff")
    name = serializers.CharField(read_only=True, help_text="the given name, else the lease's hostname; '' if none")
    name_source = serializers.ChoiceField(["user", "static", "dhcp", ""], read_only=True,
                                          help_text="where the name comes from")
    vendor = serializers.CharField(read_only=True, help_text="from the IEEE OUI registry; '' if unknown")
    private = serializers.BooleanField(read_only=True, help_text="a locally administered (random) MAC")
    ipv4 = serializers.ListField(child=serializers.IPAddressField(protocol="IPv4"), read_only=True)
    ipv6 = serializers.ListField(child=serializers.IPAddressField(protocol="IPv6"), read_only=True)
    first_seen = serializers.DateTimeField(read_only=True)
    last_seen = serializers.DateTimeField(read_only=True)
    online = serializers.BooleanField(read_only=True, help_text="sent a frame in the last 5 minutes")
    paused = serializers.BooleanField(read_only=True, help_text="its frames are dropped but DHCP, DNS to the box,"
                                                                " ARP and neighbour discovery")
    counted = serializers.BooleanField(read_only=True, help_text="the running datapath counts its traffic")
    rx_bytes = serializers.IntegerField(read_only=True, min_value=0, help_text="delivered to the device")
    rx_packets = serializers.IntegerField(read_only=True, min_value=0)
    tx_bytes = serializers.IntegerField(read_only=True, min_value=0, help_text="sent by the device")
    tx_packets = serializers.IntegerField(read_only=True, min_value=0)


class StrictCharField(serializers.CharField):
    """A JSON string only (DRF's CharField turns a number into text)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """JSON true or false only (DRF's takes 0, 1, "yes", "off"...)."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class DeviceUpdateSerializer(serializers.Serializer):
    name = StrictCharField(max_length=NAME_MAX, allow_blank=True, trim_whitespace=False, required=False,
                                 help_text="the device's name; '' gives it back the lease's hostname")
    paused = StrictBooleanField(required=False, help_text="true: paused until resumed (within 2 s, no apply)")

    def validate_name(self, value: str) -> str:
        return check_name(value)

    def validate(self, attrs):
        unknown = sorted(set(self.initial_data) - set(self.fields)) if isinstance(self.initial_data, dict) else []
        if unknown:
            raise serializers.ValidationError({k: "not a field of a device (name, paused)" for k in unknown})
        return attrs


# What the schema says of a PATCH body (drf-spectacular cannot say "nothing else"); {} changes nothing.
UPDATE_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": NAME_MAX, "pattern": NAME_PATTERN,
                 "description": "the device's name; '' gives it back the lease's hostname"},
        "paused": {"type": "boolean", "description": "true: paused until resumed (within 2 s, no apply)"},
    },
    "additionalProperties": False,
}
