"""Keep the box's daemons running, each inside its network namespace.

A service is data (`ServiceSpec`: argv, netns, env, working directory), so
the same definition runs here or, on the image, as a systemd unit with
`NetworkNamespacePath=` (`ServiceSpec.systemd_unit`).

Each running service has its own small monitor process (like runit's
`runsv`): it starts the service in the namespace, waits for it, restarts it
with exponential backoff when it dies, and writes the service's state
(running / backoff / failed / stopped, pid, restarts, last error = tail of
stderr) to a JSON file. The state directory is the only thing shared, so any
process (the console, the CLI) can ask `Supervisor(state_dir).status(name)`,
and services outlive the process that started them. `start` is idempotent:
the same spec while running is a no-op, a changed spec restarts; it returns
once the service answers its probe (`ServiceSpec.probe`), and raises
`ServiceNotReady` naming the service and its last log line when it does not.
`kill` ends a service hard (a stopped or hung one too: SIGCONT, SIGTERM,
then SIGKILL) for its monitor to start it again: the watchdog's restart.
A service with `watchdog_sec` must say `WATCHDOG=1` on $NOTIFY_SOCKET that
often (sd_notify, as under systemd's `WatchdogSec=`) or its monitor kills it.
Processes
are started, signalled and waited for through the kernel boundary
(`appliance.kernel.process`).

    python -m appliance.services.supervisor STATE_DIR status [NAME]
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from appliance.kernel.base import KernelError, Processes
from appliance.kernel.process import LinuxProcesses
from appliance.services.health.probes import Probe, ProbeResult, check
from appliance.services.identity import Identity

RUNNING, BACKOFF, FAILED, STOPPED, STARTING = "running", "backoff", "failed", "stopped", "starting"
STDERR_TAIL = 2048


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one service. `revision` changes when its config file does,
    so a new config restarts the service even though argv is the same."""

    name: str
    argv: tuple[str, ...]
    netns: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    revision: str = ""
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    # This many deaths in a row, each within `stable_after` of its start, and
    # the service is left `failed` instead of being restarted forever.
    max_fast_failures: int = 10
    stable_after: float = 10.0
    # Sockets that say the service is ready ("udp/53", "tcp/67"): start()
    # returns once they listen in the service's namespace, so an apply is
    # done when the service answers, not when its process exists.
    ready: tuple[str, ...] = ()
    # Readiness and health: what clients ask, answered (appliance.services.health.probes).
    probe: Probe | None = None
    # Generous: a service that fails says so at once (its status), and a slow machine (the
    # image under emulation: the relay took 31 s to listen) must not fail a boot's apply.
    ready_timeout: float = 60.0
    # The service says WATCHDOG=1 (sd_notify) at least this often, or it is killed (0: never asked).
    watchdog_sec: float = 0.0
    # Its own unprivileged user and capabilities (None: root, for what must enter namespaces).
    identity: Identity | None = None
    # The only paths it may write (systemd: ProtectSystem=strict with these ReadWritePaths=).
    writable: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"service name {self.name!r}: use letters, digits, '-' and '_'")
        if not self.argv:
            raise ValueError(f"service {self.name}: argv is empty")

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ServiceSpec":
        data = dict(data)
        data["argv"] = tuple(data["argv"])
        data["env"] = tuple(tuple(p) for p in data.get("env", ()))
        data["ready"] = tuple(data.get("ready", ()))
        data["probe"] = Probe.from_json(data.get("probe"))
        data["identity"] = Identity.from_json(data.get("identity"))
        data["writable"] = tuple(data.get("writable", ()))
        return cls(**data)

    def systemd_unit(self, description: str | None = None) -> str:
        """The same service as a systemd unit (for the image)."""
        lines = ["[Unit]", f"Description={description or 'appliance service ' + self.name}"]
        if self.netns:
            # The namespace is made by the apply step; the unit only joins it.
            lines += [f"ConditionPathExists=/run/netns/{self.netns}"]
        # Not After=network.target: the apply starts these units and waits for
        # them, and on boot the apply itself runs before network.target.
        # The start limit belongs in [Unit] (systemd ignores it in [Service]).
        lines += [f"StartLimitIntervalSec={int(self.stable_after * self.max_fast_failures)}",
                  f"StartLimitBurst={self.max_fast_failures}",
                  "", "[Service]", "Type=simple",
                  "ExecStart=" + " ".join(_systemd_quote(a) for a in self.argv)]
        if self.netns:
            lines.append(f"NetworkNamespacePath=/run/netns/{self.netns}")
        for key, value in self.env:
            lines.append(f"Environment={_systemd_quote(f'{key}={value}')}")
        if self.cwd:
            lines.append(f"WorkingDirectory={self.cwd}")
        if self.watchdog_sec:
            lines += [f"WatchdogSec={self.watchdog_sec:g}", "NotifyAccess=main"]
        lines += self._sandbox()
        lines += ["Restart=always", f"RestartSec={self.backoff_initial:g}",
                  "", "[Install]", "WantedBy=multi-user.target", ""]
        return "\n".join(lines)


    def _sandbox(self) -> list[str]:
        # Every service: no privilege gained by exec, a read-only system but
        # for its own paths, its own /tmp, no home directories.
        lines = ["NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "ProtectHome=yes",
                 "LimitNOFILE=65536"]
        if self.writable:
            # "-": a path the service makes itself later is no reason not to start.
            lines.append("ReadWritePaths=" + " ".join("-" + _systemd_quote(p) for p in self.writable))
        ident = self.identity
        if ident is not None:
            caps = " ".join(ident.capabilities)
            lines += [f"User={ident.user}", f"Group={ident.group}",
                      f"CapabilityBoundingSet={caps}", f"AmbientCapabilities={caps}",
                      # The usual system calls of a service; no mount, module, reboot, swap, ptrace...
                      "SystemCallFilter=@system-service", "SystemCallFilter=bpf",
                      "SystemCallErrorNumber=EPERM", "SystemCallArchitectures=native",
                      "ProtectKernelModules=yes", "ProtectKernelLogs=yes", "ProtectControlGroups=yes",
                      "ProtectClock=yes", "RestrictSUIDSGID=yes", "LockPersonality=yes",
                      "RestrictRealtime=yes", "RestrictNamespaces=yes"]
        return lines


def _systemd_quote(arg: str) -> str:
    if arg and all(c.isalnum() or c in "-_./:=,@+%" for c in arg):
        return arg.replace("%", "%%")
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


@dataclass
class ServiceState:
    name: str
    state: str = STOPPED
    pid: int | None = None
    monitor_pid: int | None = None
    restarts: int = 0
    last_error: str = ""
    last_exit: int | None = None
    spec_digest: str = ""
    since: float = field(default_factory=time.time)

    @classmethod
    def from_json(cls, data: dict) -> "ServiceState":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class SupervisorError(RuntimeError):
    pass


class ServiceNotReady(RuntimeError):
    """A service started but does not answer: names it, why, and its last log line."""

    def __init__(self, name: str, why: str, log_line: str = ""):
        self.name, self.why, self.log_line = name, why, log_line
        super().__init__(f"service {name} is not ready: {why}"
                         + (f"; its log: {log_line}" if log_line else "; its log is empty"))


def last_log_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][-300:] if lines else ""


class Supervisor:
    """Client for the services under one state directory."""
    kind = "supervisor"  # the watchdog restarts services through the same runner

    def __init__(self, state_dir: str | Path, processes: Processes | None = None,
                 prober: Callable[[Probe], ProbeResult] = check):
        self.dir = Path(state_dir)
        self.processes = processes or LinuxProcesses()
        self.prober = prober

    # -- files
    def _spec_path(self, name: str) -> Path:
        return self.dir / f"{name}.spec.json"

    def _state_path(self, name: str) -> Path:
        return self.dir / f"{name}.state.json"

    def log_path(self, name: str) -> Path:
        return self.dir / f"{name}.stderr"

    def notify_path(self, name: str) -> Path:
        return self.dir / f"{name}.notify"

    def names(self) -> list[str]:
        if not self.dir.exists():
            return []
        return sorted(p.name[: -len(".spec.json")] for p in self.dir.glob("*.spec.json"))

    def spec(self, name: str) -> ServiceSpec | None:
        try:
            return ServiceSpec.from_json(json.loads(self._spec_path(name).read_text()))
        except FileNotFoundError:
            return None

    def status(self, name: str) -> ServiceState:
        try:
            st = ServiceState.from_json(json.loads(self._state_path(name).read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            return ServiceState(name=name)
        if st.state in (RUNNING, BACKOFF, STARTING) and not self._is_monitor(st.monitor_pid):
            # The monitor was killed without a chance to say so.
            st.state = FAILED
            st.last_error = (st.last_error + "\n" if st.last_error else "") + "monitor process is gone"
            st.pid = None
        return st

    # -- control
    def start(self, spec: ServiceSpec, timeout: float | None = None) -> str:
        """Start `spec`; returns "unchanged", "started" or "restarted" once it answers.

        Raises ServiceNotReady when it does not within `timeout` (default the spec's).
        """
        current = self.status(spec.name)
        alive = current.state in (RUNNING, BACKOFF, STARTING)
        if alive and current.spec_digest == spec.digest:
            return "unchanged"
        if alive:
            self.stop(spec.name)
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(self._spec_path(spec.name), json.dumps(spec.to_json(), indent=1))
        _write_atomic(self._state_path(spec.name),
                      json.dumps(asdict(ServiceState(spec.name, STARTING, spec_digest=spec.digest))))
        # The monitor is nobody's child here (no zombie) and outlives this process.
        self.processes.spawn_detached(None, [sys.executable, "-m", "appliance.services.supervisor",
                                             str(self.dir), "_monitor", spec.name],
                                      cwd=str(Path(__file__).resolve().parents[2]))
        deadline = time.monotonic() + (spec.ready_timeout if timeout is None else timeout)
        while time.monotonic() < deadline:
            st = self.status(spec.name)
            if st.state != STARTING and st.monitor_pid:
                break
            time.sleep(0.05)
        why = self.wait_ready(spec, deadline)
        if why:
            raise ServiceNotReady(spec.name, why, self.last_log_line(spec.name))
        return "restarted" if alive else "started"

    def wait_ready(self, spec: ServiceSpec, deadline: float) -> str | None:
        """Wait until the sockets in `spec.ready` listen and the probe passes; why not, at the deadline."""
        return wait_ready(spec, deadline, self.status, self.processes, self.prober)

    def last_log_line(self, name: str) -> str:
        return last_log_line(_tail(self.log_path(name))) or last_log_line(self.status(name).last_error)

    def log_tail(self, name: str, size: int = 65536) -> str:
        """The end of the service's output (what it logged last)."""
        return _tail(self.log_path(name), size)

    def kill(self, name: str, grace: float = 1.0) -> bool:
        """End the service hard, for its monitor to start it again; False if it was not running.

        A stopped (SIGSTOP) or hung process gets SIGCONT and SIGTERM, so one
        that can still write its state does, then SIGKILL after `grace`: the
        whole process group, its workers too.
        """
        st = self.status(name)
        if not self._is_monitor(st.monitor_pid):
            return self._restart_orphan(name)
        pid = st.pid
        if not pid or not self.processes.alive(pid):
            return False
        self._end_group(pid, grace)
        return True

    def _end_group(self, pid: int, grace: float) -> None:
        for sig in (signal.SIGCONT, signal.SIGTERM):
            self.processes.signal(pid, sig, group=True)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.processes.alive(pid):
            time.sleep(0.02)
        if self.processes.alive(pid):
            self.processes.signal(pid, signal.SIGKILL, group=True)

    def _restart_orphan(self, name: str) -> bool:
        """The monitor is gone (killed with no chance to say so), so nobody would start the
        service again when it dies: end what is left of it and start it anew from its spec."""
        spec = self.spec(name)
        if spec is None:
            return False
        try:
            left = ServiceState.from_json(json.loads(self._state_path(name).read_text())).pid
        except (FileNotFoundError, json.JSONDecodeError):
            left = None
        # Only a process still running the service's own command (pids are recycled).
        tail = tuple(spec.argv[-3:])
        if left and self.processes.alive(left) and self.processes.cmdline(left)[-len(tail):] == tail:
            self._end_group(left, 1.0)
        self.start(spec)
        return True

    def _is_monitor(self, pid: int | None) -> bool:
        # Also guards against a recycled pid: the process must be our monitor.
        return bool(pid) and self.processes.alive(pid) \
            and "appliance.services.supervisor" in self.processes.cmdline(pid)

    def stop(self, name: str, timeout: float = 10.0) -> bool:
        """Stop a service (its monitor stops it); False if it was not running."""
        st = self.status(name)
        if not self._is_monitor(st.monitor_pid):
            if st.pid and self.processes.alive(st.pid):
                self.processes.stop(st.pid, timeout)
            return False
        self.processes.signal(st.monitor_pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._is_monitor(st.monitor_pid):
            time.sleep(0.05)
        if self._is_monitor(st.monitor_pid):
            self.processes.signal(st.monitor_pid, signal.SIGKILL)
            if st.pid and self.processes.alive(st.pid):
                self.processes.stop(st.pid, 1.0)
        return True

    def remove(self, name: str) -> None:
        self.stop(name)
        for p in (self._spec_path(name), self._state_path(name), self.log_path(name)):
            p.unlink(missing_ok=True)


# ---------------------------------------------------------------- the monitor

# A service that dies this often while starting will not answer in time: named at once rather
# than at the timeout. Not once: a port its predecessor held a moment ago frees within the
# monitor's first back-offs (0.5, 1, 2 s).
DEATHS_NOT_READY = 3


def wait_ready(spec: ServiceSpec, deadline: float, status, processes: Processes,
               prober: Callable[[Probe], ProbeResult] = check) -> str | None:
    """Wait until every socket in `spec.ready` ("tcp/53") listens in the service's
    namespace and its probe passes: None then, else why not at the deadline (or as
    soon as `status(name)` says the service failed)."""
    def listening(what: str) -> bool:
        proto, _, port = what.partition("/")
        return processes.listening(spec.netns, proto, int(port))

    def ours(st) -> bool:
        # A monitor of the spec this replaces may write its last state after ours began (a
        # rollback stops a failing one): its count says nothing of this one (systemd: no digest).
        return st.spec_digest in ("", spec.digest)

    first = status(spec.name)
    restarts = first.restarts if ours(first) else 0
    pending = list(spec.ready)
    while pending and time.monotonic() < deadline:
        pending = [r for r in pending if not listening(r)]
        if pending:
            st = status(spec.name)
            if st.state == FAILED:
                return f"it failed before {', '.join(pending)} listened"
            # A service that dies before it listens will not answer in time either: a slow
            # one gets the whole timeout, a failing one is named at once.
            if ours(st) and st.restarts >= restarts + DEATHS_NOT_READY:
                return f"it exited {st.restarts - restarts} times before {', '.join(pending)} listened"
            time.sleep(0.05)
    if pending:
        return f"{', '.join(pending)} not listening after {spec.ready_timeout:g}s"
    if spec.probe is None:
        return None
    while True:
        res = prober(spec.probe)
        if res.ok or res.aside:
            return None
        if time.monotonic() >= deadline:
            return f"{spec.probe.describe()}: {res.detail}"
        st = status(spec.name)
        if st.state == FAILED:
            return f"it failed ({spec.probe.describe()}: {res.detail})"
        if ours(st) and st.restarts >= restarts + DEATHS_NOT_READY:
            return f"it exited {st.restarts - restarts} times before it answered ({spec.probe.describe()}: {res.detail})"
        time.sleep(0.1)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _tail(path: Path, size: int = STDERR_TAIL) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


class _Monitor:
    def __init__(self, sup: Supervisor, spec: ServiceSpec):
        self.sup = sup
        self.processes = sup.processes
        self.spec = spec
        self.state = ServiceState(spec.name, STARTING, monitor_pid=os.getpid(), spec_digest=spec.digest)
        self.pid: int | None = None
        self.stopping = False
        self.notify: socket.socket | None = None
        self.hung = ""

    def save(self, **changes) -> None:
        for k, v in changes.items():
            setattr(self.state, k, v)
        self.state.since = time.time()
        _write_atomic(self.sup._state_path(self.spec.name), json.dumps(asdict(self.state)))

    def spawn(self) -> None:
        # In a namespace the service runs as under `ip netns exec`, which also
        # binds /etc/netns/NS over /etc, as systemd's NetworkNamespacePath= does
        # not; the box does not rely on that.
        log = self.sup.log_path(self.spec.name)
        if log.exists() and log.stat().st_size > 1 << 20:
            log.write_bytes(log.read_bytes()[-(64 << 10):])
        env = dict(self.spec.env)
        if self.notify is not None:
            env["NOTIFY_SOCKET"] = str(self.sup.notify_path(self.spec.name))
        argv = self.spec.argv
        if self.spec.identity is not None and os.geteuid() == 0:
            argv = self.spec.identity.setpriv(argv)  # as systemd's User= and AmbientCapabilities=
        self.pid = self.processes.spawn(self.spec.netns, argv, log=str(log),
                                        env=env, cwd=self.spec.cwd)

    def open_notify(self) -> None:
        if not self.spec.watchdog_sec:
            return
        path = self.sup.notify_path(self.spec.name)
        path.unlink(missing_ok=True)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(path))
        self.notify.setblocking(False)

    def wait(self) -> int | None:
        """The service's exit status; with `watchdog_sec`, SIGKILL it when it stops saying WATCHDOG=1."""
        if self.notify is None:
            return self.processes.wait(self.pid)
        last = time.monotonic()
        while True:
            code = self.processes.wait(self.pid, timeout=0.2)
            if code is not None:
                return code
            while True:
                try:
                    message = self.notify.recv(4096)
                except BlockingIOError:
                    break
                if b"WATCHDOG=1" in message or b"READY=1" in message:
                    last = time.monotonic()
            if time.monotonic() - last > self.spec.watchdog_sec and not self.stopping:
                self.hung = f"no WATCHDOG=1 for {self.spec.watchdog_sec:g}s: killed"
                self.processes.signal(self.pid, signal.SIGCONT, group=True)
                self.processes.signal(self.pid, signal.SIGKILL, group=True)
                return self.processes.wait(self.pid)

    def on_term(self, *_):
        self.stopping = True
        if self.pid and self.processes.alive(self.pid):
            self.processes.signal(self.pid, signal.SIGTERM)

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.on_term)
        signal.signal(signal.SIGINT, self.on_term)
        delay = self.spec.backoff_initial
        fast_failures = 0
        self.open_notify()
        while not self.stopping:
            started = time.monotonic()
            try:
                self.spawn()
            except KernelError as e:
                self.save(state=FAILED, pid=None, last_error=f"cannot start: {e}")
                return
            self.save(state=RUNNING, pid=self.pid)
            code = self.wait()
            if self.stopping:
                break
            ran = time.monotonic() - started
            fast_failures = fast_failures + 1 if ran < self.spec.stable_after else 0
            if ran >= self.spec.stable_after:
                delay = self.spec.backoff_initial
            error = f"exited with {_describe(code)}\n{_tail(self.sup.log_path(self.spec.name))}".strip()
            if self.hung:
                error, self.hung = f"{self.hung}\n{error}", ""
            if fast_failures >= self.spec.max_fast_failures:
                self.save(state=FAILED, pid=None, last_exit=code, last_error=error)
                return
            self.save(state=BACKOFF, pid=None, last_exit=code, last_error=error,
                      restarts=self.state.restarts + 1)
            deadline = time.monotonic() + delay
            while not self.stopping and time.monotonic() < deadline:
                time.sleep(0.05)
            delay = min(delay * 2, self.spec.backoff_max)
        if self.pid and self.processes.alive(self.pid):
            self.processes.stop(self.pid, timeout=5)
        self.save(state=STOPPED, pid=None, monitor_pid=None)
        if self.notify is not None:
            self.notify.close()
            self.sup.notify_path(self.spec.name).unlink(missing_ok=True)


def _describe(code: int | None) -> str:
    if code is None:
        return "unknown status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print("usage: python -m appliance.services.supervisor STATE_DIR status|stop|unit [NAME]",
              file=sys.stderr)
        return 2
    state_dir, command, *rest = args
    sup = Supervisor(state_dir)
    if command == "_monitor":
        # Started detached by Supervisor.start: a session of its own, no terminal.
        spec = sup.spec(rest[0])
        if spec is not None:
            _Monitor(sup, spec).run()
        return 0
    if command == "status":
        for name in rest or sup.names():
            st = sup.status(name)
            print(f"{name}: {st.state} pid={st.pid} restarts={st.restarts}")
            if st.last_error and st.state != RUNNING:
                print("  " + st.last_error.replace("\n", "\n  "))
        return 0
    if command == "stop":
        for name in rest:
            sup.stop(name)
        return 0
    if command == "unit":
        spec = sup.spec(rest[0])
        print(spec.systemd_unit() if spec else f"no service {rest[0]}")
        return 0
    print(f"unknown command {command!r}; try status, stop, unit", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

