from rest_framework import serializers

from appliance.web.relay import models
from appliance.web.sections import SectionSerializer, section_doc


class RelayServiceSerializer(SectionSerializer):
    __doc__ = section_doc(models.RelayService)
    config = serializers.JSONField(allow_null=True, required=False)

    class Meta:
        model = models.RelayService
        fields = ["id", "config"]
        read_only_fields = ["id"]
