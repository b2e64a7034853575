"""The OpenAPI schema: every operation documents its error answers too.

DRF answers 400 (field-keyed errors), 401/403 (no or bad credentials),
404, 405, 409 (an apply waits, a state forbids) and 503 (a service is not
running) with a JSON object; drf-spectacular lists only the success by
default, so they are added here, once.
"""
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

ERRORS = {
    "400": "invalid input: {field path: [messages]}",
    "401": "not authenticated",
    "403": "not allowed",
    "404": "no such object",
    "405": "method not allowed",
    "409": "conflict with the box's state (an apply waits for a confirm, a record is settled)",
    "415": "unsupported media type",
    "429": "too many attempts",
    "503": "the service behind this endpoint is not running",
}


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(required=False)


class ApplianceAutoSchema(AutoSchema):
    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        # Errors are JSON objects: {"detail": ...} or {field: [messages]}.
        error = {"content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}}}
        for code, text in ERRORS.items():
            responses.setdefault(code, {"description": text, **error})
        return responses


__all__ = ["ApplianceAutoSchema", "OpenApiResponse"]
