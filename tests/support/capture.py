"""Frames as a namespace's link sees them, with their MACs: `tcpdump -e` for the tests' eyes.

`Capture(ns, link, filter, direction)` starts tcpdump, returns once it
listens, and keeps every line it prints; `macs()` are the source MACs seen.
Stopped (and the process reaped) on leaving the `with` block.
"""
from __future__ import annotations

import subprocess
import threading
import time


class Capture:
    def __init__(self, ns: str, link: str, bpf_filter: str = "", direction: str | None = None):
        self.argv = ["ip", "netns", "exec", ns, "tcpdump", "-i", link, "-e", "-n", "-l", "-U",
                     *(["-Q", direction] if direction else []), *bpf_filter.split()]
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def __enter__(self) -> "Capture":
        self._proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        listening = threading.Event()

        def err():
            for line in self._proc.stderr:
                if "listening on" in line:
                    listening.set()

        def out():
            for line in self._proc.stdout:
                if line.strip():
                    with self._lock:
                        self.lines.append(line.rstrip("\n"))

        self._threads = [threading.Thread(target=f, daemon=True) for f in (err, out)]
        for t in self._threads:
            t.start()
        if not listening.wait(10):
            self.__exit__()
            raise RuntimeError(f"tcpdump never listened: {' '.join(self.argv)}")
        return self

    def __exit__(self, *exc) -> None:
        # tcpdump writes each packet (-U) and exits on SIGTERM; the reader takes the pipe to its end.
        self._proc.terminate()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for t in self._threads:
            t.join(5)

    def seen(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def macs(self) -> set[str]:
        """Source MACs of the frames seen (`tcpdump -e`: time, source MAC, '>', ...)."""
        return {line.split()[1].lower() for line in self.seen() if len(line.split()) > 2}

    def wait_for(self, text: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hit = next((line for line in self.seen() if text in line), None)
            if hit:
                return hit
            time.sleep(0.1)
        return None
