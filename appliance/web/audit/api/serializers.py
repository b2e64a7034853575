from rest_framework import serializers

from appliance.web.audit.models import AuditEntry


class AuditEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEntry
        fields = ["id", "time", "username", "source", "action", "target", "count", "last", "diff"]
