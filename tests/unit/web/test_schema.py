"""Schemathesis against the OpenAPI schema, in-process (WSGI) on the fake box: every check.

No 5xx; every answer documented (status, content type, body); bodies the
schema refuses are refused (400, the field named); bodies it allows are
accepted or refused by the settings' rules as a conflict (409), never 400;
no operation answers without the token.
Applies are queued but not run (no worker here), so generated input can
change the console's settings but never the box. The same run against the
served console: tests/e2e/test_api_schema.py.
"""
import hypothesis
import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from drf_spectacular.generators import SchemaGenerator
from rest_framework.authtoken.models import Token

from tests.support import apicheck

pytestmark = pytest.mark.django_db
TOKEN = {"key": "5c4e3a0d" * 5}


def _schema():
    import django
    django.setup()
    raw = SchemaGenerator().get_schema(request=None, public=True)
    schema = schemathesis.openapi.from_dict(raw)
    schema.app = get_wsgi_application()
    apicheck.token_auth(schema, TOKEN)
    return schema


schema = _schema()


@pytest.fixture
def token(admin, doc, settings, django_capture_on_commit_callbacks):
    settings.DEBUG_PROPAGATE_EXCEPTIONS = False
    Token.objects.create(user=admin, key=TOKEN["key"])
    return TOKEN["key"]


@schema.parametrize()
@hypothesis.settings(**{**apicheck.SETTINGS, "max_examples": 10})
def test_api_conforms_to_its_schema(case, token):
    apicheck.call(case, headers={"Host": "localhost"})


# ---------------------------------------------------------------- what a held-out run found


def test_the_schema_carries_the_documents_constraints():
    import jsonschema

    c = SchemaGenerator().get_schema(request=None, public=True)["components"]["schemas"]
    assert c["PatchedDhcpPoolRequest"]["properties"]["start"]["format"] == "ipv4"
    assert c["PatchedDhcpServerRequest"]["properties"]["lease_time"]["minimum"] == 60
    policy = c["PatchedIpv6Request"]["properties"]["policy"]
    if "allOf" in policy:  # drf-spectacular names its enums as components
        policy = c[policy["allOf"][0]["$ref"].rsplit("/", 1)[1]]
    assert policy["enum"] == ["invisible", "drop"]
    custom = jsonschema.Draft202012Validator(c["PatchedCustomFlowsRequest"]["properties"]["custom"])
    assert custom.is_valid("in_port=1,actions=drop") and custom.is_valid("")
    assert not custom.is_valid(1) and not custom.is_valid("in_port=1\x00")


def test_blank_custom_flows_to_lint_are_valid_by_the_schema_as_the_api_takes_them(api):
    """`custom` may be blank or NUL-free text; as `oneOf` those two overlapped on "", so the
    schema refused the blank text the API lints (a schemathesis run found it)."""
    import jsonschema

    body = SchemaGenerator().get_schema(request=None, public=True)["components"]["schemas"]["LintRequestRequest"]
    jsonschema.Draft202012Validator(body).validate({"custom": ""})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(body).validate({"custom": "in_port=1\x00"})
    assert api.post("/api/switch/lint/", {"custom": ""}, format="json").status_code == 200


@pytest.mark.parametrize("url, body", [
    ("/api/dhcp/pools/{pool}/", {"start": "0"}),
    ("/api/dhcp/server/", {"lease_time": 0}),
    ("/api/switch/custom-flows/", {"custom": True}),
    ("/api/switch/custom-flows/", {"custom": "in_port=1\x00"}),  # DRF refuses NUL: the schema says so
    ("/api/network/ipv6/", {"policy": "forward"}),
    ("/api/network/ports/", {"uplink": "eth0\n"}),  # JSON Schema's `$` is the end, not before a newline
    ("/api/network/gateway/", {"ip": 3232235777}),  # an address is text, never coerced
])
def test_a_body_the_schema_refuses_is_a_400_naming_the_field(api, url, body):
    from appliance.web import document
    from appliance.web.dhcp.models import DhcpPool

    before = document.build_document()
    r = api.patch(url.format(pool=DhcpPool.objects.get().pk), body, format="json")
    assert r.status_code == 400 and set(r.data) == set(body), r.data
    assert document.build_document() == before


def test_the_whole_document_is_checked_by_its_schema_and_takes_version_1(api):
    doc = api.get("/api/system/settings/").data
    r = api.put("/api/system/settings/", {**doc, "ipv6": {"policy": "forward"}}, format="json")
    assert r.status_code == 400 and set(r.data) == {"ipv6.policy"}
    # A version-1 backup (IPv6 dropped then) is migrated, as the restore page does.
    old = {k: v for k, v in doc.items() if k != "ipv6"}
    r = api.put("/api/system/settings/", {**old, "version": 1}, format="json")
    assert r.status_code == 200, r.data
    assert r.data["version"] == 2 and r.data["ipv6"]["policy"] == "drop"
