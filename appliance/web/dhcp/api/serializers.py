from rest_framework import serializers

from appliance.web.dhcp import models
from appliance.web.sections import section_serializer

DhcpServerSerializer = section_serializer(models.DhcpServer)
DhcpPoolSerializer = section_serializer(models.DhcpPool)
StaticLeaseSerializer = section_serializer(models.StaticLease)


class LeaseSerializer(serializers.Serializer):  # noqa: D101
    ip = serializers.CharField()
    mac = serializers.CharField()
    hostname = serializers.CharField(allow_blank=True)
    expires = serializers.IntegerField(help_text="unix time")
    state = serializers.IntegerField()


class LeaseListSerializer(serializers.Serializer):
    running = serializers.BooleanField(help_text="false: Kea is not running; `problem` says why")
    problem = serializers.CharField(allow_null=True)
    leases = LeaseSerializer(many=True)
