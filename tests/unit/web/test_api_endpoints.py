"""Every API endpoint refuses anonymous access; the non-settings endpoints answer as documented."""
import re

import pytest
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from appliance.web.applies.models import ApplyRecord
from appliance.web.audit.models import AuditEntry
from tests.support import webfakes as fakes

pytestmark = pytest.mark.django_db
ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@laptop"
PUBLIC = {"/api/auth/token/"}  # how a script gets its token


def operations():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    for path, item in schema["paths"].items():
        for method in item:
            yield path, method


def test_every_endpoint_refuses_anonymous_access(doc):
    c = APIClient()
    seen = 0
    for path, method in operations():
        url = re.sub(r"\{[^}]+\}", "1", path)
        if path in PUBLIC:
            continue
        r = getattr(c, method)(url, {}, format="json")
        assert r.status_code in (401, 403), (method, url, r.status_code)
        seen += 1
    assert seen > 40
    for url in ("/api/schema/", "/api/docs/"):
        assert c.get(url).status_code in (401, 403)


def test_settings_document_get_and_put(api):
    r = api.get("/api/system/settings/")
    assert r.status_code == 200 and r.data["ports"]["uplink"] == "enp5s0"
    doc = r.data
    doc["dhcp"]["pools"][0]["end"] = "192.168.1.150"
    r = api.put("/api/system/settings/", doc, format="json")
    assert r.status_code == 200
    assert api.get("/api/dhcp/pools/").data[0]["end"] == "192.168.1.150"
    r = api.put("/api/system/settings/", {**doc, "gateway": {"ip": "192.168.1.1", "mac": "nope"}}, format="json")
    assert r.status_code == 400 and set(r.data) == {"gateway.mac"}
    # Well formed, refused by the document's rules: a conflict, the field still named.
    doc["dhcp"]["pools"][0]["start"] = "10.0.0.1"
    r = api.put("/api/system/settings/", doc, format="json")
    assert r.status_code == 409 and set(r.data) == {"dhcp.pools[0].start"}
    assert api.get("/api/dhcp/pools/").data[0]["start"] == "192.168.1.65"
    assert ApplyRecord.objects.count() == 0 and fakes.BOX.applied_settings() is None


def test_leases(api):
    fakes.STATE["leases"] = [{"ip": "192.168.1.70", "mac": "02:00:00:00:00:70", "hostname": "tv",
                              "expires": 1, "state": 0}]
    r = api.get("/api/dhcp/leases/")
    assert r.status_code == 200 and r.data["running"] and r.data["leases"][0]["mac"] == "02:00:00:00:00:70"


def test_leases_say_when_kea_is_not_running(api, settings):
    settings.APPLIANCE_SOURCES = ""
    settings.APPLIANCE_BOX_RUN = "/nonexistent"
    r = api.get("/api/dhcp/leases/")
    assert r.status_code == 200 and not r.data["running"] and r.data["leases"] == []
    assert "DHCP server not running" in r.data["problem"]


def test_flows_dump_and_trace_after_an_apply(api, django_capture_on_commit_callbacks):
    assert api.get("/api/switch/flows/").data["counters"] == "nothing applied yet"
    with django_capture_on_commit_callbacks(execute=True):
        api.post("/api/applies/", {}, format="json")
    r = api.get("/api/switch/flows/")
    assert r.status_code == 200 and len(r.data["rows"]) > 10
    assert r.data["counters"].startswith("datapath not loaded")
    r = api.post("/api/switch/trace/", {"flow": "in_port=downlink,udp,nw_dst=192.168.1.1,tp_dst=53"}, format="json")
    assert r.status_code == 200, r.data
    assert "OpenFlow outputs: vproxy(5)" in r.data["reference"]
    # The compiled program's verdict when the datapath's trace hook can run here, else why not.
    assert "agrees with the reference" in r.data["datapath"] or "datapath not loaded" in r.data["datapath"]
    r = api.post("/api/switch/trace/", {"flow": "in_port=nowhere,udp"}, format="json")
    assert r.status_code == 409 and "flow" in r.data
    r = api.post("/api/switch/trace/", {"flow": 5}, format="json")
    assert r.status_code == 400 and "flow" in r.data


def test_lint(api):
    r = api.post("/api/switch/lint/", {"custom": "priority=1,tcp,tp_dst=70000,actions=drop"}, format="json")
    assert r.status_code == 200 and r.data[0]["severity"] == "error" and "line 1" in r.data[0]["message"]


def test_audit_and_ssh_keys(api, settings):
    r = api.post("/api/system/ssh-keys/", {"name": "laptop", "key": ED25519}, format="json")
    assert r.status_code == 201, r.data
    r = api.post("/api/system/ssh-keys/", {"name": "bad", "key": "ssh-ed25519 notbase64!"}, format="json")
    assert r.status_code == 400 and "key" in r.data
    # Base64 that is not a key of the type it names: the schema's pattern says so (the blob's head).
    r = api.post("/api/system/ssh-keys/", {"name": "bad", "key": ED25519.replace("ssh-ed25519", "ssh-rsa")},
                 format="json")
    assert r.status_code == 400 and "key" in r.data
    # A name another key has: well formed, refused by what is there (409, naming the field).
    r = api.post("/api/system/ssh-keys/", {"name": "laptop", "key": ED25519}, format="json")
    assert r.status_code == 409 and "name" in r.data
    with open(settings.APPLIANCE_AUTHORIZED_KEYS) as f:
        assert f.read() == ED25519 + "\n"
    r = api.get("/api/audit/entries/")
    assert r.status_code == 200 and r.data["count"] == 1
    assert r.data["results"][0]["action"] == "create" and r.data["results"][0]["username"] == "admin"


def test_status(api):
    r = api.get("/api/status/")
    assert r.status_code == 200
    assert r.data["dns"]["ok"] is False and "not running" in r.data["dns"]["problem"]
    assert r.data["leases"]["value"] == {"count": 0}


def test_token_auth_with_lockout(admin, doc, settings):
    c = APIClient()
    r = c.post("/api/auth/token/", {"username": "admin", "password": "correct horse battery"}, format="json")
    assert r.status_code == 200
    c.credentials(HTTP_AUTHORIZATION=f"Token {r.data['token']}")
    assert c.get("/api/network/ports/").status_code == 200
    settings.APPLIANCE_LOGIN_MAX_FAILURES = 2
    bad = APIClient()
    for _ in range(2):
        assert bad.post("/api/auth/token/", {"username": "admin", "password": "x"}, format="json").status_code == 401
    r = bad.post("/api/auth/token/", {"username": "admin", "password": "correct horse battery"}, format="json")
    assert r.status_code == 429
    failed = AuditEntry.objects.get(action="login-failed")  # one row, counting
    assert (failed.target, failed.source, failed.count) == ("admin (API token)", "127.0.0.1", 2)
