"""The OpenAPI schema: every operation documents its error answers too, and the settings' rules.

DRF answers 400 (the body breaks the schema; field-keyed errors), 401/403
(no or bad credentials), 404, 405, 409 (a state forbids: an apply waits,
or the settings' rules refuse a body the schema allows) and 503 (a service
is not running) with a JSON object; drf-spectacular lists only the success
by default, so they are added here, once. 413 for every operation with a
body (wsgibridge.py refuses it before reading). A settings section's fields
carry the document's own schema (`apischema`), checked before anything else;
what a JSON schema cannot hold (rules between fields, against the rest of
the document) is listed in words in the operation's description and in
`x-cross-field-rules`, and a body that breaks one is answered 409, never
400: a body the schema allows is never "malformed".
"""
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

ERRORS = {
    "400": "the body or a parameter is not what the schema says: {field path: [messages]}",
    "401": "not authenticated",
    "403": "not allowed",
    "404": "no such object",
    "405": "method not allowed",
    "409": "conflict with the state: the settings' rules refuse a body the schema allows ({field path: "
           "[messages]}, the rules in the operation's description), an apply waits for a confirm, a record "
           "is settled",
    "415": "unsupported media type",
    "429": "too many attempts",
    "503": "the service behind this endpoint is not running",
}


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(required=False)


BODY_TOO_LARGE = ("413", "the body is larger than APPLIANCE_MAX_BODY_BYTES (a settings document: "
                        "APPLIANCE_RESTORE_MAX_BYTES); refused before it is read when its length is declared")


def _section_path(view) -> str | None:
    """The document path of the section a view writes, or None.

    "" is a top-level key's section (`failsafe`), not the whole document:
    a view that writes the whole document says so by `writes_document`.
    """
    from appliance.web.sections import SectionSerializer

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
        whole = getattr(self.view, "writes_document", False)
        where = None if whole else _section_path(self.view)
        if whole:
            # The whole document, in and out: its own schema (drf-spectacular sees a plain object).
            if "requestBody" in operation:
                operation["requestBody"] = {"content": {"application/json": {
                    "schema": apischema.document_request_schema()}}, "required": True}
            if "200" in operation["responses"]:
                operation["responses"]["200"]["content"] = {"application/json": {
                    "schema": apischema.document_schema()}}
        if (whole or where is not None) and method in ("POST", "PUT", "PATCH", "DELETE"):
            rules = ([r for rules in apischema.CROSS_FIELD_RULES.values() for r in rules] if whole
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
    # What the schema cannot say, said in words: a body it allows may still be refused by these (409).
    operation["x-cross-field-rules"] = operation.get("x-cross-field-rules", []) + list(rules)
    operation["description"] = (operation.get("description", "") + "\n\nRules the schema cannot hold (a "
                                "body that breaks one is refused with 409 naming the field):\n"
                                + "\n".join(f"- {r}" for r in rules)).strip()


def _mend(node):
    """Two ways drf-spectacular's OpenAPI 3.1 refuses what the API takes, mended in every node:

    - a nullable free-form field is `oneOf: [{}, null]`, which null matches twice (so no value
      is valid): it is any value;
    - a blank-allowed field with a pattern is `oneOf: [pattern, maxLength 0]`, and a pattern that
      admits "" (NUL-free text: `^[^\\u0000]*$`) matches "" twice: either will do, `anyOf`.
    """
    if isinstance(node, dict):
        alts = node.get("oneOf")
        if alts == [{}, {"type": "null"}]:
            node.pop("oneOf")
        elif isinstance(alts, list) and {"type": "string", "maxLength": 0} in alts:
            node["anyOf"] = node.pop("oneOf")
        for v in node.values():
            _mend(v)
    elif isinstance(node, list):
        for v in node:
            _mend(v)


def _token_first(result: dict) -> None:
    # Either scheme will do. The token is listed first: it is how an API client authenticates (the
    # session's cookie comes from the console's login page), and a checker that takes the first
    # listed scheme as the one in use (schemathesis' ignored_auth) then probes the one sent.
    for item in result.get("paths", {}).values():
        for operation in item.values():
            security = operation.get("security") if isinstance(operation, dict) else None
            if security:
                security.sort(key=lambda s: "tokenAuth" not in s)


def postprocess(result, generator, request, public):
    _mend(result)
    _token_first(result)
    return result


__all__ = ["ApplianceAutoSchema", "OpenApiResponse"]
