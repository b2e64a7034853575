"""Serializer fields that take what the OpenAPI schema says and nothing DRF would coerce."""
from rest_framework import serializers


class StrictCharField(serializers.CharField):
    """Text only: DRF's CharField turns 5 into "5", which the schema (type: string) refuses."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)
