"""The datapath's health map (`dp_health`, pinned beside the bridge's other maps): write and read.

One entry, `fresh_until[8]` in CLOCK_MONOTONIC nanoseconds, the clock
`bpf_ktime_get_ns()` reads: the compiled datapath sets bit i of its health
register (reg15) while `now < fresh_until[i]`. The watchdog writes
`now + stale_after` for a healthy service after every round and 0 for one
that failed, so the datapath falls open at once when a probe fails, and by
itself `stale_after` seconds after the watchdog stops writing (killed, hung,
or all of user space gone).
"""
from __future__ import annotations

import time
from typing import Mapping

from appliance.kernel.bpf import Bpf, Map
from appliance.switch.datapath import contract as C

KEY = C.U32.pack(0)


def pin_path(pin_root: str, host_ns: str | None, bridge: str) -> str:
    """Where a box's datapath pins its health map (as `DatapathLoader` and `Datapath` lay pins out)."""
    return f"{pin_root}/{host_ns or 'host'}/{bridge}/dp_health"


class HealthMap:
    """The pinned `dp_health` map of one bridge; `bpf` is the kernel's (Linux unless given)."""

    def __init__(self, path: str, bpf: Bpf | None = None):
        if bpf is None:
            from appliance.kernel.libbpf import LinuxBpf

            bpf = LinuxBpf()
        self.path = path
        self.bpf = bpf

    def _open(self) -> Map | None:
        if not self.bpf.is_pinned(self.path):
            return None  # no datapath loaded (yet): nothing to steer, nothing to write
        return Map(self.bpf, self.bpf.open_pinned(self.path), C.U32.size, C.HEALTH.size, owned=True)

    def write(self, fresh: Mapping[int, bool], stale_after: float, now_ns: int | None = None) -> bool:
        """Bit -> healthy; False when no datapath is loaded."""
        m = self._open()
        if m is None:
            return False
        now = time.monotonic_ns() if now_ns is None else now_ns
        until = [0] * C.HEALTH_SERVICES
        for bit, ok in fresh.items():
            if 0 <= bit < C.HEALTH_SERVICES and ok:
                until[bit] = now + int(stale_after * 1e9)
        try:
            m.update(KEY, C.HEALTH.pack(*until))
        finally:
            m.close()
        return True

    def bits(self, now_ns: int | None = None) -> int | None:
        """The health register as the datapath computes it now; None without a datapath."""
        m = self._open()
        if m is None:
            return None
        try:
            raw = m.lookup(KEY)
        finally:
            m.close()
        if raw is None:
            return 0
        now = time.monotonic_ns() if now_ns is None else now_ns
        return sum(1 << i for i, until in enumerate(C.HEALTH.unpack(raw)) if now < until)
