"""What the devices service remembers between ticks, and what one tick of counters means (pure).

Each tick reads the datapath's per-MAC counters (`dp_macs`) and turns them
into:

- a "new" event the first time a MAC is seen on the home side. A box where
  the service runs for the first time learns the home's devices silently
  for `learn_seconds` of its running time (the existing devices show up as
  they send their first frames, a sleeping phone after minutes), so a new
  box does not alert for every device it already serves;
- deltas per device and for all of them (bytes each way), for the charts.
  The datapath's counters start again at zero when it is unloaded, the box
  restarts, a device is forgotten or dropped from the LRU map: a counter
  lower than the last one read is a restart, and its whole value is new;
- usage per device in the current day and month, and an "over-budget"
  event once per period when a device's budget is crossed.

The state (`to_json`) is saved by the service durably; counters and usage
are saved together, so a service restarted from it counts on exactly from
the saved baseline (the charts may count the last seconds before a crash
twice; budgets do not).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping, Protocol

from appliance.services.devices.policy import Policy, period_key

LEARN_SECONDS = 3600.0
FIELDS = ("rx_bytes", "rx_packets", "tx_bytes", "tx_packets")


class Counters(Protocol):
    rx_bytes: int
    rx_packets: int
    tx_bytes: int
    tx_packets: int


@dataclass(frozen=True)
class Found:
    """Something to record in the box's events: `what` is "new" or "over-budget"."""

    what: str
    mac: str
    detail: str = ""


@dataclass
class TickResult:
    events: list[Found] = field(default_factory=list)
    series: dict[str, float] = field(default_factory=dict)   # series name -> amount in this tick
    changed: bool = False    # something worth saving at once (a device learned, an alert given)


@dataclass
class Tracker:
    known: dict[str, float] = field(default_factory=dict)        # MAC -> when first seen (wall clock)
    learn_left: float = LEARN_SECONDS                             # seconds of running time
    boot: str = ""                                                # the boot the baseline was read in
    last: dict[str, list[int]] = field(default_factory=dict)      # MAC -> FIELDS as last read
    usage: dict[str, dict] = field(default_factory=dict)          # MAC -> {"day": [key, n], "month": [...], "alerted": key}
    seeded: bool = False                                          # the first tick has been taken

    def tick(self, counters: Mapping[str, Counters], policy: Policy, now: datetime, wall: float,
             elapsed: float, boot: str, vendor=lambda mac: "") -> TickResult:
        """One reading of the counters at `now` (local time; `wall`: epoch seconds), `elapsed`
        seconds of running time after the previous tick, in boot `boot`."""
        out = TickResult()
        learning = self.learn_left > 0
        self.learn_left = max(0.0, self.learn_left - elapsed)
        if boot != self.boot:
            self.last = {}        # the datapath of another boot: every counter is new
            self.boot = boot
        first = not self.seeded
        self.seeded = True
        for mac in counters:
            if mac not in self.known:
                self.known[mac] = wall
                out.changed = True
                if not learning:
                    who = vendor(mac)
                    out.events.append(Found("new", mac, f"{mac} ({who})" if who else mac))
        totals = {"rx_bytes": 0.0, "tx_bytes": 0.0}
        for mac, st in counters.items():
            now_values = [int(getattr(st, f)) for f in FIELDS]
            before = self.last.get(mac)
            self.last[mac] = now_values
            if first and before is None:
                continue   # a state of no baseline at all: count from here, not the datapath's whole past
            if before is None:
                before = [0] * len(FIELDS)
            delta = [v if v < b else v - b for v, b in zip(now_values, before)]
            d = dict(zip(FIELDS, delta))
            for f in ("rx_bytes", "tx_bytes"):
                if d[f]:
                    out.series[f"dev.{mac}.{f}"] = d[f]
                    totals[f] += d[f]
            used = d["rx_bytes"] + d["tx_bytes"]
            if self._count(mac, used, policy, now, out):
                out.changed = True
        for mac in list(self.last):
            if mac not in counters:
                del self.last[mac]   # gone from the map: when it comes back, its counters start at zero
        for f, v in totals.items():
            if v:
                out.series[f"dev.all.{f}"] = v
        return out

    def _count(self, mac: str, used: int, policy: Policy, now: datetime, out: TickResult) -> bool:
        u = self.usage.setdefault(mac, {})
        for period in ("day", "month"):
            key = period_key(period, now)
            was = u.get(period)
            u[period] = [key, (was[1] if was and was[0] == key else 0) + used]
        budget = policy.of(mac).budget
        if budget is None:
            return False
        key, n = u[budget.period]
        if n >= budget.bytes and u.get("alerted") != key:
            u["alerted"] = key
            out.events.append(Found("over-budget", mac, f"{mac}: {n} bytes this {budget.period}, "
                                                        f"over its budget of {budget.bytes}"))
            return True
        return False

    def used(self, mac: str, period: str, now: datetime) -> int:
        """Bytes both ways in the period holding `now` (0 when none counted yet)."""
        was = self.usage.get(mac, {}).get(period)
        return was[1] if was and was[0] == period_key(period, now) else 0

    def to_json(self) -> dict:
        return {"known": self.known, "learn_left": self.learn_left, "boot": self.boot, "last": self.last,
                "usage": self.usage}

    @classmethod
    def from_json(cls, data: dict) -> "Tracker":
        # A saved state has a baseline (possibly empty): its first tick counts from it.
        return cls(dict(data.get("known", {})), float(data.get("learn_left", 0.0)), str(data.get("boot", "")),
                   {m: list(v) for m, v in data.get("last", {}).items()}, dict(data.get("usage", {})), seeded=True)
