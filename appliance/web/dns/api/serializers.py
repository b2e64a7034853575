from rest_framework import serializers

from appliance.web.dns import models
from appliance.web.sections import SectionSerializer, section_doc


class DnsServiceSerializer(SectionSerializer):
    __doc__ = section_doc(models.DnsService)
    config = serializers.JSONField(allow_null=True, required=False)

    class Meta:
        model = models.DnsService
        fields = ["id", "config"]
        read_only_fields = ["id"]
