from rest_framework import serializers

from appliance.web.applies.models import ApplyRecord


class ApplyRecordSerializer(serializers.ModelSerializer):
    confirm_deadline = serializers.SerializerMethodField(
        help_text="when an unconfirmed apply is rolled back, as the box's wall clock shows it now")
    confirm_seconds_left = serializers.SerializerMethodField(
        help_text="seconds until the rollback of an unconfirmed apply (on a clock that does not jump)")

    def get_confirm_deadline(self, rec) -> str | None:
        from appliance.web.applies.service import shown_deadline

        shown = shown_deadline(rec)
        return shown.isoformat() if shown else None

    def get_confirm_seconds_left(self, rec) -> float | None:
        from appliance.web.applies.service import seconds_left

        return round(seconds_left(rec), 1) if rec.state == ApplyRecord.AWAITING else None

    class Meta:
        model = ApplyRecord
        fields = ["id", "created", "started", "finished", "username", "kind", "state", "task_id",
                  "settings", "previous", "needs_confirm", "confirm_reasons", "confirm_deadline",
                  "confirm_seconds_left",
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
