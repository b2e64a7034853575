"""The console against a LAN of untrusted devices (issue 14): first run, one login, lockout, tokens, audit, limits.

The real server's part (413 before reading, cookies over HTTPS, the JSON
cache in Redis, the CSP in Chromium) is in tests/e2e/test_console_security.py.
"""
import os
import stat
import time
from datetime import timedelta

import pyotp
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from appliance.web.audit.models import AuditEntry
from appliance.web.console import lockout, setupcode
from appliance.web.console.hosts import BoxHosts
from appliance.web.console.models import FirstAdmin, TotpDevice
from tests.support import webfakes as fakes

pytestmark = pytest.mark.django_db
PASSWORD = "a long passphrase"
LAN_HOST, OTHER_HOST = "192.168.1.66", "192.168.1.70"


def setup_post(client, code, username="owner", password=PASSWORD):
    return client.post("/setup/", {"code": code, "username": username, "password": password, "password2": password})


# ---------------------------------------------------------------- first run

def test_setup_needs_the_code_from_a_root_only_file_and_the_code_works_once(client, settings):
    assert fakes.BOX.applied_settings() is None, "the factory state: nothing applied, the NICs bridged"
    r = client.get("/setup/")
    assert r.status_code == 200 and b'name="code"' in r.content
    path = settings.APPLIANCE_SETUP_CODE_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    code = open(path).read().strip()
    assert len(code) == 17 and code.count("-") == 2

    r = client.post("/setup/", {"username": "owner", "password": PASSWORD, "password2": PASSWORD})
    assert r.status_code == 200 and "code" in r.context["form"].errors
    r = setup_post(client, "0000-0000-0000-000")
    assert r.status_code == 403 and "Wrong setup code" in r.content.decode()
    assert not get_user_model().objects.exists()

    # Typed as a person would: lower case, no dashes, O for 0.
    typed = code.replace("-", "").lower().replace("0", "o")
    r = setup_post(client, typed)
    assert r.status_code == 302 and r.url == "/network/wizard/"
    assert get_user_model().objects.get().username == "owner"
    assert not os.path.exists(path), "used up"
    assert Client().get("/setup/").url == "/login/"
    assert setup_post(Client(), code, username="second").url == "/login/"
    assert get_user_model().objects.count() == 1


def test_a_second_first_admin_is_refused_by_the_database(client):
    code = setupcode.ensure()
    # Another request got as far as the insert first: the row exists, its user not yet visible here.
    other = get_user_model().objects.create_user("other")
    FirstAdmin.objects.create(id=1, user=other)
    other.delete()
    assert not get_user_model().objects.exists()
    r = setup_post(client, code)
    assert r.status_code == 302 and r.url == "/login/"
    assert not get_user_model().objects.exists(), "the admin's creation was rolled back with the refused row"
    with pytest.raises(IntegrityError), transaction.atomic():
        FirstAdmin.objects.create(id=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        FirstAdmin.objects.create(id=2)


def test_setupcode_command_prints_the_code_and_writes_the_console_issue(settings, tmp_path, capsys):
    settings.APPLIANCE_SETUP_ISSUE = str(tmp_path / "issue.d" / "appliance-setup.issue")
    call_command("setupcode")
    code = capsys.readouterr().out.strip()
    assert setupcode.matches(code)
    issue = tmp_path / "issue.d" / "appliance-setup.issue"
    assert code in issue.read_text() and stat.S_IMODE(issue.stat().st_mode) == 0o600
    call_command("setupcode")
    assert capsys.readouterr().out.strip() == code, "the same code until it is used"
    assert setup_post(Client(), code).status_code == 302
    assert not issue.exists() and not os.path.exists(settings.APPLIANCE_SETUP_CODE_FILE)
    call_command("setupcode")
    out = capsys.readouterr()
    assert out.out == "" and "admin account exists" in out.err


def test_wrong_setup_codes_lock_the_address_out(settings):
    settings.APPLIANCE_LOGIN_MAX_FAILURES = 3
    code = setupcode.ensure()
    guesser = Client(REMOTE_ADDR=LAN_HOST)
    for _ in range(3):
        assert setup_post(guesser, "AAAAA-AAAAA-AAAAA").status_code == 403
    assert setup_post(guesser, code).status_code == 429, "locked even with the right code"
    row = AuditEntry.objects.get(action="setup-failed")
    assert (row.source, row.count) == (LAN_HOST, 3)
    assert setup_post(Client(REMOTE_ADDR=OTHER_HOST), code).status_code == 302


# ---------------------------------------------------------------- one login

def test_django_admin_site_is_gone(client_admin):
    for path in ("/admin/", "/admin/login/", "/admin/auth/user/"):
        assert client_admin.get(path).status_code == 404


# ---------------------------------------------------------------- lockout

def login(client, password="correct horse battery", username="admin"):
    return client.post("/login/", {"username": username, "password": password})


def test_lockout_is_per_user_and_address(admin, doc, settings):
    settings.APPLIANCE_LOGIN_MAX_FAILURES = 3
    attacker = Client(REMOTE_ADDR=LAN_HOST)
    for _ in range(3):
        assert login(attacker, "wrong").status_code == 401
    r = login(attacker)
    assert r.status_code == 429 and int(r["Retry-After"]) > 0
    owner = Client(REMOTE_ADDR=OTHER_HOST)
    assert login(owner).status_code == 302, "another host's guesses do not lock the owner out"


def test_lockout_backs_off(admin, doc, settings, monkeypatch):
    settings.APPLIANCE_LOGIN_MAX_FAILURES = 2
    settings.APPLIANCE_LOGIN_LOCKOUT_SECONDS = 10
    settings.APPLIANCE_LOGIN_LOCKOUT_MAX_SECONDS = 30
    now = [1_000_000.0]
    monkeypatch.setattr(lockout, "clock", lambda: now[0])
    c = Client(REMOTE_ADDR=LAN_HOST)
    assert [login(c, "wrong").status_code for _ in range(2)] == [401, 401]
    assert lockout.locked("admin", LAN_HOST) == 10
    now[0] += 11
    assert login(c, "wrong").status_code == 401
    assert lockout.locked("admin", LAN_HOST) == 20, "doubled"
    now[0] += 11
    assert login(c).status_code == 429
    now[0] += 10
    assert login(c, "wrong").status_code == 401
    assert lockout.locked("admin", LAN_HOST) == 30, "doubled, up to the cap"
    now[0] += 31
    assert login(c).status_code == 302
    assert lockout.locked("admin", LAN_HOST) == 0
    assert login(Client(REMOTE_ADDR=LAN_HOST), "wrong").status_code == 401
    assert lockout.locked("admin", LAN_HOST) == 0, "a complete login started the count again"


def test_lockout_resets_only_after_the_second_factor(admin, doc, settings):
    settings.APPLIANCE_LOGIN_MAX_FAILURES = 3
    device = TotpDevice.objects.create(user=admin, secret=pyotp.random_base32(), confirmed=True)
    c = Client(REMOTE_ADDR=LAN_HOST)
    assert [login(c, "wrong").status_code for _ in range(2)] == [401, 401]
    assert login(c).url == "/login/totp/", "the right password leads to the code ..."
    assert login(c, "wrong").status_code == 401
    assert login(c).status_code == 429, "... but did not reset the count"

    c2 = Client(REMOTE_ADDR=OTHER_HOST)
    assert [login(c2, "wrong").status_code for _ in range(2)] == [401, 401]
    assert login(c2).url == "/login/totp/"
    assert c2.post("/login/totp/", {"code": "000000"}).status_code == 401
    assert c2.post("/login/totp/", {"code": pyotp.TOTP(device.secret).now()}).status_code == 429, \
        "TOTP failures count on the same pair"

    c3 = Client(REMOTE_ADDR="192.168.1.71")
    assert [login(c3, "wrong").status_code for _ in range(2)] == [401, 401]
    assert login(c3).url == "/login/totp/"
    assert c3.post("/login/totp/", {"code": pyotp.TOTP(device.secret).now()}).status_code == 302
    c4 = Client(REMOTE_ADDR="192.168.1.71")
    assert [login(c4, "wrong").status_code for _ in range(2)] == [401, 401], "the count started again"


# ---------------------------------------------------------------- passwords, tokens, TOTP

@pytest.mark.parametrize("username,password,why", [
    ("owner", "password123", "too common"), ("owner", "8361927450", "entirely numeric"),
    ("householder", "householder1", "too similar to the username")])
def test_setup_applies_djangos_password_validators(client, username, password, why):
    r = setup_post(client, setupcode.ensure(), username=username, password=password)
    assert r.status_code == 200 and not get_user_model().objects.exists()
    assert any(why in m for m in r.context["form"].errors["password"]), r.context["form"].errors


def test_password_change_applies_the_validators(client_admin, admin):
    r = client_admin.post("/account/", {"what": "password", "old_password": "correct horse battery",
                                        "new_password1": "qwertyuiop", "new_password2": "qwertyuiop"})
    assert r.status_code == 200 and "too common" in str(r.context["pw_form"].errors)
    admin.refresh_from_db()
    assert admin.check_password("correct horse battery")


def token_for(password="correct horse battery"):
    r = APIClient().post("/api/auth/token/", {"username": "admin", "password": password}, format="json")
    assert r.status_code == 200, r.data
    return r.data["token"]


def api_as(key):
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return c


def test_api_tokens_expire(admin, doc, settings):
    settings.APPLIANCE_API_TOKEN_DAYS = 30
    key = token_for()
    assert api_as(key).get("/api/network/ports/").status_code == 200
    Token.objects.filter(key=key).update(created=timezone.now() - timedelta(days=30, seconds=1))
    r = api_as(key).get("/api/network/ports/")
    assert r.status_code == 403 and "expired" in r.data["detail"]  # 403: DRF's word when sessions come first
    fresh = token_for()
    assert fresh != key and api_as(fresh).get("/api/network/ports/").status_code == 200


def test_a_password_change_revokes_the_api_token(client_admin, admin):
    key = token_for()
    r = client_admin.post("/account/", {"what": "password", "old_password": "correct horse battery",
                                        "new_password1": "another long passphrase",
                                        "new_password2": "another long passphrase"})
    assert r.status_code == 302
    r = api_as(key).get("/api/network/ports/")
    assert r.status_code == 403 and r.data["detail"] == "Invalid token."
    key = token_for("another long passphrase")
    # From anywhere: `manage.py changepassword` saves the user the same way.
    admin.refresh_from_db()
    admin.set_password("a third long passphrase")
    admin.save()
    assert api_as(key).get("/api/network/ports/").data["detail"] == "Invalid token."


def test_turning_totp_off_needs_a_fresh_code(client_admin, admin):
    device = TotpDevice.objects.create(user=admin, secret=pyotp.random_base32(), confirmed=True)
    totp = pyotp.TOTP(device.secret)
    assert client_admin.post("/account/", {"what": "totp-disable"}).status_code == 200
    assert TotpDevice.objects.filter(user=admin, confirmed=True).exists()
    assert device.verify(totp.now())  # the code is used (a login)
    r = client_admin.post("/account/", {"what": "totp-disable", "code": totp.now()})
    assert r.status_code == 200 and "stays on" in r.content.decode()
    assert TotpDevice.objects.filter(user=admin, confirmed=True).exists(), "a used code does not turn it off"
    r = client_admin.post("/account/", {"what": "totp-disable", "code": totp.at(time.time() + 30)})
    assert r.status_code == 302 and not TotpDevice.objects.filter(user=admin, confirmed=True).exists()


# ---------------------------------------------------------------- headers, hosts

def test_csp_lets_scripts_connect_only_to_the_box(client_admin):
    csp = client_admin.get("/")["Content-Security-Policy"]
    assert "connect-src 'self';" in csp and "ws:" not in csp and "wss:" not in csp


def test_allowed_hosts_follow_the_box_address(client_admin, settings):
    BoxHosts.TTL = 0
    try:
        settings.ALLOWED_HOSTS = BoxHosts(["testserver"])
        # The factory bridge: whatever address the box holds.
        fakes.BOX.kernel.add_address("lab-box", "enp5s0", "192.168.1.57/24")
        assert client_admin.get("/", HTTP_HOST="192.168.1.57").status_code == 200
        assert client_admin.get("/", HTTP_HOST="192.168.1.8").status_code == 400
        assert fakes.BOX.apply(fakes.settings()).ok  # admin address 192.168.1.8
        fakes.BOX.kernel.del_address("lab-box", "enp5s0", "192.168.1.57/24")
        assert client_admin.get("/", HTTP_HOST="192.168.1.8").status_code == 200
        assert client_admin.get("/", HTTP_HOST="192.168.1.8:443").status_code == 200
        assert client_admin.get("/", HTTP_HOST="192.168.1.57").status_code == 400
        assert client_admin.get("/", HTTP_HOST="rebound.example").status_code == 400
        import socket
        assert client_admin.get("/", HTTP_HOST=socket.gethostname()).status_code == 200
    finally:
        BoxHosts.TTL = 2.0


# ---------------------------------------------------------------- audit

def test_failed_logins_are_aggregated_and_capped(admin, doc, settings):
    settings.APPLIANCE_LOGIN_MAX_FAILURES = 1000
    settings.APPLIANCE_AUDIT_FAILURE_ROWS = 3
    c = Client(REMOTE_ADDR=LAN_HOST)
    for _ in range(20):
        login(c, "wrong")
    row = AuditEntry.objects.get(action="login-failed")
    assert (row.target, row.source, row.count) == ("admin", LAN_HOST, 20) and row.last >= row.time
    for i in range(6):
        login(c, "wrong", username=f"guess{i}")
    rows = AuditEntry.objects.filter(action="login-failed")
    assert rows.count() == 4, "three rows for the window, then one for the rest"
    assert (rows.get(source="*").target, rows.get(source="*").count) == ("(more)", 4)


def test_audit_keeps_its_retention_and_cap(admin, settings):
    from appliance.web.audit import log

    settings.APPLIANCE_AUDIT_RETENTION_DAYS = 30
    settings.APPLIANCE_AUDIT_MAX_ROWS = 5
    old = log.record(admin, "update", "old")
    AuditEntry.objects.filter(pk=old.pk).update(time=timezone.now() - timedelta(days=31))
    for i in range(7):
        log.record(admin, "update", f"new {i}")
    assert log.prune() == 3
    assert list(AuditEntry.objects.values_list("target", flat=True)) == [f"new {i}" for i in range(6, 1, -1)]


def test_audit_pages(client_admin, admin, api):
    from appliance.web.audit import log

    for i in range(120):
        log.record(admin, "update", f"change {i}")
    body = client_admin.get("/audit/").content.decode()
    assert "change 119" in body and "change 69" not in body and "page 1 of 3" in body
    body = client_admin.get("/audit/?page=3").content.decode()
    assert "change 0" in body and "change 20" not in body
    r = api.get("/api/audit/entries/?page=2")
    assert r.data["count"] == 120 and r.data["results"][0]["target"] == "change 69"
    assert len(api.get("/api/audit/entries/?page_size=500").data["results"]) == 120
    # Past the documented maximum is refused, naming the parameter, not silently cut to it.
    r = api.get("/api/audit/entries/?page_size=1000")
    assert r.status_code == 400 and "page_size" in r.data
    # A page is a whole number from 1, as the schema says: not blank (DRF's page 1), not "last".
    for page in ("", "last", "0", "-1", "2x"):
        r = api.get("/api/audit/entries/", {"page": page})
        assert r.status_code == 400 and "page" in r.data, page


# ---------------------------------------------------------------- restore

def test_restore_refuses_a_file_over_the_cap(client_admin, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.APPLIANCE_RESTORE_MAX_BYTES = 1000
    big = b"# padding\n" * 101
    r = client_admin.post("/system/restore/", {"file": SimpleUploadedFile("s.yaml", big)})
    assert r.status_code == 400 and "at most 1000" in str(r.context["form"].errors["file"])
    assert "restore_document" not in client_admin.session
    r = client_admin.put("/api/system/settings/", b"{" + b" " * 1000 + b"}", content_type="application/json")
    assert r.status_code == 413
