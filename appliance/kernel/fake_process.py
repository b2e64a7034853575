"""Programs and processes in memory, with the same behaviour as LinuxProcesses, for unit tests.

The fake machine has the programs it is given (`FakeProgram`s, by name):
what each listens on while it runs, how it ends, what `run` prints. Anything
else is not installed, as on a machine without it. Processes are data; a
signal ends one unless its program catches that signal. `FakeSystemd` is a
`systemctl` that keeps unit states, for the systemd service runner.
"""
from __future__ import annotations

import itertools
import os
import signal as signals
from dataclasses import dataclass, field
from typing import Callable, Sequence

from appliance.kernel.base import Completed, KernelError

# Signals that do not end a process that has no handler for them.
_HARMLESS = {0, signals.SIGCHLD, signals.SIGCONT, signals.SIGSTOP, signals.SIGURG, signals.SIGWINCH}


@dataclass(frozen=True)
class FakeProgram:
    listens: tuple[str, ...] = ()  # "tcp/80", "udp/53": while it runs, in its namespace
    exit_code: int | None = None  # spawned: ends at once with this status (None: runs until stopped)
    catches: frozenset[int] = frozenset()  # signals it handles and lives on (SIGHUP: reload)
    stdout: str = ""  # run: what it prints (exit status: exit_code or 0)
    stderr: str = ""
    # run: computes the result from argv and stdin instead (a fake systemctl)
    handler: Callable[[tuple[str, ...], str | None], tuple[int, str, str]] | None = None


@dataclass
class FakeProcess:
    pid: int
    ns: str | None
    argv: tuple[str, ...]
    program: FakeProgram
    exit_code: int | None = None  # set once it ended
    child: bool = True  # spawned (not detached): wait() may ask its status


class FakeProcesses:
    def __init__(self, programs: dict[str, FakeProgram] | None = None, namespaces: Sequence[str] = ()):
        self.programs: dict[str, FakeProgram] = dict(programs or {})
        # Namespaces that exist; FakeKernel keeps its own and overrides _has_netns.
        self.namespaces: set[str] = set(namespaces)
        self.processes: dict[int, FakeProcess] = {}
        self.signals: list[tuple[int, int]] = []
        self.calls: list[tuple] = []
        self.fail_on: set[str] = set()
        self._pids = itertools.count(1000)

    def _record(self, op: str, *args) -> None:
        if op in self.fail_on:
            raise KernelError(f"injected failure in {op}{args}")
        self.calls.append((op, *args))

    def _has_netns(self, ns: str) -> bool:
        return ns in self.namespaces

    def _require_netns(self, ns: str | None) -> None:
        if ns is not None and not self._has_netns(ns):
            raise KernelError(f"netns {ns}: no such network namespace")

    def _program(self, ns: str | None, argv: Sequence[str]) -> tuple[tuple[str, ...], FakeProgram]:
        argv = tuple(str(a) for a in argv)
        if not argv:
            raise KernelError("no program to run: the command is empty")
        self._require_netns(ns)
        for key in (argv[0], os.path.basename(argv[0])):
            if key in self.programs:
                return argv, self.programs[key]
        raise KernelError(f"{argv[0]}: not installed (no such program)")

    def _live(self, pid: int) -> FakeProcess | None:
        p = self.processes.get(pid)
        return p if p is not None and p.exit_code is None else None

    def _end(self, p: FakeProcess, code: int) -> None:
        p.exit_code = code
        if not p.child:
            del self.processes[p.pid]  # init reaps it

    # -- the Processes interface ---------------------------------------------
    def run(self, ns, argv, *, input=None, timeout=None, env=None, cwd=None) -> Completed:
        self._record("run", ns, tuple(argv))
        argv, prog = self._program(ns, argv)
        if prog.handler is not None:
            code, out, err = prog.handler(argv, input)
        else:
            code, out, err = prog.exit_code or 0, prog.stdout, prog.stderr
        return Completed(argv, code, out, err)

    def _start(self, ns, argv, child: bool) -> FakeProcess:
        self._record("spawn", ns, tuple(argv))
        argv, prog = self._program(ns, argv)
        p = FakeProcess(next(self._pids), ns, argv, prog, child=child)
        self.processes[p.pid] = p
        if prog.exit_code is not None:
            self._end(p, prog.exit_code)
        return p

    def spawn(self, ns, argv, *, log=None, env=None, cwd=None) -> int:
        return self._start(ns, argv, child=True).pid

    def spawn_detached(self, ns, argv, *, log=None, env=None, cwd=None) -> None:
        self._start(ns, argv, child=False)

    def wait(self, pid, timeout=None):
        p = self.processes.get(pid)
        if p is None or not p.child:
            raise KernelError(f"process {pid}: not started here, so there is no exit status to wait for")
        if p.exit_code is None:
            if timeout is None:
                raise KernelError(f"process {pid} runs until it is signalled: waiting would never end")
            return None
        del self.processes[pid]
        return p.exit_code

    def alive(self, pid):
        return self._live(pid) is not None

    def signal(self, pid, sig, *, group=False):
        p = self._live(pid)
        if p is None:
            return False
        self.signals.append((pid, sig))
        if sig not in _HARMLESS and sig not in p.program.catches:
            self._end(p, -sig)
        return True

    def stop(self, pid, timeout=3.0, *, group=False):
        self._record("stop", pid)
        for sig in (signals.SIGTERM, signals.SIGKILL):
            if not self.signal(pid, sig, group=group):
                break
        p = self.processes.get(pid)
        if p is not None and p.exit_code is not None:
            del self.processes[pid]

    def cmdline(self, pid):
        p = self._live(pid)
        return p.argv if p else ()

    def netns_pids(self, ns):
        return [p.pid for p in self.processes.values() if p.ns == ns and p.exit_code is None]

    def listening(self, ns, proto, port):
        if proto not in ("tcp", "udp"):
            raise KernelError(f"listening: protocol {proto!r}: use tcp or udp")
        self._require_netns(ns)
        return any(p.ns == ns and p.exit_code is None and f"{proto}/{port}" in p.program.listens
                   for p in self.processes.values())

    # -- for FakeKernel: a deleted namespace takes its processes along ----------
    def _drop_netns_processes(self, ns: str) -> None:
        for p in list(self.processes.values()):
            if p.ns == ns and p.exit_code is None:
                self._end(p, -signals.SIGKILL)


@dataclass
class FakeSystemd:
    """`systemctl` for FakeProcesses: `FakeProgram(handler=FakeSystemd())`.

    Knows show (ActiveState, SubState, MainPID, NRestarts), restart, stop,
    daemon-reload and reset-failed; `failing` units fail when started.
    """

    active: dict[str, int] = field(default_factory=dict)  # unit -> MainPID
    failed: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)
    reloads: int = 0
    _pids: itertools.count = field(default_factory=lambda: itertools.count(4000))

    def __call__(self, argv: tuple[str, ...], input: str | None) -> tuple[int, str, str]:
        verb, *args = argv[1:] or ("",)
        unit = args[0] if args else ""
        if verb == "show":
            state = "active" if unit in self.active else "failed" if unit in self.failed else "inactive"
            return 0, (f"ActiveState={state}\nSubState={'running' if state == 'active' else 'dead'}\n"
                       f"MainPID={self.active.get(unit, 0)}\nNRestarts=0\n"), ""
        if verb == "restart":
            if unit in self.failing:
                self.active.pop(unit, None)
                self.failed.add(unit)
                return 1, "", f"Job for {unit} failed because the control process exited with error code.\n"
            self.active[unit] = next(self._pids)
            self.failed.discard(unit)
            return 0, "", ""
        if verb == "stop":
            self.active.pop(unit, None)
            return 0, "", ""
        if verb == "daemon-reload":
            self.reloads += 1
            return 0, "", ""
        if verb == "reset-failed":
            self.failed.discard(unit)
            return 0, "", ""
        return 1, "", f"Unknown command verb {verb}.\n"
