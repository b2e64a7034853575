from rest_framework import serializers

from appliance.web.relay import models
from appliance.web.sections import SectionSerializer


class RelayServiceSerializer(SectionSerializer):
    config = serializers.JSONField(allow_null=True, required=False)

    class Meta:
        model = models.RelayService
        fields = ["id", "config"]
        read_only_fields = ["id"]
