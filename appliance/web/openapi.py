"""The OpenAPI schema: every operation documents its error answers too, and the settings' rules.

DRF answers 400 (field-keyed errors), 401/403 (no or bad credentials),
404, 405, 409 (an apply waits, a state forbids) and 503 (a service is not
running) with a JSON object; drf-spectacular lists only the success by
default, so they are added here, once. 413 for every operation with a body
(wsgibridge.py refuses it before reading). A settings section's fields carry
the document's own schema (`apischema`), and a write that rules between
fields can still refuse lists them (`x-cross-field-rules`, in words in the
description): the only bodies the schema allows that the API refuses.
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


BODY_TOO_LARGE = ("413", "the body is larger than APPLIANCE_MAX_BODY_BYTES (a settings document: "
                        "APPLIANCE_RESTORE_MAX_BYTES); refused before it is read when its length is declared")


def _doc_path(view) -> str | None:
    """The settings document path a view writes ("" the whole document), or None."""
    from appliance.web.sections import SectionSerializer

    if getattr(view, "writes_document", False):
        return ""
    serializer = getattr(view, "serializer_class", None)
    if serializer is not None and issubclass(serializer, SectionSerializer):
        return serializer.Meta.model.doc_path
    return None


class ApplianceAutoSchema(AutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        from appliance.web import apischema

        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        error = {"content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}}}
        if method in ("POST", "PUT", "PATCH"):
            operation["responses"].setdefault(BODY_TOO_LARGE[0], {"description": BODY_TOO_LARGE[1], **error})
        rules = getattr(self.view, "schema_rules", None)
        if rules and method in ("POST", "PUT", "PATCH"):
            _describe_rules(operation, rules)
        where = _doc_path(self.view)
        if where == "":
            # The whole document, in and out: its own schema (drf-spectacular sees a plain object).
            doc = {"application/json": {"schema": apischema.document_schema()}}
            if "requestBody" in operation:
                operation["requestBody"] = {"content": doc, "required": True}
            if "200" in operation["responses"]:
                operation["responses"]["200"]["content"] = doc
        if where is not None and method in ("POST", "PUT", "PATCH", "DELETE"):
            rules = ([r for rules in apischema.CROSS_FIELD_RULES.values() for r in rules] if where == ""
                     else apischema.cross_field_rules(where))
            if rules:
                _describe_rules(operation, rules)
        return operation


    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        # A settings section's field: the document's own schema (apischema), which the API checks.
        from appliance.web.apischema import section_field_schema
        from appliance.web.sections import SectionSerializer

        if isinstance(field.parent, SectionSerializer):
            schema = section_field_schema(field.parent.Meta.model, field.field_name)
            if schema is not None:
                if field.read_only:
                    schema["readOnly"] = True
                if field.help_text and "description" not in schema:
                    schema["description"] = str(field.help_text)
                return schema
        return super()._map_serializer_field(field, direction, bypass_extensions)

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        # Errors are JSON objects: {"detail": ...} or {field: [messages]}.
        error = {"content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}}}
        for code, text in ERRORS.items():
            responses.setdefault(code, {"description": text, **error})
        return responses


def _describe_rules(operation: dict, rules: list[str]) -> None:
    # What the schema cannot say, said in words: a body it allows may still be refused (400) by these.
    operation["x-cross-field-rules"] = list(rules)
    operation["description"] = (operation.get("description", "") + "\n\nRules across fields (not in the "
                                "schema; a body that breaks one is refused with 400 naming the field):\n"
                                + "\n".join(f"- {r}" for r in rules)).strip()


def _any_or_null(node):
    """OpenAPI 3.1 as drf-spectacular writes a nullable free-form field is `oneOf: [{}, null]`, which
    null matches twice (so no value is valid): it is any value."""
    if isinstance(node, dict):
        if node.get("oneOf") == [{}, {"type": "null"}]:
            node.pop("oneOf")
        for v in node.values():
            _any_or_null(v)
    elif isinstance(node, list):
        for v in node:
            _any_or_null(v)


def postprocess(result, generator, request, public):
    _any_or_null(result)
    return result


__all__ = ["ApplianceAutoSchema", "OpenApiResponse"]
