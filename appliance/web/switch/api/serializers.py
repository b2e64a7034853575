from rest_framework import serializers

from appliance.web.fields import StrictCharField
from appliance.web.sections import section_serializer
from appliance.web.switch import models

CustomFlowsSerializer = section_serializer(models.CustomFlows)


class FlowRowSerializer(serializers.Serializer):
    text = serializers.CharField()
    n_packets = serializers.IntegerField(allow_null=True)
    n_bytes = serializers.IntegerField(allow_null=True)


class FlowDumpSerializer(serializers.Serializer):
    bridge = serializers.CharField()
    rows = FlowRowSerializer(many=True)
    counters = serializers.CharField(allow_null=True, help_text="why there are no counters, if none")


class TraceRequestSerializer(serializers.Serializer):
    flow = StrictCharField(help_text="a packet in ofproto/trace syntax: in_port=downlink,udp,...")


class TraceSerializer(serializers.Serializer):
    reference = serializers.CharField()
    datapath = serializers.CharField()
    outputs = serializers.ListField(child=serializers.CharField())
    dropped = serializers.BooleanField()


class LintRequestSerializer(serializers.Serializer):
    custom = StrictCharField(allow_blank=True)


class FindingSerializer(serializers.Serializer):
    severity = serializers.CharField()
    message = serializers.CharField()
