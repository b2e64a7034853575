"""The plan's services as systemd units (on the image, `APPLIANCE_SERVICES=systemd`).

Same interface as `Supervisor` (`start`, `stop`, `remove`, `status`), so the
apply layer does not know which one runs the services. Each `ServiceSpec`
becomes `/run/systemd/system/appliance-svc-NAME.service` from
`ServiceSpec.systemd_unit()` (`NetworkNamespacePath=` for the namespaced
ones, `Restart=always`). Units live under /run on purpose: after a reboot
only apply-on-boot brings them back, from the last applied settings, so no
stale unit can start a service with an old config or before its namespace.

systemd rather than the supervisor on the image because a service then
belongs to no process that applied it: restarting the console's worker (where
applies run) or apply-on-boot does not take DHCP and DNS down with it, and
the journal keeps each service's log.
"""
from __future__ import annotations

import time
from pathlib import Path

from appliance import durable
from appliance.kernel.base import Completed, Processes
from appliance.kernel.process import LinuxProcesses
from appliance.services.supervisor import (
    BACKOFF, FAILED, RUNNING, STARTING, STOPPED, ServiceNotReady, ServiceSpec, ServiceState, last_log_line,
    wait_ready,
)
from appliance.services.health.probes import check

UNIT_DIR = "/run/systemd/system"
PREFIX = "appliance-svc-"

def unit_name(name: str) -> str:
    return f"{PREFIX}{name}.service"


def unit_text(spec: ServiceSpec) -> str:
    """The unit file; its first line carries the spec's digest, so a new
    config (a new `revision`) is a changed unit even when argv is the same."""
    return f"# appliance spec {spec.digest}\n" + spec.systemd_unit(f"appliance service {spec.name}")


# systemd ActiveState -> the supervisor's words, which the console shows.
_STATES = {"active": RUNNING, "activating": STARTING, "reloading": RUNNING, "deactivating": STOPPED,
           "inactive": STOPPED, "failed": FAILED}


class SystemdUnits:
    kind = "systemd"  # the watchdog restarts services through the same runner
    def __init__(self, unit_dir: str | Path = UNIT_DIR, processes: Processes | None = None, prober=check):
        self.dir = Path(unit_dir)
        self.processes = processes or LinuxProcesses()
        self.prober = prober

    def systemctl(self, *args: str) -> Completed:
        return self.processes.run(None, ["systemctl", *args])

    def _path(self, name: str) -> Path:
        return self.dir / unit_name(name)

    def _check(self, res: Completed, what: str) -> None:
        if res.returncode != 0:
            raise RuntimeError(f"systemctl {what}: {(res.stderr or res.stdout).strip() or res.returncode}")

    def names(self) -> list[str]:
        return sorted(p.name[len(PREFIX):-len(".service")] for p in self.dir.glob(f"{PREFIX}*.service"))

    def status(self, name: str) -> ServiceState:
        res = self.systemctl("show", unit_name(name), "--property=ActiveState,SubState,MainPID,NRestarts")
        # A unit systemd does not know is "inactive" with status 0; a failure
        # here is systemd itself not answering, which is not "stopped".
        self._check(res, f"show {unit_name(name)}")
        props = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
        state = _STATES.get(props.get("ActiveState", ""), STOPPED)
        if props.get("SubState") == "auto-restart":
            state = BACKOFF
        pid = int(props.get("MainPID") or 0) or None
        return ServiceState(name=name, state=state, pid=pid, restarts=int(props.get("NRestarts") or 0))

    def start(self, spec: ServiceSpec, timeout: float | None = None) -> str:
        """Write the unit and start it; "unchanged", "started" or "restarted" once it answers its probe.

        Raises ServiceNotReady (the service, why, its last journal line) when it does not.
        """
        text = unit_text(spec)
        path = self._path(spec.name)
        old = path.read_text() if path.exists() else None
        active = self.status(spec.name).state in (RUNNING, STARTING, BACKOFF)
        if old == text and active:
            return "unchanged"
        self.dir.mkdir(parents=True, exist_ok=True)
        durable.write_atomic(str(path), text)
        self._check(self.systemctl("daemon-reload"), "daemon-reload")
        # reset-failed: a unit that hit its start limit before may start again.
        self.systemctl("reset-failed", unit_name(spec.name))
        self._check(self.systemctl("restart", unit_name(spec.name)), f"restart {unit_name(spec.name)}")
        why = self.wait_ready(spec, time.monotonic() + (spec.ready_timeout if timeout is None else timeout))
        if why:
            raise ServiceNotReady(spec.name, why, self.last_log_line(spec.name))
        return "restarted" if active else "started"

    def wait_ready(self, spec: ServiceSpec, deadline: float) -> str | None:
        return wait_ready(spec, deadline, self.status, self.processes, self.prober)

    def last_log_line(self, name: str) -> str:
        res = self.processes.run(None, ["journalctl", "-u", unit_name(name), "-n", "5", "-o", "cat", "--no-pager"])
        return last_log_line(res.stdout) if res.returncode == 0 else ""

    def log_tail(self, name: str, lines: int = 500) -> str:
        """The end of the unit's journal (the service's own lines, its own time stamps)."""
        res = self.processes.run(None, ["journalctl", "-u", unit_name(name), "-n", str(lines), "-o", "cat",
                                        "--no-pager"])
        return res.stdout if res.returncode == 0 else ""

    def kill(self, name: str, grace: float = 1.0) -> bool:
        """End the service hard (a stopped or hung one too); `Restart=always` starts it again."""
        pid = self.status(name).pid
        if not pid:
            return False
        unit = unit_name(name)
        for sig in ("SIGCONT", "SIGTERM"):
            self.systemctl("kill", f"--signal={sig}", unit)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.status(name).pid == pid:
            time.sleep(0.05)
        if self.status(name).pid == pid:
            self.systemctl("kill", "--signal=SIGKILL", unit)
        return True

    def stop(self, name: str, timeout: float = 10.0) -> bool:
        was = self.status(name).state in (RUNNING, STARTING, BACKOFF)
        self.systemctl("stop", unit_name(name))
        return was

    def remove(self, name: str) -> None:
        self.stop(name)
        path = self._path(name)
        if path.exists():
            path.unlink()
            self.systemctl("daemon-reload")
        self.systemctl("reset-failed", unit_name(name))
