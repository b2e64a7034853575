import base64
import struct

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from appliance.web.apischema import RuleConflict
from appliance.web.fields import StrictCharField, pattern_validator
from appliance.web.sections import section_serializer
from appliance.web.system.models import KEY_TYPES, Alerts, SshKey

_B64 = "[A-Za-z0-9+/]"
_B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _key_data(key_type: str) -> str:
    """The base64 of a key of `key_type` as a pattern: the blob starts with the type's name (a
    32-bit length, then the name), so its first characters are fixed; then whole, padded base64.

    What the model checks (base64 that decodes, the type's name in the blob) is then the pattern's
    to say, and a key the schema allows is one the API takes.
    """
    head = struct.pack(">I", len(key_type)) + key_type.encode()
    whole, known = divmod(len(head), 3)
    fixed = base64.b64encode(head[:whole * 3]).decode()
    tail = "(" + _B64 + "{4})*(" + _B64 + "{2}==|" + _B64 + "{3}=)?"
    if not known:
        return fixed + tail
    # The next group of four: its first `known` characters fixed, the next one's high bits fixed.
    part = base64.b64encode(head[whole * 3:] + b"\0" * (3 - known)).decode()[:known + 1]
    free_bits = 2 * (3 - known)  # of the last character `part` names, those the next byte sets
    last = part[-1]
    base = _B64_ALPHABET.index(last) & ~((1 << free_bits) - 1)
    choices = "".join(_B64_ALPHABET[base + i] for i in range(1 << free_bits))
    group_rest = 4 - known - 1
    after = ("(" + _B64 + "{" + str(group_rest) + "}" + tail + "|" +
             ("==" if group_rest == 2 else "") + ("|" + _B64 + "=" if group_rest == 2 else "=") + ")")
    return fixed + part[:-1] + "[" + choices + "]" + after


# One line of authorized_keys: a type the box takes, its key data, an optional comment.
KEY_PATTERN = ("^(" + "|".join(f"{t.replace('.', chr(92) + '.')} {_key_data(t)}" for t in KEY_TYPES)
               + ")( [^\\x00\\n\\r]*)?$")


class SshKeySerializer(serializers.ModelSerializer):
    name = StrictCharField(max_length=64)
    key = StrictCharField(help_text="one line of authorized_keys: type, base64, comment",
                          validators=[pattern_validator(KEY_PATTERN, "expected '<type> <base64> [comment]' with "
                                                                     f"a type of {', '.join(KEY_TYPES)}")])

    class Meta:
        model = SshKey
        fields = ["id", "name", "key", "added"]
        read_only_fields = ["id", "added"]

    def _checked(self, attrs, instance=None):
        # Here, not in validate(): DRF turns whatever validate() raises into a 400, and a name
        # another key has, or a key the pattern allows and the model refuses, is a state's refusal.
        obj = SshKey(**{**({"name": instance.name, "key": instance.key} if instance else {}), **attrs})
        errors = {}
        others = SshKey.objects.filter(name=obj.name)
        if instance is not None:
            others = others.exclude(pk=instance.pk)
        if others.exists():
            errors["name"] = [f"another key is called {obj.name!r}"]
        try:
            obj.clean()
        except DjangoValidationError as e:
            errors.update(e.message_dict)
        if errors:
            raise RuleConflict(errors)

    def create(self, validated_data):
        self._checked(validated_data)
        return super().create(validated_data)

    def update(self, instance, validated_data):
        self._checked(validated_data, instance)
        return super().update(instance, validated_data)


class SettingsDocumentSerializer(serializers.Serializer):
    """The whole settings document (the backup format); see appliance.box.settings."""

    document = serializers.JSONField()


AlertsSerializer = section_serializer(Alerts)
