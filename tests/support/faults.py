"""What a home's clients see while a fault hits the box: for the fault scenarios (and the soak bench).

`QueryWatch` asks the gateway for a name with `dig` from a client every
`every` seconds, each query on its own (one second to answer, one try, as a
stub resolver with `options timeout:1 attempts:1` would), and keeps when
each was sent and whether it was answered. `outage(t0)` is how long after
the fault at `t0` a client's query went unanswered: from the fault to the
sending of the first query answered after the last unanswered one.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class QueryWatch:
    client: str  # the client's namespace
    name: str
    server: str = "192.168.1.1"
    every: float = 0.1
    results: list[tuple[float, bool]] = field(default_factory=list)  # (sent at, answered), monotonic

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._loop = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "QueryWatch":
        self._loop.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._loop.join()
        for t in self._threads:
            t.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            t = threading.Thread(target=self._ask, daemon=True)
            t.start()
            self._threads.append(t)
            self._stop.wait(self.every)

    def _ask(self) -> None:
        sent = time.monotonic()
        res = subprocess.run(["ip", "netns", "exec", self.client, "dig", "+time=1", "+tries=1", "+short",
                              f"@{self.server}", self.name], capture_output=True, text=True)
        ok = res.returncode == 0 and bool(res.stdout.strip()) and "timed out" not in res.stdout
        with self._lock:
            self.results.append((sent, ok))

    def answered_since(self, t0: float) -> bool:
        with self._lock:
            return any(ok for sent, ok in self.results if sent > t0)

    def wait_answered_since(self, t0: float, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.answered_since(t0) and self.outage(t0) is not None:
                return True
            time.sleep(0.1)
        return False

    def outage(self, t0: float) -> float | None:
        """Seconds after `t0` that queries went unanswered (0: none); None: never answered again."""
        with self._lock:
            after = sorted(r for r in self.results if r[0] >= t0)
        failed = [sent for sent, ok in after if not ok]
        if not failed:
            return 0.0
        last_failed = failed[-1]
        recovered = [sent for sent, ok in after if ok and sent > last_failed]
        return recovered[0] - t0 if recovered else None


def poll(what, timeout: float, every: float = 0.2):
    """`what()` until it returns something true, or None at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got or time.monotonic() >= deadline:
            return got or None
        time.sleep(every)


# ---------------------------------------------------------------- the box's state and its boot

ROOT = Path(__file__).resolve().parents[2]


def manage(*argv: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`./manage.py ARGV` as the box's boot or an admin runs it (its output in .stdout, its exit code)."""
    with tempfile.TemporaryDirectory(prefix="appliance-faults-") as console:  # the console's own: not /var/lib
        return subprocess.run([sys.executable, "manage.py", *argv], cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "APPLIANCE_STATE_DIR": console, **(env or {})})


def box_args(box) -> list[str]:
    """The options that name `box` on the command line."""
    return ["--netns", box.placement.host_ns, "--state-dir", box.layout.state_dir, "--run-dir", box.layout.run_dir]


def power_cut(box) -> None:
    """What a reboot leaves of the box: no links, datapath or services of its own, an empty
    run directory; the state directory (applied settings, leases, the fake-IP store) as it was."""
    box.applier.teardown(box.applied_plan())
    box.fs.remove(box.layout.boot_note)


def boot(box) -> subprocess.CompletedProcess:
    """The image's boot apply (`appliance-boot-apply` runs `./manage.py apply --boot`)."""
    return manage("apply", "--boot", *box_args(box))


@contextlib.contextmanager
def small_tmpfs(path, size: str = "64m"):
    """A tmpfs of `size` at `path` (made): a state directory that can be filled or made read-only."""
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)]).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


@contextlib.contextmanager
def filled(directory, leave: int = 1 << 20):
    """The file system of `directory` full but for `leave` bytes (one file, removed afterwards)."""
    filler = os.path.join(directory, ".filler")
    st = os.statvfs(directory)
    size = st.f_bavail * st.f_frsize - leave
    subprocess.run(["fallocate", "-l", str(size), filler], check=True)
    try:
        yield filler
    finally:
        os.unlink(filler)


@contextlib.contextmanager
def read_only(directory):
    """`directory` on a read-only mount (a read-only bind over itself: services keep the files they
    have open, as after a remount that the kernel forced on an error; whatever opens anew is refused)."""
    subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(directory)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)
