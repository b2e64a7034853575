"""First run, login with lockout, TOTP, secure headers, forms with the document's messages, backup/restore."""
import time

import pyotp
import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from appliance.web import document
from appliance.web.applies.models import ApplyRecord
from appliance.web.audit.models import AuditEntry
from appliance.web.console.models import TotpDevice
from appliance.web.dhcp.models import DhcpPool
from tests.support import webfakes as fakes

pytestmark = pytest.mark.django_db


def test_first_visit_creates_the_admin_account_then_setup_is_closed(client):
    from appliance.web.console import setupcode

    assert client.get("/").url == "/setup/"
    assert client.get("/dhcp/").url == "/setup/"
    code = setupcode.ensure()
    r = client.post("/setup/", {"code": code, "username": "root", "password": "short", "password2": "short"})
    assert r.status_code == 200 and not get_user_model().objects.exists()
    r = client.post("/setup/", {"code": code, "username": "root", "password": "a long passphrase",
                                "password2": "a long passphrase"})
    assert r.status_code == 302 and r.url == "/network/wizard/"
    assert get_user_model().objects.get().is_superuser
    assert client.get("/").status_code == 200  # logged in
    c2 = Client()
    assert c2.get("/setup/").url == "/login/"


def test_login_locks_out_after_repeated_failures(admin, settings):
    settings.APPLIANCE_LOGIN_MAX_FAILURES = 3
    c = Client()
    for _ in range(3):
        assert c.post("/login/", {"username": "admin", "password": "wrong"}).status_code == 401
    r = c.post("/login/", {"username": "admin", "password": "correct horse battery"})
    assert r.status_code == 429, "locked even with the right password"
    assert AuditEntry.objects.get(action="login-failed").count == 3
    assert c.get("/dhcp/").status_code == 302


def test_login_and_pages_need_a_session(admin, doc):
    c = Client()
    assert c.get("/dhcp/").url.startswith("/login/")
    r = c.post("/login/", {"username": "admin", "password": "correct horse battery", "next": "/dhcp/"})
    assert r.status_code == 302 and r.url == "/dhcp/"
    assert c.get("/dhcp/").status_code == 200


def test_totp_second_factor(admin, doc):
    device = TotpDevice.objects.create(user=admin, secret=pyotp.random_base32(), confirmed=True)
    c = Client()
    r = c.post("/login/", {"username": "admin", "password": "correct horse battery"})
    assert r.url == "/login/totp/"
    assert c.get("/dhcp/").status_code == 302, "not logged in before the code"
    assert c.post("/login/totp/", {"code": "000000"}).status_code == 401
    code = pyotp.TOTP(device.secret).now()
    assert c.post("/login/totp/", {"code": code}).status_code == 302
    assert c.get("/dhcp/").status_code == 200
    c2 = Client()
    c2.post("/login/", {"username": "admin", "password": "correct horse battery"})
    assert c2.post("/login/totp/", {"code": code}).status_code == 401, "a code is good once"


def test_enable_totp_from_the_account_page(client_admin, admin):
    client_admin.get("/account/")
    secret = TotpDevice.objects.get(user=admin).secret
    r = client_admin.post("/account/", {"what": "totp-enable", "code": pyotp.TOTP(secret).at(time.time())})
    assert r.status_code == 302 and TotpDevice.objects.get(user=admin).confirmed


def test_csrf_is_enforced(admin, doc):
    c = Client(enforce_csrf_checks=True)
    c.force_login(admin)
    assert c.post("/applies/apply/").status_code == 403
    assert ApplyRecord.objects.count() == 0


def test_secure_headers(client_admin):
    r = client_admin.get("/")
    assert "script-src 'self'" in r["Content-Security-Policy"]
    assert r["X-Frame-Options"] == "DENY" and r["X-Content-Type-Options"] == "nosniff"
    assert r["Referrer-Policy"] == "same-origin"


def test_unknown_host_is_refused(client_admin):
    assert client_admin.get("/", HTTP_HOST="evil.example").status_code == 400


def test_form_shows_the_documents_message_on_the_field(client_admin):
    pool = DhcpPool.objects.get()
    r = client_admin.post(f"/dhcp/pools/{pool.pk}/", {"start": "192.168.1.2", "end": "192.168.1.191"})
    assert r.status_code == 400
    errors = r.context["form"].errors
    assert any("contains the admin address 192.168.1.8 (admin.address)" in m for m in errors["__all__"]), errors
    r = client_admin.post(f"/dhcp/pools/{pool.pk}/", {"start": "10.0.0.1", "end": "192.168.1.191"})
    assert errors_for(r, "start") == ["10.0.0.1 is outside the LAN 192.168.1.0/24"]
    assert DhcpPool.objects.get().start == "192.168.1.65"


def errors_for(r, field):
    return list(r.context["form"].errors[field])


def test_form_and_api_give_the_same_message(client_admin, api):
    r1 = client_admin.post("/network/gateway/", {"ip": "10.0.0.1", "mac": ""})
    r2 = api.patch("/api/network/gateway/", {"ip": "10.0.0.1"}, format="json")
    assert errors_for(r1, "ip") == [str(m) for m in r2.data["ip"]]


def test_form_saves_and_writes_the_audit_diff(client_admin):
    pool = DhcpPool.objects.get()
    r = client_admin.post(f"/dhcp/pools/{pool.pk}/", {"start": "192.168.1.100", "end": "192.168.1.191"})
    assert r.status_code == 302
    entry = AuditEntry.objects.get(action="update")
    assert entry.username == "admin" and entry.target == "dhcp.pools[0]"
    assert "-  - start: 192.168.1.65" in entry.diff and "+  - start: 192.168.1.100" in entry.diff


def test_make_static_proposes_an_address_outside_the_pools(client_admin):
    fakes.STATE["leases"] = [{"ip": "192.168.1.70", "mac": "02:00:00:00:00:70", "hostname": "tv",
                              "expires": 0, "state": 0}]
    r = client_admin.get("/dhcp/leases/")
    assert b"make static" in r.content and b"192.168.1.70" in r.content
    r = client_admin.get("/dhcp/leases/make-static/?mac=02:00:00:00:00:70&ip=192.168.1.70&hostname=tv")
    assert r.context["form"].initial["ip"] == "192.168.1.2"
    r = client_admin.post("/dhcp/leases/make-static/", {"mac": "02:00:00:00:00:70", "ip": "192.168.1.2",
                                                        "hostname": "tv"})
    assert r.status_code == 302
    assert b">static<" in client_admin.get("/dhcp/leases/").content


def test_backup_then_restore_shows_the_diff_then_applies(client_admin, django_capture_on_commit_callbacks):
    r = client_admin.get("/system/backup/?format=yaml")
    assert r.status_code == 200 and b"pools:" in r.content
    text = r.content.decode().replace("192.168.1.191", "192.168.1.150")
    from django.core.files.uploadedfile import SimpleUploadedFile
    r = client_admin.post("/system/restore/", {"file": SimpleUploadedFile("s.yaml", text.encode())})
    assert r.status_code == 200 and "+    end: 192.168.1.150" in r.context["diff"]
    assert DhcpPool.objects.get().end == "192.168.1.191", "nothing changes before the confirm"
    with django_capture_on_commit_callbacks(execute=True):
        r = client_admin.post("/system/restore/", {"confirm": "1"})
    assert r.status_code == 302
    assert DhcpPool.objects.get().end == "192.168.1.150"
    assert str(fakes.BOX.applied_settings().dhcp.pools[0].end) == "192.168.1.150"


def test_restore_of_a_bad_file_names_the_field_and_changes_nothing(client_admin):
    from django.core.files.uploadedfile import SimpleUploadedFile
    before = document.build_document()
    bad = b"ports: {uplink: eth0, downlink: eth0}\ngateway: {ip: 192.168.1.1}\n"
    r = client_admin.post("/system/restore/", {"file": SimpleUploadedFile("s.yaml", bad)})
    assert r.status_code == 400
    assert r.context["errors"]["lan"] == ["required"] and "dhcp" in r.context["errors"]
    r = client_admin.post("/system/restore/", {"file": SimpleUploadedFile("s.yaml", b"a: [1,\n")})
    assert "line" in r.context["errors"]["__all__"][0]
    assert document.build_document() == before and ApplyRecord.objects.count() == 0


def test_wizard_proposes_and_sets_the_topology(client_admin):
    r = client_admin.get("/network/wizard/")
    assert set(r.context["found"].nics) == {"enp1s0", "enp5s0"}
    r = client_admin.post("/network/wizard/", {"uplink": "enp5s0", "downlink": "enp5s0",
                                               "gateway_ip": "10.0.0.1", "lan_prefix": "10.0.0.0/24"})
    assert r.status_code == 200 and "downlink" in r.context["form"].errors
    r = client_admin.post("/network/wizard/", {"uplink": "enp5s0", "downlink": "enp1s0",
                                               "gateway_ip": "10.0.0.1", "lan_prefix": "10.0.0.0/24"})
    assert r.status_code == 302
    s = document.current_settings()
    assert str(s.admin.address) == "10.0.0.8" and str(s.dhcp.pools[0].start) == "10.0.0.64"


def test_lint_as_you_type(client_admin):
    r = client_admin.post("/switch/lint/", {"custom": "priority=10,udp,tp_dst=99999,actions=drop"})
    assert b"error" in r.content and b"line 1" in r.content
    r = client_admin.post("/switch/lint/", {"custom": "priority=10,udp,tp_dst=53,actions=drop"})
    assert b"No problems" in r.content or b"warning" in r.content or b"info" in r.content


def test_nav_lists_every_app(client_admin):
    body = client_admin.get("/").content.decode()
    for label in ("Dashboard", "Network", "DHCP", "DNS", "Switch", "Applies", "Audit", "System"):
        assert f">{label}</a>" in body


def test_dashboard_tiles_show_dns_and_relay_when_running(client_admin, monkeypatch):
    from appliance.box.status import Reading
    monkeypatch.setattr(fakes.FakeSources, "dns", lambda self: Reading(
        {"queries": 200, "blocked": 50, "blocked_share": 0.25, "window_seconds": 86400}), raising=False)
    monkeypatch.setattr(fakes.FakeSources, "relay", lambda self: Reading(
        {"live_tcp": 3, "live_udp": 1, "fast_path": {"connections": 5}}), raising=False)
    body = client_admin.get("/tiles/").content.decode()
    assert "50 blocked (25%)" in body and "9</p>" in body
    assert "3 TCP relayed, 5 by the kernel, 1 UDP" in body


def test_dashboard_tiles_say_not_running(client_admin):
    body = client_admin.get("/tiles/").content.decode()
    assert body.count("not running") == 2


def test_api_docs_are_served_without_internet(client_admin):
    body = client_admin.get("/api/docs/").content.decode()
    assert "swagger-ui" in body and "cdn" not in body.lower() and "https://" not in body
