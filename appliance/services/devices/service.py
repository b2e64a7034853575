"""The devices service: every second, the datapath's per-device counters and the home's schedules.

One process per box, a service of the plan (`devices`), run where the apply
runs (the pinned maps are in the machine's BPF filesystem, which `ip netns
exec` hides), as root with CAP_BPF alone, writing only its own state, the
events file and its time series:

```
 dp_macs (pinned) --counters--> Tracker --"new", "over-budget"--> STATE/health/events.jsonl --> notify
                                   |------deltas----------------> STATE/series/devices.sqlite (charts)
                                   '------known, baseline, usage-> STATE/devices/state.json
 STATE/devices/policy.json (console) --schedules + now--> scheduled set -> STATE/devices/scheduled.json
 STATE/datapath/paused.json (console: "paused until I resume") --+--> dp_paused (the union), at once
```

A schedule's minute is met within the tick that starts it: the loop wakes at
each minute's start as well as every second. The wall clock it decides by is
the machine's, plus the offset in the file `APPLIANCE_CLOCK_OFFSET_FILE`
names (tests move the schedules' clock with it; no unit sets it).

    python -m appliance.services.devices --config RUN/devices.json
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime

from appliance import durable
from appliance.kernel.clock import boot_id
from appliance.services.devices.macfile import read_macs
from appliance.services.devices.policy import Policy, PolicyError, scheduled_off
from appliance.services.devices.tracker import LEARN_SECONDS, Tracker
from appliance.services.health import record

log = logging.getLogger("appliance.devices")
SERVICE = "devices"
TICK = 1.0
SAVE_EVERY = 10.0        # s: the baseline and usage to disk (at once after a new device or an alert)
PRUNE_EVERY = 3600.0     # s: the time series cut to what the charts show
CLOCK_OFFSET_ENV = "APPLIANCE_CLOCK_OFFSET_FILE"


@dataclass(frozen=True)
class DevicesConfig:
    pin_dir: str          # the bridge's pinned maps (dp_macs, dp_paused)
    paused: str           # the console's paused devices (`DatapathLoader.paused_file`)
    policy: str
    state: str
    scheduled: str
    events: str
    series: str
    learn_seconds: float = LEARN_SECONDS

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "DevicesConfig":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class Clock:
    """The wall clock schedules and budgets go by: the machine's, plus an offset from a file if named."""

    def __init__(self, offset_file: str | None = None):
        self.offset_file = offset_file if offset_file is not None else os.environ.get(CLOCK_OFFSET_ENV)

    def wall(self) -> float:
        offset = 0.0
        if self.offset_file:
            try:
                with open(self.offset_file) as f:
                    offset = float(f.read().strip() or 0)
            except (OSError, ValueError):
                pass
        return time.time() + offset


class DeviceMaps:
    """The datapath's dp_macs and dp_paused by their pins; None from a reader when no datapath is loaded."""

    def __init__(self, pin_dir: str, bpf=None):
        if bpf is None:
            from appliance.kernel.libbpf import LinuxBpf

            bpf = LinuxBpf()
        self.bpf, self.pin_dir = bpf, pin_dir

    def _open(self, name: str):
        from appliance.switch.datapath.datapath import open_map

        path = os.path.join(self.pin_dir, name)
        if not self.bpf.is_pinned(path):
            return None
        return open_map(self.bpf, self.bpf.open_pinned(path), name, owned=True)

    def counters(self):
        from appliance.switch.datapath.datapath import read_mac_stats

        m = self._open("dp_macs")
        if m is None:
            return None
        try:
            return read_mac_stats(m)
        finally:
            m.close()

    def paused(self) -> set[str] | None:
        from appliance.switch.datapath.datapath import read_paused

        m = self._open("dp_paused")
        if m is None:
            return None
        try:
            return read_paused(m)
        finally:
            m.close()

    def set_paused(self, macs) -> bool:
        from appliance.switch.datapath.datapath import write_paused

        m = self._open("dp_paused")
        if m is None:
            return False
        try:
            write_paused(m, macs)
            return True
        finally:
            m.close()


def read_policy(path: str) -> Policy:
    """The console's policy file; raises PolicyError for one that does not read as a policy."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return Policy()
    except ValueError as e:
        raise PolicyError("policy", f"not JSON: {e}") from None
    return Policy.from_json(data)


def read_tracker(path: str, learn_seconds: float) -> Tracker:
    try:
        with open(path) as f:
            return Tracker.from_json(json.load(f))
    except FileNotFoundError:
        return Tracker(learn_left=learn_seconds)     # the first run on this box: learn what is there
    except (ValueError, TypeError, AttributeError) as e:
        # A state that cannot be read is not a reason to alert for every device again.
        log.warning("state %s unreadable (%s): learning the devices again", path, e)
        return Tracker(learn_left=learn_seconds)


class DevicesService:
    def __init__(self, config: DevicesConfig, maps=None, clock: Clock | None = None, series=None,
                 monotonic=time.monotonic, vendor=None):
        self.config = config
        self.maps = maps if maps is not None else DeviceMaps(config.pin_dir)
        self.clock = clock or Clock()
        self.monotonic = monotonic
        self.tracker = read_tracker(config.state, config.learn_seconds)
        self._series = series
        self._vendor = vendor
        self._policy, self._policy_stamp = Policy(), None
        self.scheduled: set[str] | None = None
        start = monotonic()
        self._last_tick = self._last_save = start
        self._last_prune = start - PRUNE_EVERY

    # -- inputs --------------------------------------------------------------------
    def policy(self) -> Policy:
        """The console's policy, read again when the file changed; the last good one when it is broken."""
        try:
            st = os.stat(self.config.policy)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp != self._policy_stamp:
            self._policy_stamp = stamp
            try:
                self._policy = read_policy(self.config.policy)
            except PolicyError as e:
                log.warning("policy %s refused (%s): keeping the last one", self.config.policy, e)
        return self._policy

    def vendor(self, mac: str) -> str:
        if self._vendor is None:
            from appliance.web.devices import oui   # the IEEE registry's reader (pure; no Django)

            self._vendor = oui.vendor
        try:
            return self._vendor(mac)
        except (OSError, ValueError):
            return ""

    def series(self):
        if self._series is None:
            from appliance.services.timeseries import Series

            self._series = Series(self.config.series)
        return self._series

    # -- one tick ------------------------------------------------------------------
    def tick(self) -> None:
        mono = self.monotonic()
        elapsed, self._last_tick = mono - self._last_tick, mono
        wall = self.clock.wall()
        now = datetime.fromtimestamp(wall)
        policy = self.policy()
        self.enforce(policy, now)
        counters = self.maps.counters()
        if counters is not None:
            res = self.tracker.tick(counters, policy, now, wall, elapsed, boot_id(), self.vendor)
            for found in res.events:
                self.event(found.what, found.detail)
            if res.series:
                self._add_series(res.series)
            if res.changed or mono - self._last_save >= SAVE_EVERY:
                self.save()
        if mono - self._last_prune >= PRUNE_EVERY:
            self._last_prune = mono
            try:
                self.series().prune()
            except Exception as e:  # noqa: BLE001 - sqlite3.Error, OSError: the charts, never the schedules
                log.warning("time series not pruned: %s", e)

    def enforce(self, policy: Policy, now: datetime) -> None:
        """dp_paused = the devices paused until resumed + those a schedule has off now."""
        scheduled = scheduled_off(policy, now)
        if scheduled != self.scheduled:
            for mac in sorted(scheduled - (self.scheduled or set())):
                log.info("%s: off by its schedule", mac)
            for mac in sorted((self.scheduled or set()) - scheduled):
                log.info("%s: its schedule ended", mac)
            try:
                durable.write_atomic(self.config.scheduled, json.dumps({"macs": sorted(scheduled)}) + "\n")
                self.scheduled = scheduled
            except OSError as e:
                log.warning("scheduled devices not kept: %s", e)   # enforced all the same; kept next tick
        want = read_macs(self.config.paused) | scheduled
        have = self.maps.paused()
        if have is not None and have != want:
            self.maps.set_paused(want)

    def _add_series(self, values: dict[str, float]) -> None:
        try:
            self.series().add(values)
        except Exception as e:  # noqa: BLE001 - sqlite3.Error, OSError: a chart's gap, not a stop
            log.warning("time series not written: %s", e)

    def event(self, what: str, detail: str) -> None:
        log.info("%s: %s", what, detail)
        try:
            record.append_event(self.config.events, record.Event(SERVICE, what, detail))
        except OSError as e:
            log.warning("event not recorded: %s", e)

    def save(self) -> None:
        try:
            durable.write_atomic(self.config.state, json.dumps(self.tracker.to_json()) + "\n")
            self._last_save = self.monotonic()
        except OSError as e:
            log.warning("state not saved: %s", e)

    # -- the loop ------------------------------------------------------------------
    def run(self, stop: threading.Event, notify=lambda message: None) -> None:
        first = True
        while not stop.is_set():
            started = self.monotonic()
            try:
                self.tick()
            except Exception as e:  # noqa: BLE001 - one bad read must not end the schedules
                log.warning("%s: %s", type(e).__name__, e)
            notify("READY=1\nWATCHDOG=1" if first else "WATCHDOG=1")
            first = False
            # Every second, and at the start of each minute (a schedule's minute is met at once).
            to_minute = 60.0 - self.clock.wall() % 60.0 + 0.01
            stop.wait(max(0.0, min(TICK - (self.monotonic() - started), to_minute)))
        self.save()
