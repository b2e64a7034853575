"""The dashboard's services panel asks whatever runs the box's services.

On the image systemd runs them (APPLIANCE_SERVICES=systemd) and the panel
must show the units' state; elsewhere the supervisor's. `systemctl` here is a
script on PATH answering `show` from files (this machine's PID 1 is not
systemd), so the console's real path to it runs: subprocess, `SystemdUnits`,
the panel's JSON and tile.
"""
import os
import stat

import pytest

from appliance.box import locate
from appliance.services.supervisor import Supervisor
from appliance.services.units import SystemdUnits
from tests.support import webfakes as fakes

SYSTEMCTL = """#!/bin/sh
echo "$*" >> "$FAKE_SYSTEMD/calls"
if [ -e "$FAKE_SYSTEMD/down" ]; then
    echo "System has not been booted with systemd as init system (PID 1). Can't operate." >&2
    exit 1
fi
[ "$1" = show ] || exit 0
state=$(cat "$FAKE_SYSTEMD/$2" 2>/dev/null || echo inactive)  # a unit systemd does not know: inactive, status 0
sub=dead; pid=0
[ "$state" = active ] && sub=running && pid=4242
printf 'ActiveState=%s\\nSubState=%s\\nMainPID=%s\\nNRestarts=0\\n' "$state" "$sub" "$pid"
"""


def box_as_deployed():
    """The applied box as the console finds it: located by the environment, which says what runs its services."""
    b = fakes.BOX
    return locate.box(b.placement.host_ns, b.layout.state_dir, b.layout.run_dir, kernel=b.kernel, fs=b.fs)


@pytest.fixture
def systemd(tmp_path, monkeypatch, settings):
    """An applied box, the console on it as deployed, and a fake systemctl; returns the units' state folder."""
    assert fakes.BOX.apply(fakes.settings()).ok
    settings.APPLIANCE_BOX_FACTORY = f"{__name__}:box_as_deployed"
    units = tmp_path / "systemd"
    units.mkdir()
    exe = tmp_path / "bin/systemctl"
    exe.parent.mkdir()
    exe.write_text(SYSTEMCTL)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SYSTEMD", str(units))
    return units


def panel(client) -> dict:
    r = client.get("/status.json")
    assert r.status_code == 200
    services = r.json()["services"]
    assert services["ok"], services
    return {row["name"]: row["state"] for row in services["value"]}


def planned() -> list[str]:
    return [s.name for s in fakes.BOX.applied_plan().services]


def test_systemd_mode_shows_each_units_state(client_admin, systemd, monkeypatch):
    monkeypatch.setenv("APPLIANCE_SERVICES", "systemd")
    names = planned()
    assert {"dhcp4", "dns"} <= set(names)
    (systemd / "appliance-svc-dhcp4.service").write_text("active")
    (systemd / "appliance-svc-dns.service").write_text("failed")
    want = {n: "stopped" for n in names} | {"dhcp4": "running", "dns": "failed"}
    assert panel(client_admin) == want
    page = client_admin.get("/tiles/").content.decode()
    assert "dhcp4: running" in page and "dns: failed" in page
    # A unit that stops shows as stopped on the next reading.
    (systemd / "appliance-svc-dhcp4.service").write_text("inactive")
    assert panel(client_admin)["dhcp4"] == "stopped"


def test_systemd_not_answering_is_unknown_not_stopped(client_admin, systemd, monkeypatch):
    monkeypatch.setenv("APPLIANCE_SERVICES", "systemd")
    (systemd / "down").touch()
    states = panel(client_admin)
    assert states and all(s.startswith("unknown (") and "not been booted with systemd" in s
                          for s in states.values()), states


def test_without_systemd_mode_the_supervisor_answers(client_admin, systemd, monkeypatch):
    monkeypatch.delenv("APPLIANCE_SERVICES", raising=False)
    (systemd / "appliance-svc-dhcp4.service").write_text("active")
    # Nothing started under this box's supervisor: every service is stopped, whatever systemd says.
    assert panel(client_admin) == {n: "stopped" for n in planned()}
    assert not (systemd / "calls").exists(), "systemctl asked although the supervisor runs the services"


def test_the_apply_and_the_panel_use_the_same_runner(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_SERVICES", "systemd")
    box = locate.box("lab-box", f"{tmp_path}/state", f"{tmp_path}/run")
    assert isinstance(box.services, SystemdUnits) and box.applier.services is box.services
    monkeypatch.delenv("APPLIANCE_SERVICES")
    box = locate.box("lab-box", f"{tmp_path}/state", f"{tmp_path}/run")
    assert isinstance(box.services, Supervisor) and box.applier.services is box.services
    assert str(box.services.dir) == f"{tmp_path}/run/services"


def test_the_panel_shows_health_and_the_last_failure_and_the_audit_log_gets_the_events(client_admin, systemd,
                                                                                       monkeypatch):
    import json
    import time as _time

    from appliance.services.health import record
    from appliance.web.audit.models import AuditEntry

    monkeypatch.delenv("APPLIANCE_SERVICES", raising=False)
    layout = fakes.BOX.layout
    failed_at = _time.time() - 5
    record.write_status(layout.health_status, {
        "monotonic": _time.monotonic(), "stale_after": 3.0, "register": 6,
        "services": {"dns": {"state": "unhealthy", "last_failure": "no answer within 0.5s",
                             "last_failure_at": failed_at, "restarts": 1},
                     "dhcp4": {"state": "healthy", "last_failure": ""},
                     "relay": {"state": "healthy", "last_failure": ""}}})
    # Written by the watchdog while no console ran.
    event = record.append_event(layout.health_events, record.Event(
        "dns", "unhealthy", "no answer within 0.5s; failed open: DNS goes to the modem", failed_at))
    rows = {r["name"]: r for r in client_admin.get("/status.json").json()["services"]["value"]}
    assert rows["dns"]["health"] == "unhealthy" and rows["dns"]["fallback"] == "the modem answers DNS"
    assert rows["dns"]["last_failure"] == "no answer within 0.5s" and rows["dhcp4"]["health"] == "healthy"
    page = client_admin.get("/tiles/").content.decode()
    assert "unhealthy" in page and "the modem answers DNS" in page and "last failure" in page
    entries = AuditEntry.objects.filter(action="health")
    assert [(e.target, e.source) for e in entries] == [("dns: unhealthy", f"event:{event.id}")]
    assert abs(entries[0].time.timestamp() - failed_at) < 1, "kept with the time it happened"
    client_admin.get("/audit/")
    assert AuditEntry.objects.filter(action="health").count() == 1, "copied once"
    assert "failed open" in client_admin.get("/audit/").content.decode()
    json.dumps(rows)
