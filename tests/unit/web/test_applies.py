"""Apply, progress, history, one at a time, confirm or roll back, recovery after a killed worker."""
import datetime as dt

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.utils import timezone

from appliance.box.settings import parse_settings
from appliance.web import document
from appliance.web.applies import deadline, service
from appliance.web.applies.models import ApplyRecord
from appliance.web.dhcp.models import DhcpPool
from appliance.web.network.models import Admin
from tests.support import webfakes as fakes

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(django_capture_on_commit_callbacks):
    """Queue through the API/console and let the eager 'worker' run what was queued."""
    def go(fn, *a, **kw):
        with django_capture_on_commit_callbacks(execute=True):
            return fn(*a, **kw)
    return go


@pytest.fixture
def listener():
    layer = get_channel_layer()
    name = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("console", name)

    def events():
        out = []
        while True:
            try:
                msg = async_to_sync(layer.receive)(name) if _pending(layer, name) else None
            except Exception:  # noqa: BLE001
                msg = None
            if msg is None:
                return out
            out.append(msg["event"])
    return events


def _pending(layer, name):
    return bool(layer.channels.get(name))


def test_apply_runs_streams_progress_and_keeps_the_history(api, run, listener):
    r = run(api.post, "/api/applies/", {}, format="json")
    assert r.status_code == 202, r.data
    rec = ApplyRecord.objects.get(pk=r.data["id"])
    assert rec.state == "applied" and rec.outcome == "new"
    assert "step 4/5: services" in rec.log and "+flow priority=" in rec.diff
    assert fakes.BOX.applied_settings() == fakes.settings()
    lines = [e["line"] for e in listener() if e.get("line")]
    assert lines[0].startswith("step 1/5") and any(line.startswith("done:") for line in lines)
    got = api.get(f"/api/applies/{rec.pk}/").data
    assert got["state"] == "applied" and got["log"] == rec.log
    t = api.get(f"/api/tasks/{rec.task_id}/").data
    assert t["apply"] == rec.pk and t["apply_state"] == "applied"


def test_pool_change_is_applied_without_confirm(api, run):
    run(api.post, "/api/applies/", {}, format="json")
    pool = DhcpPool.objects.get()
    assert api.patch(f"/api/dhcp/pools/{pool.pk}/", {"start": "192.168.1.100"}, format="json").status_code == 200
    r = run(api.post, "/api/applies/", {}, format="json")
    rec = ApplyRecord.objects.get(pk=r.data["id"])
    assert rec.state == "applied" and not rec.needs_confirm
    assert "~ service dhcp4: restarted" in rec.changes
    assert str(fakes.BOX.applied_settings().dhcp.pools[0].start) == "192.168.1.100"


def test_invalid_document_is_not_queued(api, run):
    # A document made invalid behind the models' back (e.g. an old database).
    DhcpPool.objects.update(start="192.168.1.2")
    r = run(api.post, "/api/applies/", {}, format="json")
    assert r.status_code == 400 and "dhcp.pools[0]" in r.data
    assert ApplyRecord.objects.count() == 0 and fakes.BOX.applied_settings() is None


def _first_apply_then_change_admin(api, run):
    run(api.post, "/api/applies/", {}, format="json")
    assert api.patch("/api/network/admin/", {"address": "192.168.1.7"}, format="json").status_code == 200
    r = run(api.post, "/api/applies/", {}, format="json")
    return ApplyRecord.objects.get(pk=r.data["id"])


def test_admin_change_waits_for_confirm_and_confirm_keeps_it(api, run):
    rec = _first_apply_then_change_admin(api, run)
    assert rec.state == "awaiting_confirm" and rec.needs_confirm
    assert rec.confirm_reasons == ["admin address 192.168.1.8 -> 192.168.1.7"]
    # A second apply must wait until this one is settled.
    assert run(api.post, "/api/applies/", {}, format="json").status_code == 409
    r = api.post(f"/api/applies/{rec.pk}/confirm/")
    assert r.status_code == 200 and r.data["state"] == "confirmed"
    service.rollback_if_unconfirmed(rec.pk)  # the deadline arriving later does nothing
    assert str(fakes.BOX.applied_settings().admin.address) == "192.168.1.7"
    assert api.post(f"/api/applies/{rec.pk}/confirm/").status_code == 409


def test_unconfirmed_change_rolls_back_at_the_deadline(api, run):
    rec = _first_apply_then_change_admin(api, run)
    ApplyRecord.objects.filter(pk=rec.pk).update(confirm_at=deadline.now() - 1)
    rb = run(service.rollback_if_unconfirmed, rec.pk)
    rec.refresh_from_db()
    assert rec.state == "rolled_back" and rec.outcome == "old" and rec.rolled_back_by_id == rb.pk
    assert rb.kind == "rollback" and rb.state == "applied"
    assert str(fakes.BOX.applied_settings().admin.address) == "192.168.1.8"
    # The console's document follows the box back.
    assert Admin.objects.get().address == "192.168.1.8"


def test_manual_rollback(api, run):
    run(api.post, "/api/applies/", {}, format="json")
    pool = DhcpPool.objects.get()
    api.patch(f"/api/dhcp/pools/{pool.pk}/", {"end": "192.168.1.150"}, format="json")
    r = run(api.post, "/api/applies/", {}, format="json")
    rb = run(api.post, f"/api/applies/{r.data['id']}/rollback/")
    assert rb.status_code == 202
    assert ApplyRecord.objects.get(pk=rb.data["id"]).state == "applied"
    assert str(fakes.BOX.applied_settings().dhcp.pools[0].end) == "192.168.1.191"
    first = ApplyRecord.objects.order_by("id").first()
    assert api.post(f"/api/applies/{first.pk}/rollback/").status_code == 409  # nothing before the first


def test_failed_apply_says_the_box_runs_the_old_settings(api, run):
    run(api.post, "/api/applies/", {}, format="json")
    fakes.BOX._switch.fail = True
    api.patch("/api/switch/custom-flows/", {"custom": "priority=10,udp,tp_dst=9999,actions=drop"}, format="json")
    r = run(api.post, "/api/applies/", {}, format="json")
    rec = ApplyRecord.objects.get(pk=r.data["id"])
    assert rec.state == "failed" and rec.outcome == "old" and "verifier rejected" in rec.error
    assert fakes.BOX.applied_settings().flows.custom == ""


def test_one_apply_at_a_time():
    with service.apply_lock():
        with pytest.raises(service.ApplyBusy):
            with service.apply_lock():
                pass
    with service.apply_lock():  # released
        pass


def test_busy_worker_retries_rather_than_running_two_applies(api, django_capture_on_commit_callbacks):
    from appliance.web.applies import tasks
    with django_capture_on_commit_callbacks(execute=False):
        rec = service.queue_apply(None, document.current_settings())
    with service.apply_lock():
        with pytest.raises(Exception):  # eager mode surfaces the retry
            tasks.apply_task.apply(args=(rec.pk,), throw=True)
    rec.refresh_from_db()
    assert rec.state == "queued" and fakes.BOX.applied_settings() is None


class Killed(BaseException):
    """The worker dying mid-apply (nothing in the box's code can catch it)."""


def test_recovery_after_a_worker_killed_mid_apply_restores_the_old_state(api, run):
    run(api.post, "/api/applies/", {}, format="json")
    before = fakes.BOX.applied_settings()
    old_services = dict(fakes.BOX._services.running)
    old_switch = fakes.BOX._switch.loaded
    api.patch("/api/network/admin/", {"address": "192.168.1.7"}, format="json")
    original_load = fakes.BOX._switch.load

    def die(switch):  # step 3: kernel objects and files are already changed
        raise Killed()
    fakes.BOX._switch.load = die
    with pytest.raises(Killed):
        run(api.post, "/api/applies/", {}, format="json")
    rec = ApplyRecord.objects.order_by("-id").first()
    assert rec.state == "running"  # what a dead worker leaves behind
    fakes.BOX._switch.load = original_load
    done = service.recover()
    rec.refresh_from_db()
    assert done == [rec] and rec.state == "interrupted" and rec.outcome == "old"
    assert "restored: the box runs the previous settings" in rec.log
    assert fakes.BOX.applied_settings() == before
    assert fakes.BOX._services.running == old_services and fakes.BOX._switch.loaded == old_switch
    gw_links = {l.name: l for l in fakes.BOX.kernel.links("lab-box")}
    assert "admin0" in gw_links
    addrs = fakes.BOX.kernel.addresses("lab-box", "admin0")
    assert addrs == ["192.168.1.8/24"], addrs


def test_recovery_when_the_box_had_finished_says_new(api, run):
    run(api.post, "/api/applies/", {}, format="json")
    rec = ApplyRecord.objects.get()
    ApplyRecord.objects.filter(pk=rec.pk).update(state="running", outcome="")
    service.recover()
    rec.refresh_from_db()
    assert rec.state == "interrupted" and rec.outcome == "new"


def test_recovery_enforces_an_expired_deadline(api, run):
    rec = _first_apply_then_change_admin(api, run)
    ApplyRecord.objects.filter(pk=rec.pk).update(confirm_at=deadline.now() - 5)
    run(service.recover)
    rec.refresh_from_db()
    assert rec.state == "rolled_back"
    assert str(fakes.BOX.applied_settings().admin.address) == "192.168.1.8"


def test_a_wall_clock_jump_inside_the_confirm_window_moves_nothing(api, run, monkeypatch):
    rec = _first_apply_then_change_admin(api, run)
    assert 29 < service.seconds_left(rec) <= 30
    scheduled = []
    monkeypatch.setattr(service, "_schedule_deadline", lambda r, left: scheduled.append(left))
    real = timezone.now
    # NTP syncs a box without a real-time clock: its wall clock leaps a day ahead. The deadline task,
    # if it came now, rolls nothing back and is scheduled again for the time that is really left.
    monkeypatch.setattr(timezone, "now", lambda: real() + dt.timedelta(days=1))
    assert service.rollback_if_unconfirmed(rec.pk) is None
    rec.refresh_from_db()
    assert rec.state == "awaiting_confirm" and 29 < scheduled[-1] <= 30
    # The console shows the deadline on the new wall clock: still about 30 s away.
    shown = service.shown_deadline(rec) - timezone.now()
    assert dt.timedelta(seconds=29) < shown <= dt.timedelta(seconds=30)
    # The wall clock then leaps back a year, and the 30 s pass: the rollback happens on time.
    monkeypatch.setattr(timezone, "now", lambda: real() - dt.timedelta(days=365))
    boottime = deadline.now() + 31
    monkeypatch.setattr(deadline, "now", lambda: boottime)
    rb = run(service.rollback_if_unconfirmed, rec.pk)
    rec.refresh_from_db()
    assert rec.state == "rolled_back" and rb.state == "applied"


def test_a_reboot_inside_the_confirm_window_rolls_back_at_the_worker_start(api, run, monkeypatch):
    rec = _first_apply_then_change_admin(api, run)
    monkeypatch.setattr(deadline, "boot_id", lambda: "another-boot")
    assert service.seconds_left(rec) == 0.0
    run(service.recover)
    rec.refresh_from_db()
    assert rec.state == "rolled_back"


def test_risk_rules():
    from appliance.web.applies.risk import confirm_reasons
    plan = fakes.BOX.plan  # the change is judged on the plans: what runs and what would
    s = fakes.settings()
    assert confirm_reasons(None, plan(s)) == []
    assert confirm_reasons(plan(s), plan(s)) == []
    pool = fakes.settings(dhcp={"pools": [{"start": "192.168.1.100", "end": "192.168.1.150"}]})
    assert confirm_reasons(plan(s), plan(pool)) == []
    flows = parse_settings({**s.model_dump(mode="json"), "flows": {"custom": "priority=9,in_port=admin,actions=drop"}})
    assert confirm_reasons(plan(s), plan(flows)) == ["custom flows touching the admin port changed"]
    other = parse_settings({**s.model_dump(mode="json"), "flows": {"custom": "priority=9,udp,tp_dst=9,actions=drop"}})
    assert confirm_reasons(plan(s), plan(other)) == []
    guarded = fakes.settings(admin={"address": "192.168.1.8", "guarded_ports": [22, 443]})
    assert confirm_reasons(plan(s), plan(guarded)) == ["admin guarded ports changed"]
    wider = fakes.settings(lan={"prefix": "192.168.0.0/23"})
    assert confirm_reasons(plan(s), plan(wider)) == ["LAN 192.168.1.0/24 -> 192.168.0.0/23"]
