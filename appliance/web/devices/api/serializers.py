import re

from rest_framework import serializers

from appliance.services.devices.policy import (
    BUDGET_MAX, DAYS, GROUP_MAX, GROUP_PATTERN, MAX_SCHEDULES, PERIODS, TIME_PATTERN, Budget, PolicyError,
    check_group, schedules_from_json,
)

NAME_MAX = 63
# No control characters (C0, DEL, C1): the same rule in the schema and the check.
NAME_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def check_name(value: str) -> str:
    if _CONTROL.search(value):
        raise serializers.ValidationError("the name has a control character")
    return value


class ScheduleSerializer(serializers.Serializer):
    days = serializers.ListField(child=serializers.ChoiceField(DAYS), read_only=True,
                                 help_text="the days a period starts on")
    start = serializers.RegexField(TIME_PATTERN, read_only=True, help_text="HH:MM, the box's local time")
    end = serializers.RegexField(TIME_PATTERN, read_only=True,
                                 help_text="HH:MM; before start: the next morning; equal to start: a whole day")


class BudgetSerializer(serializers.Serializer):
    bytes = serializers.IntegerField(read_only=True, min_value=1, max_value=BUDGET_MAX,
                                     help_text="both ways, in the period")
    period = serializers.ChoiceField(PERIODS, read_only=True, help_text="the box's local day or month")


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
    scheduled_off = serializers.BooleanField(read_only=True, help_text="a schedule (its own or its group's) has "
                                                                     "it off now: dropped as a paused device")
    group = serializers.CharField(read_only=True, help_text="'' if none; its group's schedules apply to it too")
    schedules = ScheduleSerializer(many=True, read_only=True, help_text="its own schedules")
    budget = BudgetSerializer(read_only=True, allow_null=True, help_text="null: none")
    used_today = serializers.IntegerField(read_only=True, min_value=0,
                                          help_text="bytes both ways this day (the box's local time)")
    used_month = serializers.IntegerField(read_only=True, min_value=0, help_text="bytes both ways this month")
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


def _policy_field(parse, value, field: str):
    """`parse(value)`, a PolicyError as this field's error (its path below the field kept)."""
    try:
        return parse(value)
    except PolicyError as e:
        raise serializers.ValidationError(f"{e.field}: {e.message}" if e.field != field else e.message) from None


class DeviceUpdateSerializer(serializers.Serializer):
    name = StrictCharField(max_length=NAME_MAX, allow_blank=True, trim_whitespace=False, required=False,
                           help_text="the device's name; '' gives it back the lease's hostname")
    paused = StrictBooleanField(required=False, help_text="true: paused until resumed (within 2 s, no apply)")
    group = StrictCharField(max_length=GROUP_MAX, allow_blank=True, trim_whitespace=False, required=False)
    schedules = serializers.JSONField(required=False)
    budget = serializers.JSONField(required=False, allow_null=True)

    def validate_name(self, value: str) -> str:
        return check_name(value)

    def validate_group(self, value: str) -> str:
        return _policy_field(lambda v: check_group(v, "group"), value, "group")

    def validate_schedules(self, value):
        return _policy_field(lambda v: schedules_from_json(v, "schedules"), value, "schedules")

    def validate_budget(self, value):
        return None if value is None else _policy_field(lambda v: Budget.from_json(v, "budget"), value, "budget")

    def validate(self, attrs):
        unknown = sorted(set(self.initial_data) - set(self.fields)) if isinstance(self.initial_data, dict) else []
        if unknown:
            raise serializers.ValidationError(
                {k: f"not a field of a device ({', '.join(self.fields)})" for k in unknown})
        return attrs


class GroupUpdateSerializer(serializers.Serializer):
    # A PUT replaces: a body without schedules (or none) leaves the group none.
    schedules = serializers.JSONField(required=False, default=list)

    def validate_schedules(self, value):
        return _policy_field(lambda v: schedules_from_json(v, "schedules"), value, "schedules")

    def validate(self, attrs):
        unknown = sorted(set(self.initial_data) - set(self.fields)) if isinstance(self.initial_data, dict) else []
        if unknown:
            raise serializers.ValidationError({k: "not a field of a group (schedules)" for k in unknown})
        return attrs


class GroupSerializer(serializers.Serializer):
    name = serializers.CharField(read_only=True)
    schedules = ScheduleSerializer(many=True, read_only=True, help_text="they apply to every device of the group")
    devices = serializers.ListField(child=serializers.CharField(), read_only=True, help_text="its devices' MACs")


SCHEDULE_SCHEMA = {
    "type": "object",
    "description": "off from start to end on periods starting on days, in the box's local time; an end before "
                   "the start is the next morning, an end equal to the start a whole day",
    "properties": {
        "days": {"type": "array", "items": {"type": "string", "enum": list(DAYS)}, "minItems": 1, "maxItems": 7,
                 "uniqueItems": True, "description": "the days a period starts on"},
        "start": {"type": "string", "pattern": TIME_PATTERN, "description": "HH:MM"},
        "end": {"type": "string", "pattern": TIME_PATTERN, "description": "HH:MM"},
    },
    "required": ["days", "start", "end"],
    "additionalProperties": False,
}
SCHEDULES_SCHEMA = {"type": "array", "items": SCHEDULE_SCHEMA, "maxItems": MAX_SCHEDULES}
BUDGET_SCHEMA = {
    "type": "object", "nullable": True,
    "description": "an over-budget event (and alert) once per period when crossed; null: no budget",
    "properties": {
        "bytes": {"type": "integer", "minimum": 1, "maximum": BUDGET_MAX, "description": "both ways"},
        "period": {"type": "string", "enum": list(PERIODS)},
    },
    "required": ["bytes", "period"],
    "additionalProperties": False,
}

# What the schema says of a PATCH body (drf-spectacular cannot say "nothing else"); {} changes nothing.
UPDATE_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": NAME_MAX, "pattern": NAME_PATTERN,
                 "description": "the device's name; '' gives it back the lease's hostname"},
        "paused": {"type": "boolean", "description": "true: paused until resumed (within 2 s, no apply)"},
        "group": {"type": "string", "maxLength": GROUP_MAX, "pattern": GROUP_PATTERN,
                  "description": "its group ('' none): the group's schedules apply to it (within 2 s, no apply)"},
        "schedules": {**SCHEDULES_SCHEMA, "description": "its own schedules, in place of those it had "
                                                          "(within 2 s, no apply)"},
        "budget": BUDGET_SCHEMA,
    },
    "additionalProperties": False,
}
GROUP_UPDATE_SCHEMA = {
    "type": "object",
    "properties": {"schedules": {**SCHEDULES_SCHEMA, "description": "the group's schedules, in place of those "
                                                                     "it had; [] or left out: none"}},
    "additionalProperties": False,
}
