"""Programs, signals and listening sockets on Linux: the process half of the kernel boundary.

`LinuxProcesses` runs programs (in a network namespace through `ip netns
exec`, which also binds /etc/netns/NS/* over /etc: that is how lab clients
get their own resolv.conf), signals and stops them by PID, and asks `ss`
what listens. A namespace or a program that is not there is a KernelError
at once, never a process that dies on its own a moment later.

No pyroute2 here: the supervisor's monitor processes import only this.
"""
from __future__ import annotations

import os
import shutil
import signal as signals
import subprocess
import time
from typing import Sequence

from appliance.kernel.base import Completed, KernelError

NETNS_DIR = "/run/netns"


def netns_exists(ns: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, ns))


def require_netns(ns: str | None) -> None:
    """A clear error for a namespace that is not there (and nothing created: reads have no side effects)."""
    if ns is not None and not netns_exists(ns):
        raise KernelError(f"netns {ns}: no such network namespace")


def in_netns(ns: str | None, argv: Sequence[str]) -> list[str]:
    # nsenter keeps the mount namespace: cheaper than `ip netns exec` where
    # /etc/netns files do not matter (ss, sysctl, nft).
    return list(argv) if ns is None else ["nsenter", f"--net={NETNS_DIR}/{ns}", *argv]


def _where(ns: str | None) -> str:
    return ns or "(own)"


def _check(ns: str | None, argv: Sequence[str], env: dict[str, str] | None, cwd: str | None) -> list[str]:
    argv = [str(a) for a in argv]
    if not argv:
        raise KernelError("no program to run: the command is empty")
    require_netns(ns)
    prog = argv[0]
    path = (env or {}).get("PATH", os.environ.get("PATH"))
    if os.sep in prog and cwd and not os.path.isabs(prog):
        prog = os.path.join(cwd, prog)
    if shutil.which(prog, path=path) is None:
        raise KernelError(f"{argv[0]}: not installed (no such program)")
    return argv


def _netns_exec(ns: str | None, argv: list[str]) -> list[str]:
    return argv if ns is None else ["ip", "netns", "exec", ns, *argv]


def _env(env: dict[str, str] | None) -> dict[str, str] | None:
    return {**os.environ, **env} if env else None


def start_helper(argv: Sequence[str], pass_fds: Sequence[int] = ()) -> subprocess.Popen:
    """Start a helper program of this process (same namespace, same session),
    handing it the descriptors `pass_fds`; the caller owns the child (wait,
    poll, kill) and is told of its end by the descriptors it shares with it."""
    try:
        return subprocess.Popen(list(argv), pass_fds=tuple(pass_fds))
    except OSError as e:
        raise KernelError(f"start {argv[0]}: {e}") from e


def end_helper(proc: subprocess.Popen, timeout: float, kill: bool = False) -> bool:
    """Reap a helper started by `start_helper`, killed first if `kill`; one that has not
    exited within `timeout` seconds is killed. True if it exited by itself (or was killed
    as asked)."""
    if kill:
        proc.kill()
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False


class LinuxProcesses:
    def __init__(self) -> None:
        # Children started here, so `alive` and `wait` see their exit (and reap them).
        self._children: dict[int, subprocess.Popen] = {}

    def run(self, ns, argv, *, input=None, timeout=None, env=None, cwd=None) -> Completed:
        """Run a program to its end; a non-zero status is the caller's to judge."""
        argv = _check(ns, argv, env, cwd)
        try:
            res = subprocess.run(_netns_exec(ns, argv), input=input, capture_output=True, text=True,
                                 errors="replace", timeout=timeout, env=_env(env), cwd=cwd)
        except subprocess.TimeoutExpired as e:
            raise KernelError(f"{argv[0]} in {_where(ns)}: not done within {timeout}s") from e
        except OSError as e:
            raise KernelError(f"{argv[0]} in {_where(ns)}: {e}") from e
        return Completed(tuple(argv), res.returncode, res.stdout, res.stderr)

    def spawn(self, ns, argv, *, log=None, env=None, cwd=None) -> int:
        """Start a program in the background, in a session of its own; its output goes to `log`."""
        argv = _check(ns, argv, env, cwd)
        out = open(log, "ab") if log else subprocess.DEVNULL
        try:
            # `ip netns exec` execs the program itself: the pid is the program's.
            p = subprocess.Popen(_netns_exec(ns, argv), stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, env=_env(env), cwd=cwd, start_new_session=True)
        except OSError as e:
            raise KernelError(f"spawn {argv[0]} in {_where(ns)}: {e}") from e
        finally:
            if log:
                out.close()
        self._children[p.pid] = p
        if ns is not None:
            self._wait_in_netns(p, ns)
        return p.pid

    @staticmethod
    def _wait_in_netns(p: subprocess.Popen, ns: str, timeout: float = 5.0) -> None:
        # `ip netns exec` joins the namespace and execs the program a moment
        # after the fork: return only once the program runs there, so it is
        # among `netns_pids(ns)` and signals reach it, not `ip`.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and p.poll() is None:
            try:
                with open(f"/proc/{p.pid}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                return
            # Empty while an exec is under way.
            if cmdline and not cmdline.startswith(b"ip\0netns\0exec\0"):
                return
            time.sleep(0.001)

    def spawn_detached(self, ns, argv, *, log=None, env=None, cwd=None) -> None:
        """Start a program that is nobody's child here: it outlives this process and
        leaves no zombie behind (`setsid --fork`; the program is reparented to init)."""
        argv = _check(ns, argv, env, cwd)
        out = open(log, "ab") if log else subprocess.DEVNULL
        try:
            res = subprocess.run(["setsid", "--fork", *_netns_exec(ns, argv)], stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT, env=_env(env), cwd=cwd)
        except OSError as e:
            raise KernelError(f"spawn {argv[0]} in {_where(ns)}: {e}") from e
        finally:
            if log:
                out.close()
        if res.returncode != 0:
            raise KernelError(f"spawn {argv[0]} in {_where(ns)}: setsid exited with {res.returncode}")

    def wait(self, pid: int, timeout: float | None = None) -> int | None:
        """The exit status of a program spawned here (negative: the signal that ended
        it), or None while it still runs at `timeout` (0: just look)."""
        child = self._children.get(pid)
        if child is None:
            raise KernelError(f"process {pid}: not started here, so there is no exit status to wait for")
        try:
            code = child.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._children.pop(pid, None)
        return code

    def alive(self, pid: int) -> bool:
        child = self._children.get(pid)
        if child is not None:
            return child.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False

    def signal(self, pid: int, sig: int, *, group: bool = False) -> bool:
        """Send `sig` to the process (with `group`, to the process group it leads, as
        every program spawned here does: its own children too); False if it is gone."""
        try:
            if group:
                try:
                    os.killpg(pid, sig)
                    return True
                except ProcessLookupError:
                    pass  # it leads no group: the process alone
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        except PermissionError as e:
            raise KernelError(f"process {pid}: {e}") from e
        return True

    def stop(self, pid: int, timeout: float = 3.0, *, group: bool = False) -> None:
        """SIGTERM, then SIGKILL after `timeout`; returns once the process is gone."""
        for sig in (signals.SIGTERM, signals.SIGKILL):
            if not self.signal(pid, sig, group=group):
                break
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.alive(pid):
                time.sleep(0.02)
            if not self.alive(pid):
                break
        child = self._children.pop(pid, None)
        if child is not None:
            child.wait(timeout)

    def cmdline(self, pid: int) -> tuple[str, ...]:
        """The process's argv; () when it is gone (or a zombie)."""
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            return ()
        return tuple(a.decode(errors="replace") for a in raw.split(b"\0")[:-1])

    def netns_pids(self, ns: str) -> list[int]:
        """The processes inside a namespace; none in a namespace that does not exist."""
        if not netns_exists(ns):
            return []
        res = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        return [int(p) for p in res.stdout.split()] if res.returncode == 0 else []

    def listening(self, ns: str | None, proto: str, port: int) -> bool:
        return listening(ns, proto, port)


def listening(ns: str | None, proto: str, port: int) -> bool:
    """Whether a socket listens on `proto` ("tcp"/"udp") `port` in namespace `ns`."""
    if proto not in ("tcp", "udp"):
        raise KernelError(f"listening: protocol {proto!r}: use tcp or udp")
    require_netns(ns)
    flag = "-Hlun" if proto == "udp" else "-Hltn"
    res = subprocess.run(in_netns(ns, ["ss", flag, f"sport = :{port}"]), capture_output=True, text=True)
    if res.returncode != 0:
        raise KernelError(f"ss in {_where(ns)}: {res.stderr.strip() or res.returncode}")
    return bool(res.stdout.strip())


def default_signals_in_netns_helpers() -> None:
    """For a process that installs its own SIGTERM handler (the Celery worker).

    pyroute2 forks a helper for each netns operation and ends it with SIGTERM.
    The helper is a copy of the process: with Celery's handler it logged "Warm
    shutdown" and unwound the copied task (finally blocks included, such as
    releasing the apply lock) before it died, and the apply waited for it.
    With the default handler it just dies.
    """
    import pyroute2.config

    pyroute2.config.disable_mp_signal = True
