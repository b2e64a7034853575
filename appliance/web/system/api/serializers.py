import re

from django.core.validators import RegexValidator
from django.db import models
from rest_framework import serializers

from appliance.web.fields import StrictCharField
from appliance.web.system.models import KEY_TYPES, SshKey

# One line of authorized_keys as the schema can say it: a known type, base64, an optional comment.
KEY_PATTERN = (r"^(" + "|".join(re.escape(t) for t in KEY_TYPES) + r") [A-Za-z0-9+/]+={0,2}( [^\n\r]*)?$")


class SshKeySerializer(serializers.ModelSerializer):
    serializer_field_mapping = {**serializers.ModelSerializer.serializer_field_mapping,
                                models.CharField: StrictCharField, models.TextField: StrictCharField}

    class Meta:
        model = SshKey
        fields = ["id", "name", "key", "added"]
        read_only_fields = ["id", "added"]
        extra_kwargs = {"key": {"validators": [RegexValidator(KEY_PATTERN, "expected '<type> <base64> [comment]' "
                                                                           f"with a type of {', '.join(KEY_TYPES)}")]}}

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
