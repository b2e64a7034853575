"""The supervisor with ordinary processes (no namespace, no root): start,
idempotence, restart with backoff, failure, state read by another process,
stop by PID, and the same service as a systemd unit."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from appliance.services.supervisor import (
    BACKOFF, FAILED, RUNNING, STOPPED, ServiceSpec, Supervisor,
)


def wait_for(predicate, timeout=15.0):
    """Poll until predicate() is truthy (a liveness wait, not a speed check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
def sup(tmp_path):
    s = Supervisor(tmp_path / "services")
    yield s
    for name in s.names():
        s.stop(name)


def sleeper(name="sleeper", **kw):
    return ServiceSpec(name=name, argv=("sleep", "300"), **kw)


def test_start_is_idempotent_and_a_changed_spec_restarts(sup):
    assert sup.start(sleeper()) == "started"
    st = sup.status("sleeper")
    assert st.state == RUNNING and st.pid and os.path.exists(f"/proc/{st.pid}")
    assert sup.start(sleeper()) == "unchanged"
    assert sup.status("sleeper").pid == st.pid
    assert sup.start(sleeper(revision="new-config")) == "restarted"
    new = wait_for(lambda: (s := sup.status("sleeper")).state == RUNNING and s.pid != st.pid and s)
    assert new.restarts == 0
    wait_for(lambda: not os.path.exists(f"/proc/{st.pid}") or "Z" in open(f"/proc/{st.pid}/stat").read().split(")")[1][:3])


def test_a_killed_service_comes_back_with_backoff(sup):
    sup.start(sleeper(backoff_initial=0.2))
    first = sup.status("sleeper").pid
    os.kill(first, signal.SIGKILL)
    st = wait_for(lambda: (s := sup.status("sleeper")).state == RUNNING and s.pid != first and s)
    assert st.restarts == 1
    assert "signal SIGKILL" in st.last_error


def test_a_crashing_service_backs_off_then_fails_with_its_stderr(sup):
    spec = ServiceSpec(name="crasher", argv=("sh", "-c", "echo cannot open /nonexistent >&2; exit 3"),
                       backoff_initial=0.05, backoff_max=0.2, max_fast_failures=4)
    sup.start(spec)
    st = wait_for(lambda: (s := sup.status("crasher")).state == FAILED and s)
    assert st.restarts == 3 and st.last_exit == 3 and st.pid is None
    assert "exited with status 3" in st.last_error and "cannot open /nonexistent" in st.last_error


def test_backoff_state_is_reported(sup):
    sup.start(ServiceSpec(name="slow", argv=("sh", "-c", "exit 1"), backoff_initial=30))
    st = wait_for(lambda: (s := sup.status("slow")).state == BACKOFF and s)
    assert st.restarts == 1 and st.pid is None


def test_a_missing_program_is_failed(sup):
    sup.start(ServiceSpec(name="ghost", argv=("/nonexistent/daemon",)))
    st = wait_for(lambda: (s := sup.status("ghost")).state == FAILED and s)
    assert "/nonexistent/daemon" in st.last_error


def test_stop_and_state_from_another_process(sup):
    sup.start(sleeper(env=(("GREETING", "hello"),)))
    st = sup.status("sleeper")
    with open(f"/proc/{st.pid}/environ", "rb") as f:
        assert b"GREETING=hello" in f.read()
    out = subprocess.run([sys.executable, "-m", "appliance.services.supervisor", str(sup.dir), "status"],
                         capture_output=True, text=True, check=True).stdout
    assert f"sleeper: running pid={st.pid} restarts=0" in out
    assert sup.stop("sleeper") is True
    assert sup.status("sleeper").state == STOPPED
    wait_for(lambda: not os.path.exists(f"/proc/{st.pid}"))
    assert sup.stop("sleeper") is False


def test_a_dead_monitor_is_reported(sup):
    sup.start(sleeper())
    st = sup.status("sleeper")
    os.kill(st.monitor_pid, signal.SIGKILL)
    wait_for(lambda: sup.status("sleeper").state == FAILED)
    assert "monitor process is gone" in sup.status("sleeper").last_error
    os.kill(st.pid, signal.SIGKILL)


def test_a_kill_after_its_monitor_died_ends_the_orphan_and_runs_the_service_again(sup):
    """The watchdog's restart of a service whose monitor was killed (the soak found the DNS
    server never restarted: no monitor was left to start it)."""
    sup.start(sleeper())
    st = sup.status("sleeper")
    os.kill(st.monitor_pid, signal.SIGKILL)
    wait_for(lambda: sup.status("sleeper").state == FAILED)
    assert sup.kill("sleeper") is True
    wait_for(lambda: not os.path.exists(f"/proc/{st.pid}") or
             open(f"/proc/{st.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z")
    now = sup.status("sleeper")
    assert now.state == RUNNING and now.pid != st.pid and now.monitor_pid != st.monitor_pid
    # The new monitor starts it again when it dies, as before the fault.
    os.kill(now.pid, signal.SIGKILL)
    wait_for(lambda: sup.status("sleeper").pid not in (None, now.pid) and sup.status("sleeper").state == RUNNING)


def test_spec_round_trips_and_renders_a_systemd_unit():
    spec = ServiceSpec(name="dhcp4", argv=("kea-dhcp4", "-c", "/var/lib/appliance/dhcp/kea dhcp4.conf"),
                       netns="gw", env=(("KEA_PIDFILE_DIR", "/run/appliance/dhcp"),), cwd="/var/lib/appliance")
    assert ServiceSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    unit = spec.systemd_unit()
    assert "NetworkNamespacePath=/run/netns/gw" in unit
    assert 'ExecStart=kea-dhcp4 -c "/var/lib/appliance/dhcp/kea dhcp4.conf"' in unit
    assert "Environment=KEA_PIDFILE_DIR=/run/appliance/dhcp" in unit
    assert "WorkingDirectory=/var/lib/appliance" in unit and "Restart=always" in unit
    unit_section, service_section = unit.split("[Service]")[0], unit.split("[Service]")[1]
    assert "StartLimitBurst=" in unit_section and "StartLimit" not in service_section
    assert "After=network.target" not in unit  # the boot-time apply, before network.target, waits for it
    assert spec.digest != ServiceSpec(**{**spec.__dict__, "revision": "x"}).digest


def test_bad_specs_are_refused():
    with pytest.raises(ValueError):
        ServiceSpec(name="../x", argv=("true",))
    with pytest.raises(ValueError):
        ServiceSpec(name="x", argv=())
