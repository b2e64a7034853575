"""Serializer fields that take what the OpenAPI schema says and nothing DRF would coerce."""
from django.core.validators import RegexValidator
from rest_framework import serializers

from appliance.web.apischema import NO_NUL, ecma


def pattern_validator(pattern: str, message: str) -> RegexValidator:
    """A RegexValidator that reads `pattern` as JSON Schema does (ECMA-262) and shows it so in the
    schema (drf-spectacular writes `\\Z` back as `$`)."""
    return RegexValidator(ecma(pattern), message)


class StrictCharField(serializers.CharField):
    """Text only, taken as sent: DRF's CharField turns 5 into "5" and strips whitespace (so "  "
    becomes blank), both of which the schema (type: string, minLength) cannot say. NUL, which
    DRF refuses, is refused by a pattern the schema shows; a field with a pattern of its own
    (which the schema shows instead: one pattern a field) leaves NUL out in it."""

    def __init__(self, **kw):
        kw.setdefault("trim_whitespace", False)
        super().__init__(**kw)
        if not any(isinstance(v, RegexValidator) for v in self.validators):
            self.validators.insert(0, pattern_validator(NO_NUL, "NUL characters are not allowed"))

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)
