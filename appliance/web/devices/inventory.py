"""Every device seen on the home side: the console's rows joined with what the box says now.

Seen: the datapath counted a frame the device sent on the home port
(dp_macs), or the DHCP server holds a lease for it. Addresses: Kea's and
dhcpkit's leases and the static leases. Name: the one the user gave, else
the static lease's hostname, else the hostname the device gave DHCP.
Online: it sent a frame in the last ONLINE_SECONDS. Counters: the
datapath's, since it began counting the device (a reboot, an unload of the
datapath or a forget starts them again at zero). Group, schedules and budget:
the box's policy file, which the devices service enforces
(`appliance.services.devices`); who a schedule has off now and what each
device used this day and month: that service's word.
"""
from __future__ import annotations

import dataclasses
import functools
import ipaddress
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from appliance.box.status import Reading
from appliance.services.devices.policy import DevicePolicy, Policy
from appliance.web import document, sources
from appliance.web.devices import oui
from appliance.web.devices.models import Device

ONLINE_SECONDS = 300
# last_seen is written when it moved on by this much: a page load is not a database write.
LAST_SEEN_STEP = timedelta(seconds=30)
_MAC = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$")
COUNTERS = ("rx_bytes", "rx_packets", "tx_bytes", "tx_packets")
log = logging.getLogger(__name__)


def normal_mac(text: str) -> str | None:
    """`aa:bb:cc:dd:ee:ff` for a MAC in either case, with colons or dashes; None otherwise."""
    text = text.strip().lower()
    return text.replace("-", ":") if _MAC.match(text) else None


@dataclass
class DeviceView:
    mac: str
    name: str
    name_source: str               # "user", "static", "dhcp" or "" (none)
    vendor: str
    private: bool                  # a locally administered (random) MAC
    ipv4: list[str] = field(default_factory=list)
    ipv6: list[str] = field(default_factory=list)
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    online: bool = False
    paused: bool = False           # paused until resumed: its frames are dropped (all but DHCP, DNS to the box, ARP, ND)
    scheduled_off: bool = False    # a schedule (its own or its group's) has it off now: dropped the same way
    group: str = ""
    schedules: list[dict] = field(default_factory=list)   # {"days": [...], "start": "HH:MM", "end": "HH:MM"}
    budget: dict | None = None     # {"bytes": n, "period": "day" | "month"}
    used_today: int = 0            # bytes both ways, as the devices service counted them
    used_month: int = 0
    counted: bool = False          # the running datapath has counters for it
    rx_bytes: int = 0
    rx_packets: int = 0
    tx_bytes: int = 0
    tx_packets: int = 0


def _seen_at(last_tx_ns: int, now: datetime) -> datetime:
    """Wall time of a CLOCK_MONOTONIC instant (bpf_ktime_get_ns; Python's monotonic is the same clock)."""
    ago = max(0, time.monotonic_ns() - last_tx_ns) / 1e9
    return now - timedelta(seconds=ago)


def _lease_rows(leases: Reading) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in leases.value if leases.ok else []:
        mac = normal_mac(str(row.get("mac") or ""))
        if mac and not row.get("state"):      # Kea's 0: the lease is held (not declined, not expired)
            out.setdefault(mac, []).append(row)
    return out


def sync(counters: Reading, leases: Reading) -> None:
    """Rows for devices seen for the first time; last_seen moved on for those that sent frames."""
    now = timezone.now()
    seen: dict[str, datetime] = {}
    if counters.ok:
        for mac, st in counters.value.items():
            if st.last_tx_ns:
                seen[mac] = _seen_at(st.last_tx_ns, now)
    for mac in _lease_rows(leases):
        seen.setdefault(mac, now)
    known = dict(Device.objects.filter(mac__in=list(seen)).values_list("mac", "last_seen"))
    new = [Device(mac=m, first_seen=t, last_seen=t) for m, t in seen.items() if m not in known]
    if new:
        # Another worker may add the same device at the same moment: the unique MAC keeps one.
        Device.objects.bulk_create(new, ignore_conflicts=True)
    if counters.ok:
        for mac, t in seen.items():
            if mac in known and mac in counters.value and t - known[mac] > LAST_SEEN_STEP:
                Device.objects.filter(mac=mac, last_seen__lt=t).update(last_seen=t)


def devices() -> tuple[list[DeviceView], str | None]:
    """All devices, and why the counters are missing (None when the datapath answered)."""
    counters = sources.device_counters()
    leases = sources.leases()
    sources.cached("devices-sync", lambda: sync(counters, leases))
    from appliance.web.dhcp.models import StaticLease

    static = {normal_mac(s.mac): s for s in StaticLease.objects.all()}
    by_mac = _lease_rows(leases)
    src = sources.get()
    paused, scheduled = src.paused_devices(), src.scheduled_devices()
    policy, usage = src.device_policy(), src.device_usage()
    now = timezone.now()
    views = []
    for d in Device.objects.all():
        v = _view(d, counters.value.get(d.mac) if counters.ok else None, static.get(d.mac),
                  by_mac.get(d.mac, []), now)
        v.paused, v.scheduled_off = d.mac in paused, d.mac in scheduled
        p = policy.of(d.mac)
        v.group, v.schedules = p.group, [s.to_json() for s in p.schedules]
        v.budget = p.budget.to_json() if p.budget else None
        used = usage.get(d.mac, {})
        v.used_today, v.used_month = used.get("day", 0), used.get("month", 0)
        views.append(v)
    return views, counters.problem


def stamp() -> tuple:
    """Moves whenever a user changes a device (from any worker process) or the settings document
    (static leases name devices): what the devices page's shared rows are kept under. A small
    file, not the cache: a Redis round trip on every page load held a busy worker's requests up."""
    try:
        with open(settings.APPLIANCE_DEVICES_GENERATION_FILE) as f:
            generation = f.read()
    except OSError:
        generation = ""
    return generation, document.revision()


def _changes(change):
    """`change` changes devices: the shared rows are built again after it, even if it failed half way."""
    @functools.wraps(change)
    def changing(*args, **kwargs):
        try:
            return change(*args, **kwargs)
        finally:
            _bump(settings.APPLIANCE_DEVICES_GENERATION_FILE)
    return changing


def _bump(path: str) -> None:
    # A new random value, not a count: two workers bumping at once still leave a value neither
    # had. No fsync: after a power cut the rows it stamps are gone too.
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}"
    try:
        with open(tmp, "w") as f:
            f.write(secrets.token_hex(8))
        os.replace(tmp, path)
    except OSError as e:  # a full or read-only state directory: the change stands, shown within the period
        log.warning("devices page generation not moved on: %s", e)


def device(mac: str) -> DeviceView | None:
    mac = normal_mac(mac) or ""
    return next((v for v in devices()[0] if v.mac == mac), None)


def _view(d: Device, st, static, leases: list[dict], now: datetime) -> DeviceView:
    v = DeviceView(mac=d.mac, name="", name_source="", vendor=oui.vendor(d.mac), private=oui.is_private(d.mac),
                   first_seen=d.first_seen, last_seen=d.last_seen)
    hostnames = [r["hostname"] for r in leases if r.get("hostname")]
    for source, name in (("user", d.name), ("static", static.hostname if static else ""),
                         ("dhcp", hostnames[0] if hostnames else "")):
        if name:
            v.name, v.name_source = name, source
            break
    addresses = [r["ip"] for r in leases] + ([static.ip, static.ip6] if static else [])
    for a in dict.fromkeys(a for a in addresses if a):
        try:
            ip = ipaddress.ip_address(a)
        except ValueError:
            continue
        (v.ipv4 if ip.version == 4 else v.ipv6).append(str(ip))
    if st is not None:
        v.counted = True
        for k in COUNTERS:
            setattr(v, k, getattr(st, k))
        if st.last_tx_ns:
            v.last_seen = max(v.last_seen, _seen_at(st.last_tx_ns, now))
            v.online = now - v.last_seen < timedelta(seconds=ONLINE_SECONDS)
    return v


@_changes
def rename(mac: str, name: str) -> DeviceView | None:
    mac = normal_mac(mac) or ""
    if not Device.objects.filter(mac=mac).update(name=name.strip()):
        return None
    return device(mac)


@_changes
def pause(mac: str, paused: bool) -> Reading:
    """Pause or resume a device: the datapath drops its frames from the next one on (no apply)."""
    return sources.get().pause_device(normal_mac(mac) or "", paused)


@_changes
def set_policy(mac: str, changes: dict) -> None:
    """Change a device's `group`, `schedules` (a list of Schedule) or `budget` (a Budget or None);
    the devices service acts on it within a second (no apply)."""
    def how(policy: Policy) -> Policy:
        return policy.with_device(mac, dataclasses.replace(policy.of(mac), **changes))
    sources.get().change_device_policy(how)


def groups() -> list[dict]:
    """Every group: its name, schedules and devices (a group is a name on devices, and/or schedules)."""
    policy = sources.get().device_policy()
    return [{"name": g, "schedules": [s.to_json() for s in policy.groups.get(g, ())],
             "devices": policy.members(g)} for g in policy.group_names()]


def group(name: str) -> dict | None:
    return next((g for g in groups() if g["name"] == name), None)


@_changes
def set_group_schedules(name: str, schedules: tuple) -> dict:
    sources.get().change_device_policy(lambda p: p.with_group(name, tuple(schedules)))
    return group(name) or {"name": name, "schedules": [], "devices": []}


@_changes
def delete_group(name: str) -> bool:
    """Drop a group's schedules and take its devices out of it."""
    if group(name) is None:
        return False

    def how(policy: Policy) -> Policy:
        policy = policy.with_group(name, ())
        for mac in policy.members(name):
            policy = policy.with_device(mac, dataclasses.replace(policy.of(mac), group=""))
        return policy
    sources.get().change_device_policy(how)
    return True


@_changes
def forget(mac: str) -> bool:
    """Drop the console's row and the datapath's counters. A device still on the network (its
    lease, its frames) comes back at the next look, as new: no name, seen from now."""
    mac = normal_mac(mac) or ""
    deleted, _ = Device.objects.filter(mac=mac).delete()
    if not deleted:
        return False
    if mac in sources.get().paused_devices():
        sources.get().pause_device(mac, False)   # a forgotten device is not kept paused
    if not sources.get().device_policy().of(mac).empty:
        sources.get().change_device_policy(lambda p: p.with_device(mac, DevicePolicy()))   # nor scheduled
    sources.get().forget_device_counters(mac)
    for key in ("device_counters", "devices-sync"):
        sources._CACHE.pop(key, None)
    return True
