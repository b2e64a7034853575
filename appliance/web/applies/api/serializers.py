from rest_framework import serializers

from appliance.web.applies.models import ApplyRecord


class ApplyRecordSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApplyRecord
        fields = ["id", "created", "started", "finished", "username", "kind", "state", "task_id",
                  "settings", "previous", "needs_confirm", "confirm_reasons", "confirm_deadline",
                  "diff", "changes", "log", "error", "outcome", "rolled_back_by"]
        read_only_fields = fields


class ApplyRequestSerializer(serializers.Serializer):
    """No input: an apply puts the console's current settings document on the box."""


class TaskStatusSerializer(serializers.Serializer):
    task_id = serializers.CharField()
    state = serializers.CharField(help_text="Celery's: PENDING, STARTED, SUCCESS, FAILURE, RETRY")
    result = serializers.CharField(allow_null=True)
    apply = serializers.IntegerField(allow_null=True, help_text="the apply record of this task")
    apply_state = serializers.CharField(allow_null=True)
