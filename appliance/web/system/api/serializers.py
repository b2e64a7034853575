from rest_framework import serializers

from appliance.web.system.models import SshKey


class SshKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = SshKey
        fields = ["id", "name", "key", "added"]
        read_only_fields = ["id", "added"]

    def validate(self, attrs):
        from django.core.exceptions import ValidationError as DjangoValidationError

        from appliance.web.sections import drf_errors

        obj = SshKey(**{**({"name": self.instance.name, "key": self.instance.key} if self.instance else {}),
                        **attrs})
        try:
            obj.clean()
        except DjangoValidationError as e:
            raise serializers.ValidationError(drf_errors(e)) from None
        return attrs


class SettingsDocumentSerializer(serializers.Serializer):
    """The whole settings document (the backup format); see appliance.box.settings."""

    document = serializers.JSONField()
