"""The devices page and API: who is on the home side, named, with the datapath's counters."""
import time
from datetime import datetime, timedelta, timezone

import pytest

from appliance.switch.datapath.datapath import MacStats
from appliance.web.audit.models import AuditEntry
from appliance.web.devices import oui
from appliance.web.devices.models import Device
from tests.support import webfakes as fakes

pytestmark = pytest.mark.django_db
TV, PHONE, LAPTOP = "3c:5a:b4:00:00:01", "7a:11:22:33:44:55", "00:1a:11:00:00:02"


@pytest.fixture(autouse=True)
def registry(tmp_path, monkeypatch):
    """A small IEEE registry: a MA-L block with a MA-S block inside it."""
    (tmp_path / "oui.csv").write_text("Registry,Assignment,Organization Name,Organization Address\n"
                                      'MA-L,3C5AB4,"Google, Inc.",Mountain View US\n'
                                      "MA-L,001A11,Big Vendor,Somewhere\n")
    (tmp_path / "oui36.csv").write_text("Registry,Assignment,Organization Name,Organization Address\n"
                                        "MA-S,001A11000,Small Maker,Elsewhere\n")
    monkeypatch.setattr(oui, "REGISTRY_DIR", tmp_path)
    oui.registry.cache_clear()
    yield
    oui.registry.cache_clear()


def counters(mac, rx=(0, 0), tx=(0, 0), ago: float = 1.0):
    return MacStats(mac, rx[1], rx[0], tx[1], tx[0], time.monotonic_ns() - int(ago * 1e9))


def home(leases=(), macs=None):
    fakes.STATE["leases"] = list(leases)
    fakes.STATE["macs"] = macs


def lease(ip, mac, hostname=""):
    return {"ip": ip, "mac": mac, "hostname": hostname, "expires": 1, "state": 0}


def by_mac(rows):
    return {r["mac"]: r for r in rows}


def test_devices_list_the_home_side_with_vendor_name_addresses_and_counters(api):
    home([lease("192.168.1.70", TV, "livingroom-tv"), lease("2001:db8::70", TV),
          lease("192.168.1.71", PHONE, "pixel")],
         {TV: counters(TV, rx=(20_000_000, 14_000), tx=(600_000, 9_000)),
          LAPTOP: counters(LAPTOP, tx=(60, 1), ago=3600)})
    r = api.get("/api/devices/")
    assert r.status_code == 200
    got = by_mac(r.data)
    assert set(got) == {TV, PHONE, LAPTOP}
    tv = got[TV]
    assert (tv["name"], tv["name_source"], tv["vendor"]) == ("livingroom-tv", "dhcp", "Google, Inc.")
    assert tv["ipv4"] == ["192.168.1.70"] and tv["ipv6"] == ["2001:db8::70"]
    assert (tv["rx_bytes"], tv["rx_packets"], tv["tx_bytes"], tv["tx_packets"]) == (20_000_000, 14_000, 600_000, 9_000)
    assert tv["online"] and tv["counted"]
    # A random ("private") MAC has no vendor; a device only in the leases has no counters yet.
    assert (got[PHONE]["vendor"], got[PHONE]["private"], got[PHONE]["counted"]) == ("", True, False)
    # The longest registry block wins; an hour of silence is offline, last seen an hour ago.
    assert got[LAPTOP]["vendor"] == "Small Maker" and not got[LAPTOP]["online"]
    silent = datetime.now(timezone.utc) - datetime.fromisoformat(got[LAPTOP]["last_seen"].replace("Z", "+00:00"))
    assert timedelta(minutes=59) < silent < timedelta(minutes=61)
    assert api.get(f"/api/devices/{TV.upper()}/").data["name"] == "livingroom-tv"


def test_a_static_lease_names_and_addresses_a_device(api, client_admin):
    from appliance.web.dhcp.models import StaticLease
    StaticLease.objects.create(mac=LAPTOP, ip="192.168.1.20", hostname="desk", ip6="2001:db8::20")
    home(macs={LAPTOP: counters(LAPTOP, tx=(60, 1))})
    d = api.get(f"/api/devices/{LAPTOP}/").data
    assert (d["name"], d["name_source"], d["ipv4"], d["ipv6"]) == ("desk", "static", ["192.168.1.20"], ["2001:db8::20"])


def test_rename_and_give_the_lease_name_back(api):
    home([lease("192.168.1.70", TV, "livingroom-tv")], {})
    r = api.patch(f"/api/devices/{TV}/", {"name": "  Kitchen TV "}, format="json")
    assert r.status_code == 200 and (r.data["name"], r.data["name_source"]) == ("Kitchen TV", "user")
    assert by_mac(api.get("/api/devices/").data)[TV]["name"] == "Kitchen TV"
    assert AuditEntry.objects.filter(action="rename-device", target=TV).exists()
    r = api.patch(f"/api/devices/{TV}/", {"name": ""}, format="json")
    assert (r.data["name"], r.data["name_source"]) == ("livingroom-tv", "dhcp")


@pytest.mark.parametrize("body,problem", [({"name": "x" * 64}, "no more than 63"),
                                          ({"name": "bad\nname"}, "control character"),
                                          ({"name": ["list"]}, "Not a valid string"),
                                          ({"name": "tab\there"}, "control character"),
                                          ({"name": 5}, "Not a valid string")])
def test_a_bad_name_is_refused_naming_the_field(api, body, problem):
    home([lease("192.168.1.70", TV, "tv")], {})
    r = api.patch(f"/api/devices/{TV}/", body, format="json")
    assert r.status_code == 400 and problem in str(r.data["name"])


def test_forget_drops_the_name_and_the_counters(api):
    home(macs={TV: counters(TV, tx=(60, 1))})
    api.patch(f"/api/devices/{TV}/", {"name": "tv"}, format="json")
    fakes.STATE["macs"] = {}                      # the device went quiet (and the map forgot it)
    fakes.STATE["macs"][TV] = counters(TV, tx=(60, 1))
    assert api.delete(f"/api/devices/{TV}/").status_code == 204
    assert TV not in fakes.STATE["macs"] and not Device.objects.filter(mac=TV).exists()
    assert api.get("/api/devices/").data == []
    assert api.delete(f"/api/devices/{TV}/").status_code == 404
    assert api.get("/api/devices/not-a-mac/").status_code == 404


def test_an_unknown_field_is_refused_by_name(api):
    home([lease("192.168.1.70", TV, "tv")], {})
    r = api.patch(f"/api/devices/{TV}/", {"name": "tv", "owner": "kids"}, format="json")
    assert r.status_code == 400 and set(r.data) == {"owner"}


def test_the_schema_says_what_a_patch_may_carry(api):
    body = api.get("/api/schema/?format=json").json()["paths"]["/api/devices/{mac}/"]["patch"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["name"]["maxLength"] == 63


def paused_on_the_box():
    from appliance.box.switchload import DatapathLoader
    return DatapathLoader.of(fakes.BOX).paused()


def test_pause_and_resume_are_kept_by_the_box(api):
    home([lease("192.168.1.70", TV, "tv"), lease("192.168.1.71", PHONE, "pixel")], {})
    r = api.patch(f"/api/devices/{TV}/", {"paused": True}, format="json")
    assert r.status_code == 200 and r.data["paused"]
    assert paused_on_the_box() == {TV}
    assert {m: d["paused"] for m, d in by_mac(api.get("/api/devices/").data).items()} == {TV: True, PHONE: False}
    assert AuditEntry.objects.filter(action="pause-device", target=TV).exists()
    r = api.patch(f"/api/devices/{TV}/", {"paused": False, "name": "telly"}, format="json")
    assert (r.data["paused"], r.data["name"]) == (False, "telly") and paused_on_the_box() == set()
    for bad in ("sometimes", 1, "true"):
        r = api.patch(f"/api/devices/{TV}/", {"paused": bad}, format="json")
        assert r.status_code == 400 and "paused" in r.data
    assert api.patch(f"/api/devices/{TV}/", {}, format="json").data["name"] == "telly"   # nothing to change


def test_a_forgotten_device_is_not_kept_paused(api):
    home([lease("192.168.1.70", TV, "tv")], {})
    api.patch(f"/api/devices/{TV}/", {"paused": True}, format="json")
    assert api.delete(f"/api/devices/{TV}/").status_code == 204
    assert paused_on_the_box() == set()


def test_a_forgotten_device_that_is_still_there_comes_back_as_new(api):
    home([lease("192.168.1.70", TV, "tv")], {})
    api.patch(f"/api/devices/{TV}/", {"name": "mine"}, format="json")
    assert api.delete(f"/api/devices/{TV}/").status_code == 204
    back = by_mac(api.get("/api/devices/").data)[TV]
    assert (back["name"], back["name_source"]) == ("tv", "dhcp")


def test_without_a_datapath_the_devices_are_listed_without_counters(api, client_admin):
    home([lease("192.168.1.70", TV, "tv")], None)
    (tv,) = api.get("/api/devices/").data
    assert not tv["counted"] and tv["rx_bytes"] == 0 and not tv["online"]
    page = client_admin.get("/devices/").content.decode()
    assert "No traffic counters: datapath not loaded" in page and TV in page


def test_no_registry_no_vendor(api, tmp_path, monkeypatch):
    monkeypatch.setattr(oui, "REGISTRY_DIR", tmp_path / "absent")
    home(macs={TV: counters(TV, tx=(60, 1))})
    assert api.get(f"/api/devices/{TV}/").data["vendor"] == ""


@pytest.fixture(params=[0, 60], ids=["uncached", "rows-kept-60s"])
def live_seconds(request, settings):
    """The devices page's rows are shared by every viewer for the live period: a change made in
    the console still shows on the very next load."""
    settings.APPLIANCE_LIVE_SECONDS = request.param
    from appliance.web import sources
    sources._CACHE.pop("devices-page", None)
    return request.param


def test_console_lists_renames_and_forgets(client_admin, live_seconds):
    home([lease("192.168.1.70", TV, "livingroom-tv")], {TV: counters(TV, rx=(2 * 1024 * 1024, 1500))})
    page = client_admin.get("/devices/").content.decode()
    assert "livingroom-tv" in page and "Google, Inc." in page and "192.168.1.70" in page and "2.0\xa0MB" in page
    assert 'href="/devices/"' in page       # a tab of the console
    r = client_admin.post(f"/devices/{TV}/rename/", {"name": "x" * 64})
    assert r.status_code == 400
    r = client_admin.post(f"/devices/{TV}/rename/", {"name": "Kitchen TV"})
    assert r.status_code == 302 and "Kitchen TV" in client_admin.get("/devices/").content.decode()
    r = client_admin.post(f"/devices/{TV}/pause/", {"paused": "1"}, follow=True)
    page = r.content.decode()
    assert "paused (the datapath is not running: from its next start)" in page and ">Resume<" in page
    assert paused_on_the_box() == {TV}
    client_admin.post(f"/devices/{TV}/pause/", {"paused": "0"})
    assert paused_on_the_box() == set()
    assert client_admin.get(f"/devices/{TV}/forget/").status_code == 200
    assert client_admin.post(f"/devices/{TV}/forget/", {}).status_code == 400      # no confirm: nothing forgotten
    assert Device.objects.filter(mac=TV).exists()
    fakes.STATE["leases"] = []
    from appliance.web import sources
    sources._CACHE.pop("leases", None)      # the lease gone from Kea's last reading too
    assert client_admin.post(f"/devices/{TV}/forget/", {"confirm": "1"}).status_code == 302
    assert "No device seen yet" in client_admin.get("/devices/").content.decode()
    assert client_admin.get("/devices/02:00:00:00:00:99/rename/").status_code == 404


def test_a_hostile_hostname_is_shown_as_text_and_the_rows_forms_work(admin, doc, live_seconds):
    """A device on the LAN picks its DHCP hostname: the page shows it, never runs it; the row's
    pause form carries a CSRF token the console accepts."""
    import re
    from django.test import Client
    evil = '<script>alert(1)</script>"><img src=x>'
    home([lease("192.168.1.70", TV, evil)], {TV: counters(TV)})
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin)
    page = browser.get("/devices/").content.decode()
    assert "<script>alert(1)" not in page and "<img src=x>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img src=x&gt;" in page
    form = re.search(rf'<form method="post" action="(/devices/{TV}/pause/)".*?name="csrfmiddlewaretoken" '
                     r'value="([^"]+)".*?name="paused" value="1"', page)
    assert form, page
    r = browser.post(form.group(1), {"csrfmiddlewaretoken": form.group(2), "paused": "1"})
    assert r.status_code == 302 and paused_on_the_box() == {TV}
    assert browser.post(form.group(1), {"paused": "0"}).status_code == 403     # no token: refused


def test_two_viewers_of_the_shared_rows_each_get_a_token_of_their_own(admin, doc, settings):
    """The rows are built once for every viewer; each viewer's forms carry that viewer's CSRF
    token, which the console accepts from that viewer only."""
    import re
    from django.contrib.auth import get_user_model
    from django.test import Client
    settings.APPLIANCE_LIVE_SECONDS = 60
    home([lease("192.168.1.70", TV, "tv")], {TV: counters(TV)})
    other = get_user_model().objects.create_superuser("other", "", "another long passphrase")
    browsers = []
    for user in (admin, other):
        b = Client(enforce_csrf_checks=True)
        b.force_login(user)
        page = b.get("/devices/").content.decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        browsers.append((b, token))
    (first, first_token), (second, second_token) = browsers
    assert first_token != second_token
    assert second.post(f"/devices/{TV}/pause/", {"csrfmiddlewaretoken": first_token, "paused": "1"}).status_code == 403
    assert second.post(f"/devices/{TV}/pause/", {"csrfmiddlewaretoken": second_token, "paused": "1"}).status_code == 302
    assert paused_on_the_box() == {TV}
    assert ">Resume<" in first.get("/devices/").content.decode(), "the other viewer sees the pause at once"


def test_a_rename_stands_when_the_pages_generation_file_cannot_be_written(client_admin, settings, tmp_path):
    """The generation only tells other workers to rebuild the rows: a state directory that takes
    no write does not turn a done rename into an error."""
    settings.APPLIANCE_DEVICES_GENERATION_FILE = str(tmp_path / "no-such-dir" / "devices.generation")
    home([lease("192.168.1.70", TV, "tv")], {TV: counters(TV)})
    client_admin.get("/devices/")
    r = client_admin.post(f"/devices/{TV}/rename/", {"name": "Kitchen TV"})
    assert r.status_code == 302 and Device.objects.get(mac=TV).name == "Kitchen TV"
    assert "Kitchen TV" in client_admin.get("/devices/").content.decode()


def test_the_pages_need_a_login(client, admin, doc):
    for url in ("/devices/", f"/devices/{TV}/rename/", f"/devices/{TV}/forget/", f"/devices/{TV}/pause/"):
        r = client.get(url)
        assert r.status_code == 302 and "/login" in r["Location"]


# ---------------------------------------------------------------- groups, schedules, budgets (issue 18 item 2)

BEDTIME = {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "21:00", "end": "07:00"}


def policy_on_the_box():
    from appliance.services.devices import store
    return store.read(fakes.BOX.layout.devices_policy)


def test_a_device_gets_a_group_schedules_and_a_budget_kept_by_the_box_for_its_devices_service(api):
    home([lease("192.168.1.70", TV, "tv")], {})
    r = api.patch(f"/api/devices/{TV}/", {"group": "Kids", "schedules": [BEDTIME],
                                          "budget": {"bytes": 2_000_000_000, "period": "day"}}, format="json")
    assert r.status_code == 200, r.data
    assert (r.data["group"], r.data["schedules"], r.data["budget"]) == (
        "Kids", [BEDTIME], {"bytes": 2_000_000_000, "period": "day"})
    kept = policy_on_the_box().of(TV)
    assert kept.group == "Kids" and kept.schedules[0].describe() == "off 21:00-07:00 starting Mon-Fri"
    assert AuditEntry.objects.filter(action="device-policy", target=TV).exists()
    r = api.patch(f"/api/devices/{TV}/", {"budget": None, "schedules": []}, format="json")
    assert (r.data["group"], r.data["schedules"], r.data["budget"]) == ("Kids", [], None)


@pytest.mark.parametrize("body, field", [
    ({"schedules": [{**BEDTIME, "days": ["monday"]}]}, "schedules"),
    ({"schedules": [{**BEDTIME, "start": "21:00\n"}]}, "schedules"),
    ({"schedules": [{**BEDTIME, "why": "bed"}]}, "schedules"),
    ({"schedules": BEDTIME}, "schedules"),
    ({"budget": {"bytes": 0, "period": "day"}}, "budget"),
    ({"budget": {"bytes": 10, "period": "week"}}, "budget"),
    ({"group": "a/b"}, "group"),
    ({"group": "x" * 33}, "group"),
])
def test_a_bad_group_schedule_or_budget_is_refused_naming_the_field(api, body, field):
    home([lease("192.168.1.70", TV, "tv")], {})
    r = api.patch(f"/api/devices/{TV}/", body, format="json")
    assert r.status_code == 400 and set(r.data) == {field}, r.data
    assert policy_on_the_box().of(TV).empty


def test_a_group_schedule_applies_to_the_groups_devices_and_the_service_says_who_is_off(api, client_admin):
    from appliance.durable import write_atomic
    home([lease("192.168.1.70", TV, "tv"), lease("192.168.1.71", PHONE, "pixel")], {})
    api.patch(f"/api/devices/{TV}/", {"group": "Kids"}, format="json")
    r = api.put("/api/device-groups/Kids/", {"schedules": [BEDTIME]}, format="json")
    assert r.status_code == 200 and r.data == {"name": "Kids", "schedules": [BEDTIME], "devices": [TV]}
    assert api.get("/api/device-groups/").data == [r.data]
    assert api.put("/api/device-groups/Kids/", {"schedules": [BEDTIME], "devices": []}, format="json").status_code == 400
    # The devices service's word on who a schedule has off now.
    write_atomic(fakes.BOX.layout.devices_scheduled, '{"macs": ["%s"]}' % TV)
    got = by_mac(api.get("/api/devices/").data)
    assert (got[TV]["scheduled_off"], got[TV]["paused"], got[PHONE]["scheduled_off"]) == (True, False, False)
    page = client_admin.get("/devices/").content.decode()
    assert "off by its schedule" in page and "Kids" in page and "off 21:00-07:00 starting Mon-Fri" in page
    assert api.delete("/api/device-groups/Kids/").status_code == 204
    assert by_mac(api.get("/api/devices/").data)[TV]["group"] == ""
    assert api.get("/api/device-groups/Kids/").status_code == 404


def test_a_forgotten_device_loses_its_schedules(api):
    home([lease("192.168.1.70", TV, "tv")], {})
    api.patch(f"/api/devices/{TV}/", {"schedules": [BEDTIME]}, format="json")
    assert api.delete(f"/api/devices/{TV}/").status_code == 204
    assert policy_on_the_box().of(TV).empty


def test_what_a_device_used_today_is_the_devices_services_count(api):
    import json
    from datetime import datetime
    from appliance.durable import write_atomic
    home([lease("192.168.1.70", TV, "tv")], {})
    now = datetime.now()
    write_atomic(fakes.BOX.layout.devices_state, json.dumps({"usage": {TV: {
        "day": [now.strftime("%Y-%m-%d"), 1234], "month": [now.strftime("%Y-%m"), 99999]}}}))
    tv = by_mac(api.get("/api/devices/").data)[TV]
    assert (tv["used_today"], tv["used_month"]) == (1234, 99999)


def test_the_console_sets_a_devices_group_schedule_and_budget_and_a_groups_schedule(client_admin, live_seconds):
    home([lease("192.168.1.70", TV, "tv")], {})
    client_admin.get("/devices/")     # the device's row
    assert client_admin.get(f"/devices/{TV}/policy/").status_code == 200
    r = client_admin.post(f"/devices/{TV}/policy/", {"group": "Kids", "days": ["sat", "sun"], "start": "22:30",
                                                    "end": "08:00", "budget_mb": "500", "budget_period": "month"})
    assert r.status_code == 302, r.content.decode()[-2000:]
    kept = policy_on_the_box().of(TV)
    assert (kept.group, [s.describe() for s in kept.schedules], kept.budget.bytes, kept.budget.period) == (
        "Kids", ["off 22:30-08:00 starting Sat, Sun"], 500_000_000, "month")
    r = client_admin.post(f"/devices/{TV}/policy/", {"group": "Kids", "days": ["mon"], "start": "", "end": "07:00"})
    assert r.status_code == 400 and "a time of day" in r.content.decode()
    r = client_admin.post("/devices/groups/Kids/", {"days": ["mon", "tue", "wed", "thu", "fri"],
                                                    "start": "21:00", "end": "07:00"})
    assert r.status_code == 302
    assert [s.describe() for s in policy_on_the_box().groups["Kids"]] == ["off 21:00-07:00 starting Mon-Fri"]
    page = client_admin.get("/devices/").content.decode()
    assert 'data-group="Kids"' in page and "\xa0bytes of 476.8\xa0MB this month" in page
    # No day ticked: no schedule.
    client_admin.post(f"/devices/{TV}/policy/", {"group": "", "days": [], "start": "", "end": ""})
    assert policy_on_the_box().of(TV).empty
