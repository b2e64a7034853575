"""What the console shows of the running box, as `appliance.box.status` reads it.

`LiveSources` reads the box `boxes.get_box()` gives; `APPLIANCE_SOURCES`
("module:function") replaces it, which is how the browser tests run without
a real box. The readings the dashboard polls are cached for a second in the
process (`cached`).
"""
from __future__ import annotations

import importlib
import math
import threading
import time

from django.conf import settings

from appliance.box import status
from appliance.box.status import FlowDump, Reading
from appliance.kernel.devices import Devices, LinuxDevices
from appliance.web import boxes


# Which writer's file holds a series, by its name's first part (`Layout.series_file`).
SERIES_WRITERS = {"dns": "dns", "dev": "devices"}


class LiveSources:
    def __init__(self, devices: Devices | None = None):
        self.box = boxes.get_box()
        self.devices = devices if devices is not None else LinuxDevices()

    def leases(self) -> Reading:
        return status.leases(self.box)

    def ports(self) -> Reading:
        return status.ports(self.box, self.devices)

    def dhcp_pool(self) -> Reading:
        """How full the DHCP pools are, who got no lease (`status.dhcp_pool`)."""
        return status.dhcp_pool(self.box, self.leases())

    def boot_note(self):
        """What the boot ran instead of the applied settings (`appliance.box.boot.BootNote`), or None."""
        from appliance.box import boot

        return boot.read_note(self.box)

    def services(self) -> Reading:
        return status.services(self.box)

    def health_events(self, limit: int = 200):
        """The box's own record of health transitions and restarts (`status.health_events`)."""
        return status.health_events(self.box, limit)

    def dns(self) -> Reading:
        return status.dns(self.box)

    def flush_fake_ips(self) -> Reading:
        """Forget the DNS server's unpinned fake-IP mappings: {"removed": n, "kept": pinned}."""
        return self._dns_call(lambda c: c.flush_fake_ips())

    def dns_log(self, limit: int = 100, **filters) -> Reading:
        """The query log, newest first (client, mac, domain, action, since, limit): the DNS
        server's memory first, then what is older from its log on disk, read here (a long
        search never holds up the server's answers). Without the server, the disk alone,
        with the problem."""
        from appliance.services.dns import querydisk
        from appliance.services.dns.querylog import LogEntry

        memory = self._dns_call(lambda c: (c.query_log(limit=limit, **filters), c.query_log_oldest()))
        entries, oldest = memory.value if memory.ok else ([], None)
        if len(entries) < limit:
            # What memory still holds is not read again from disk (whose times are to the ms).
            until = None if oldest is None else math.floor(oldest * 1000) / 1000
            older = querydisk.search(self.box.layout.dns_querylog_dir, until=until,
                                     limit=limit - len(entries), **filters)
            entries += [LogEntry._make(e).as_dict() for e in older]
        return Reading(entries, memory.problem)

    def series(self, name: str, step: int, since: float) -> list[tuple[int, float]]:
        """One time series' buckets from `since` (`appliance.services.timeseries`), [] when its
        writer has not written yet. `name`'s first part says whose: dns.* or dev.* (devices)."""
        store = self._series_store(name)
        if store is None:
            return []
        try:
            return store.read(name, step, since)
        finally:
            store.close()

    def series_totals(self, prefix: str, step: int, since: float) -> dict[str, float]:
        """Each series under `prefix`: its sum from `since`."""
        store = self._series_store(prefix)
        if store is None:
            return {}
        try:
            return store.totals(prefix, step, since)
        finally:
            store.close()

    def _series_store(self, name: str):
        import os
        import sqlite3

        from appliance.services.timeseries import Series

        path = self.box.layout.series_file(SERIES_WRITERS[name.split(".", 1)[0]])
        if not os.path.exists(path):
            return None
        try:
            return Series(path, readonly=True)
        except sqlite3.Error:
            return None

    def _dns_call(self, ask) -> Reading:
        """`ask(control)` on the box's DNS control socket, or why the DNS server did not answer."""
        try:
            from appliance.services.dns.control import DnsControl

            with DnsControl(self.box.layout.dns_socket, timeout=5) as c:
                return Reading(ask(c))
        except Exception as e:  # noqa: BLE001 - no socket, no server
            return Reading(problem=f"DNS not running ({e})")

    def relay(self) -> Reading:
        return status.relay(self.box)

    def relay_connections(self, history: int = 50) -> Reading:
        return status.relay_connections(self.box, history)

    def bridge(self):
        """The applied flow table as a `Bridge` (None when nothing is applied)."""
        applied = status.applied_bridge(self.box)
        return applied.bridge if applied else None

    def device_counters(self) -> Reading:
        """Per home device, what the datapath counted (`status.device_counters`)."""
        return status.device_counters(self.box)

    def forget_device_counters(self, mac: str) -> bool:
        return status.forget_device_counters(self.box, mac)

    def paused_devices(self) -> set[str]:
        return status.paused_devices(self.box)

    def pause_device(self, mac: str, paused: bool) -> Reading:
        """Pause or resume a device in the datapath, at once (`status.pause_device`)."""
        return status.pause_device(self.box, mac, paused)

    def device_policy(self):
        """Groups, schedules and budgets (`status.device_policy`)."""
        return status.device_policy(self.box)

    def change_device_policy(self, how):
        """Write `how(policy)`; the devices service acts on it within a second, no apply."""
        return status.change_device_policy(self.box, how)

    def scheduled_devices(self) -> set[str]:
        return status.scheduled_devices(self.box)

    def device_usage(self) -> dict:
        return status.device_usage(self.box)

    def flows(self) -> FlowDump:
        return status.flows(self.box)

    def trace(self, text: str) -> dict:
        return status.trace(self.box, text)


# What the pages show of the running box may be a second old: one reading
# (a Kea round trip, `ip -s link`, the control sockets) then serves every
# page and websocket tick of this worker process in that second, instead of
# each of 50 open consoles asking the box for itself. Kept in the process,
# not in Redis: a round trip to Redis under load costs more than most readings.
_CACHE: dict = {}
_READING: dict = {}  # key -> lock held by the one thread taking a new reading


def cached(key: str, read, stamp=None):
    """`read()`, or what it returned less than APPLIANCE_LIVE_SECONDS ago in this process.

    While one thread takes a new reading, the others keep serving the last
    one instead of asking the box all at once. With a `stamp` (anything
    comparable that changes when what `read` reads changes: a generation) a
    reading taken under another stamp is never served.
    """
    seconds = getattr(settings, "APPLIANCE_LIVE_SECONDS", 1.0)
    hit = _CACHE.get(key)
    if hit is not None and hit[2] != stamp:
        hit = None
    if hit is not None and time.monotonic() - hit[0] < seconds:
        return hit[1]
    lock = _READING.setdefault(key, threading.Lock())
    if not lock.acquire(blocking=hit is None):
        return hit[1]
    try:
        again = _CACHE.get(key)
        if (again is not None and again is not hit and again[2] == stamp
                and time.monotonic() - again[0] < seconds):
            return again[1]  # another thread read it while this one waited
        value = read()
        _CACHE[key] = (time.monotonic(), value, stamp)
        return value
    finally:
        lock.release()


def leases() -> Reading:
    """Kea's leases, at most a second old."""
    return cached("leases", lambda: get().leases())


def ports() -> Reading:
    """The ports' link state and byte counters, at most a second old."""
    return cached("ports", lambda: get().ports())


def dns() -> Reading:
    """The DNS server's statistics (the kernel answer cache's among them), at most a second old:
    the DNS page and every query-log search read them."""
    return cached("dns", lambda: get().dns())


# Distinct query-log searches kept by `dns_log` (each is at most a second old anyway).
SEARCHES_KEPT = 32


def dns_log(**filters) -> Reading:
    """A query-log search (`LiveSources.dns_log`), at most a second old: viewers reloading the
    same search share one answer of the DNS server a second. A search not seen in the last
    second goes to the server at once."""
    key = "dns_log " + repr(sorted(filters.items()))
    if key not in _CACHE:
        searches = [k for k in list(_CACHE) if k.startswith("dns_log ")]
        for old in searches[:max(0, len(searches) - SEARCHES_KEPT + 1)]:
            _CACHE.pop(old, None)
            _READING.pop(old, None)
    return cached(key, lambda: get().dns_log(**filters))


def series_totals(prefix: str, step: int, back: int) -> dict[str, float]:
    """Each series under `prefix` summed over the last `back` seconds (`LiveSources.series_totals`),
    at most a second old: the charts page's tables, for every viewer of a range."""
    return cached(f"series_totals {prefix} {step} {back}",
                  lambda: get().series_totals(prefix, step, int(time.time()) - back))


def device_counters() -> Reading:
    """The datapath's per-device counters, at most a second old."""
    return cached("device_counters", lambda: get().device_counters())


def get():
    factory = getattr(settings, "APPLIANCE_SOURCES", "")
    if factory:
        module, _, name = factory.partition(":")
        return getattr(importlib.import_module(module), name)()
    return LiveSources()
