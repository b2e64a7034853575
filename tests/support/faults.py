"""What a home's clients see while a fault hits the box: for the fault scenarios (and the soak bench).

`QueryWatch` asks the gateway for a name with `dig` from a client every
`every` seconds, each query on its own (one second to answer, one try, as a
stub resolver with `options timeout:1 attempts:1` would), and keeps when
each was sent and whether it was answered. `outage(t0)` is how long after
the fault at `t0` a client's query went unanswered: from the fault to the
sending of the first query answered after the last unanswered one.
"""
from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field


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
