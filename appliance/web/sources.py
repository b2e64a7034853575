"""What the console shows of the running box, as `appliance.box.status` reads it.

`LiveSources` reads the box `boxes.get_box()` gives; `APPLIANCE_SOURCES`
("module:function") replaces it, which is how the browser tests run without
a real box. The readings the dashboard polls are cached for a second in the
process (`cached`).
"""
from __future__ import annotations

import importlib
import threading
import time

from django.conf import settings

from appliance.box import status
from appliance.box.status import FlowDump, Reading
from appliance.kernel.devices import Devices, LinuxDevices
from appliance.web import boxes


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

    def dns_log(self, **filters) -> Reading:
        """The DNS server's query log, newest first (`QueryLog.search`: client, domain, action,
        since, limit)."""
        return self._dns_call(lambda c: c.query_log(**filters))

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


def cached(key: str, read):
    """`read()`, or what it returned less than APPLIANCE_LIVE_SECONDS ago in this process.

    While one thread takes a new reading, the others keep serving the last
    one instead of asking the box all at once.
    """
    seconds = getattr(settings, "APPLIANCE_LIVE_SECONDS", 1.0)
    hit = _CACHE.get(key)
    if hit is not None and time.monotonic() - hit[0] < seconds:
        return hit[1]
    lock = _READING.setdefault(key, threading.Lock())
    if not lock.acquire(blocking=hit is None):
        return hit[1]
    try:
        again = _CACHE.get(key)
        if again is not None and again is not hit and time.monotonic() - again[0] < seconds:
            return again[1]  # another thread read it while this one waited
        value = read()
        _CACHE[key] = (time.monotonic(), value)
        return value
    finally:
        lock.release()


def leases() -> Reading:
    """Kea's leases, at most a second old."""
    return cached("leases", lambda: get().leases())


def ports() -> Reading:
    """The ports' link state and byte counters, at most a second old."""
    return cached("ports", lambda: get().ports())


def device_counters() -> Reading:
    """The datapath's per-device counters, at most a second old."""
    return cached("device_counters", lambda: get().device_counters())


def get():
    factory = getattr(settings, "APPLIANCE_SOURCES", "")
    if factory:
        module, _, name = factory.partition(":")
        return getattr(importlib.import_module(module), name)()
    return LiveSources()
