"""What the console shows of the running box: ports, leases, flows, services, DNS, relay.

Each reader asks the component that knows (Kea's control socket, the
datapath's pinned counters, the DNS and relay control sockets, `ip -s link`)
and says so plainly when that component is not running: the pages show
"DHCP server not running" rather than an error. `APPLIANCE_SOURCES`
("module:function") replaces the readers, which is how the browser tests run
without a real box.
"""
from __future__ import annotations

import importlib
import json
import subprocess
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings

from appliance.web import boxes


@dataclass
class Reading:
    """A value, or why there is none ("not running")."""

    value: object = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass
class FlowRow:
    text: str
    why: str = ""
    n_packets: int | None = None
    n_bytes: int | None = None


@dataclass
class FlowDump:
    bridge: str = "vswitch"
    rows: list[FlowRow] = field(default_factory=list)
    counters: str | None = None  # why there are no counters ("datapath not loaded")


_PLANS: dict = {}


def applied_plan(box):
    """The box's applied plan, rebuilt only when its state file changes (planning costs ms)."""
    try:
        st = box.state_path.stat()
    except (FileNotFoundError, AttributeError):
        return box.applied_plan()
    key = (str(box.state_path), st.st_mtime_ns, st.st_size)
    if key not in _PLANS:
        _PLANS.clear()
        _PLANS[key] = box.applied_plan()
    return _PLANS[key]


class LiveSources:
    def __init__(self):
        self.box = boxes.get_box()

    # -- leases --------------------------------------------------------------
    def leases(self) -> Reading:
        from appliance.services.dhcp.kea import KeaControl, KeaError

        try:
            leases = KeaControl(self.box.layout.kea.socket, timeout=2).leases()
        except (KeaError, OSError) as e:
            return Reading(problem=f"DHCP server not running ({e})")
        return Reading([{"ip": str(x.ip), "mac": x.mac, "hostname": x.hostname, "expires": x.expires,
                         "state": x.state} for x in leases])

    # -- ports ---------------------------------------------------------------
    def ports(self) -> Reading:
        applied = self.box.applied_settings()
        if applied is None:
            return Reading(problem="nothing applied yet")
        roles = {applied.ports.uplink: "uplink", applied.ports.downlink: "downlink"}
        ns = self.box.placement.host_ns
        argv = ["ip", *(["-n", ns] if ns else []), "-s", "-j", "link", "show"]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=3, check=True).stdout
        except (OSError, subprocess.SubprocessError) as e:
            return Reading(problem=f"cannot read the ports: {e}")
        rows = []
        for link in json.loads(out or "[]"):
            name = link.get("ifname")
            if name not in roles:
                continue
            stats = link.get("stats64", {})
            rows.append({"name": name, "role": roles[name], "up": "LOWER_UP" in link.get("flags", []),
                         "rx_bytes": stats.get("rx", {}).get("bytes", 0),
                         "tx_bytes": stats.get("tx", {}).get("bytes", 0), "time": time.time()})
        return Reading(sorted(rows, key=lambda r: r["role"], reverse=True))

    # -- services ------------------------------------------------------------
    def services(self) -> Reading:
        plan = applied_plan(self.box)
        if plan is None:
            return Reading(problem="nothing applied yet")
        runner = self.box.services  # systemd on the image, the supervisor elsewhere
        rows = []
        for spec in plan.services:
            try:
                state = runner.status(spec.name)
                rows.append({"name": spec.name, "state": getattr(state, "state", str(state))})
            except Exception as e:  # noqa: BLE001
                rows.append({"name": spec.name, "state": f"unknown ({e})"})
        return Reading(rows)

    # -- DNS and relay (their control sockets) -------------------------------
    def dns(self) -> Reading:
        try:
            from appliance.services.dns.control import DnsControl

            with DnsControl(settings.APPLIANCE_DNS_SOCKET, timeout=2) as c:
                return Reading(c.stats())
        except Exception as e:  # noqa: BLE001 - absent module, no socket, no server
            return Reading(problem=f"DNS not running ({e})")

    def flush_fake_ips(self) -> Reading:
        """Forget the DNS server's unpinned fake-IP mappings: {"removed": n, "kept": pinned}."""
        try:
            from appliance.services.dns.control import DnsControl

            with DnsControl(settings.APPLIANCE_DNS_SOCKET, timeout=5) as c:
                return Reading(c.flush_fake_ips())
        except Exception as e:  # noqa: BLE001 - no socket, no server
            return Reading(problem=f"DNS not running ({e})")

    def relay(self) -> Reading:
        try:
            from appliance.services.relay.control import query

            return Reading(query(settings.APPLIANCE_RELAY_SOCKET, "stats", timeout=2))
        except Exception as e:  # noqa: BLE001
            return Reading(problem=f"relay not running ({e})")

    def relay_connections(self, history: int = 50) -> Reading:
        """The relay's connection table: live rows (the relay's and the kernel
        fast path's), the last `history` ended ones, per-domain/client counters."""
        try:
            from appliance.services.relay.control import query

            sock = settings.APPLIANCE_RELAY_SOCKET
            return Reading({"live": query(sock, "connections", timeout=2),
                            "history": query(sock, "history", timeout=2, limit=history),
                            "counters": query(sock, "counters", timeout=2)})
        except Exception as e:  # noqa: BLE001
            return Reading(problem=f"relay not running ({e})")

    # -- the switch ----------------------------------------------------------
    def bridge(self):
        """The applied flow table as a `Bridge` (None when nothing is applied)."""
        plan = applied_plan(self.box)
        if plan is None:
            return None, None
        from appliance.box.switchload import DatapathLoader

        return DatapathLoader.bridge_of(plan.switch), plan.switch

    def datapath(self, bridge_name: str):
        from appliance.box.switchload import DatapathLoader

        # The loader knows where this box pins its maps (one place per box).
        dp = DatapathLoader.of(self.box).datapath(bridge_name)
        return dp if dp.attached() else None

    def flows(self) -> FlowDump:
        bridge, sw = self.bridge()
        if bridge is None:
            return FlowDump(counters="nothing applied yet")
        names = bridge.port_names
        stats, why = {}, None
        try:
            dp = self.datapath(bridge.name)
            if dp is None:
                why = "datapath not loaded"
            else:
                stats = dp.flow_stats(bridge.flows)
        except Exception as e:  # noqa: BLE001 - being built by others; degrade
            why = f"datapath not loaded ({e})"
        rows = []
        for f in bridge.flows:
            st = stats.get(f.key)
            rows.append(FlowRow(text=f.to_ofctl(names), n_packets=st.n_packets if st else None,
                                n_bytes=st.n_bytes if st else None))
        return FlowDump(bridge=bridge.name, rows=rows, counters=why)

    def trace(self, text: str) -> dict:
        """The reference classifier's answer, and the datapath's when it can say."""
        from appliance.switch.trace import format_trace, trace

        bridge, _ = self.bridge()
        if bridge is None:
            raise ValueError("nothing applied yet: there is no flow table to trace")
        packet, result = trace(bridge, text)  # PacketError/FlowSyntaxError name the column
        try:
            hooks = importlib.import_module("appliance.switch.datapath.hooks")
            datapath = "\n".join(hooks.trace_datapath(bridge, packet, result))
        except Exception as e:  # noqa: BLE001
            datapath = f"datapath not loaded: no datapath verdict ({type(e).__name__})"
        return {"reference": format_trace(bridge, packet, result), "datapath": datapath,
                "outputs": [str(o.port) for o in result.outputs], "dropped": result.dropped}


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


def get():
    factory = getattr(settings, "APPLIANCE_SOURCES", "")
    if factory:
        module, _, name = factory.partition(":")
        return getattr(importlib.import_module(module), name)()
    return LiveSources()
