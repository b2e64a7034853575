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
the same spec while running is a no-op, a changed spec restarts. Processes
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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from appliance.kernel.base import KernelError, Processes
from appliance.kernel.process import LinuxProcesses

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
        lines += ["Restart=always", f"RestartSec={self.backoff_initial:g}",
                  "", "[Install]", "WantedBy=multi-user.target", ""]
        return "\n".join(lines)


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


class Supervisor:
    """Client for the services under one state directory."""

    def __init__(self, state_dir: str | Path, processes: Processes | None = None):
        self.dir = Path(state_dir)
        self.processes = processes or LinuxProcesses()

    # -- files
    def _spec_path(self, name: str) -> Path:
        return self.dir / f"{name}.spec.json"

    def _state_path(self, name: str) -> Path:
        return self.dir / f"{name}.state.json"

    def log_path(self, name: str) -> Path:
        return self.dir / f"{name}.stderr"

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
    def start(self, spec: ServiceSpec, timeout: float = 10.0) -> str:
        """Start `spec`; returns "unchanged", "started" or "restarted"."""
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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status(spec.name)
            if st.state != STARTING and st.monitor_pid:
                break
            time.sleep(0.05)
        self.wait_ready(spec, deadline)
        return "restarted" if alive else "started"

    def wait_ready(self, spec: ServiceSpec, deadline: float) -> bool:
        """Wait until every socket in `spec.ready` listens; False at the deadline."""
        return wait_listening(spec, deadline, self.status, self.processes)

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

def wait_listening(spec: ServiceSpec, deadline: float, status, processes: Processes) -> bool:
    """Wait until every socket in `spec.ready` ("tcp/53") listens in the service's
    namespace; False at the deadline or as soon as `status(name)` says the service failed."""
    def listening(what: str) -> bool:
        proto, _, port = what.partition("/")
        return processes.listening(spec.netns, proto, int(port))

    pending = list(spec.ready)
    while pending and time.monotonic() < deadline:
        pending = [r for r in pending if not listening(r)]
        if pending:
            if status(spec.name).state == FAILED:
                return False
            time.sleep(0.05)
    return not pending


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
        self.pid = self.processes.spawn(self.spec.netns, self.spec.argv, log=str(log),
                                        env=dict(self.spec.env), cwd=self.spec.cwd)

    def on_term(self, *_):
        self.stopping = True
        if self.pid and self.processes.alive(self.pid):
            self.processes.signal(self.pid, signal.SIGTERM)

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.on_term)
        signal.signal(signal.SIGINT, self.on_term)
        delay = self.spec.backoff_initial
        fast_failures = 0
        while not self.stopping:
            started = time.monotonic()
            try:
                self.spawn()
            except KernelError as e:
                self.save(state=FAILED, pid=None, last_error=f"cannot start: {e}")
                return
            self.save(state=RUNNING, pid=self.pid)
            code = self.processes.wait(self.pid)
            if self.stopping:
                break
            ran = time.monotonic() - started
            fast_failures = fast_failures + 1 if ran < self.spec.stable_after else 0
            if ran >= self.spec.stable_after:
                delay = self.spec.backoff_initial
            error = f"exited with {_describe(code)}\n{_tail(self.sup.log_path(self.spec.name))}".strip()
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

