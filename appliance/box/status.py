"""Reading the running box: ports, leases, services, DNS, relay, the applied switch.

For the console, the API and the CLI alike. Each reader asks the component
that knows (Kea's control socket, the service runner, the DNS and relay
control sockets, the datapath's pinned counters), at the paths the box's
`Layout` gives, and says so plainly when that component is not running: a
`Reading` holds a value or the problem ("DHCP server not running"), never
raises for a component that is down.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass, field

from appliance.box.flows import HEALTH_REG
from appliance.box.runtime import Box
from appliance.box.switchload import DatapathLoader
from appliance.kernel.base import KernelError
from appliance.kernel.devices import Devices
from appliance.services.devices import store as devices_store
from appliance.services.devices.policy import Policy
from appliance.services.dhcp import pool
from appliance.services.dhcp.kea import KeaControl, KeaError
from appliance.services.dhcp.leases6 import read_leases
from appliance.services.dns.control import DnsControl
from appliance.services.health import record
from appliance.services.health.heartbeat import HealthMap
from appliance.services.relay.control import query
from appliance.switch.bridge import Bridge
from appliance.switch.datapath.contract import HEALTH_SERVICES
from appliance.switch.datapath import hooks
from appliance.switch.datapath.datapath import Datapath
from appliance.switch.trace import format_trace, trace as reference_trace


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


# ---------------------------------------------------------------- DHCP

def kea_leases(socket: str) -> Reading:
    """Kea's leases over its control socket, as plain rows."""
    try:
        leases = KeaControl(socket, timeout=2).leases()
    except (KeaError, OSError) as e:
        return Reading(problem=f"DHCP server not running ({e})")
    return Reading([{"ip": str(x.ip), "mac": x.mac, "hostname": x.hostname, "expires": x.expires,
                     "state": x.state} for x in leases])


def dhcp6_leases(store: str) -> Reading:
    """The addresses dhcpkit handed out (its leasequery store), as rows like Kea's."""
    try:
        found = read_leases(store)
    except (OSError, sqlite3.Error) as e:
        return Reading(problem=f"cannot read the DHCPv6 leases ({e})")
    return Reading([{"ip": str(x.ip), "mac": x.mac, "hostname": "", "expires": x.expires, "state": 0}
                    for x in found])


def leases(box: Box) -> Reading:
    """Kea's leases, then the DHCPv6 ones (static addresses, listed once handed out)."""
    v4 = kea_leases(box.layout.kea.socket)
    v6 = dhcp6_leases(box.layout.dhcp6.leases)
    if not v4.ok:
        return v4
    return Reading([*v4.value, *(v6.value if v6.ok else [])])


def dhcp_pool(box: Box, got: Reading | None = None) -> Reading:
    """How full the DHCP pools are (`appliance.services.dhcp.pool.usage`), who got no lease.

    `got`: Kea's leases when the caller read them already.
    """
    settings = box.applied_settings()
    if settings is None:
        return Reading(problem="nothing applied")
    got = got if got is not None else leases(box)
    if not got.ok:
        return Reading(problem=got.problem)
    tail = getattr(box.services, "log_tail", None)
    log_text = tail("dhcp4") if tail else ""
    return Reading(pool.usage(settings.dhcp.pools, got.value, settings.dhcp.pool_warn_percent, log_text))


# ---------------------------------------------------------------- ports and services

def ports(box: Box, devices: Devices) -> Reading:
    """The box's NICs: role, carrier, byte counters (what `ip -s link` shows)."""
    applied = box.applied_settings()
    if applied is None:
        return Reading(problem="nothing applied yet")
    roles = {applied.ports.uplink: "uplink", applied.ports.downlink: "downlink"}
    try:
        found = devices.devices(box.placement.host_ns)
    except KernelError as e:
        return Reading(problem=f"cannot read the ports: {e}")
    rows = [{"name": d.name, "role": roles[d.name], "up": d.carrier, "rx_bytes": d.rx_bytes,
             "tx_bytes": d.tx_bytes, "time": time.time()} for d in found if d.name in roles]
    return Reading(sorted(rows, key=lambda r: r["role"], reverse=True))


def services(box: Box) -> Reading:
    """The applied plan's services: whether they run, as whatever runs them (systemd or the
    supervisor) says, and whether they answer, as the watchdog last saw it (`health`: healthy,
    unhealthy, unknown; `last_failure` and when; `fallback`: what the home gets meanwhile)."""
    plan = box.applied_plan()
    if plan is None:
        return Reading(problem="nothing applied yet")
    watch = health_status(box)
    seen = watch.value.get("services", {}) if watch.ok else {}
    failsafe = box.applied_settings().failsafe
    rows = []
    for spec in plan.services:
        try:
            state = box.services.status(spec.name)
            row = {"name": spec.name, "state": getattr(state, "state", str(state))}
        except Exception as e:  # noqa: BLE001 - systemd not answering is "unknown", not "stopped"
            row = {"name": spec.name, "state": f"unknown ({e})"}
        h = seen.get(spec.name)
        if spec.name == "watchdog":
            row["health"] = "healthy" if watch.ok else "unhealthy"
            row["last_failure"] = "" if watch.ok else watch.problem
        elif spec.probe is None:
            row["health"] = "not probed"
        elif h is None:
            row["health"] = "unknown"
            row["last_failure"] = watch.problem or ""
        else:
            at = h.get("last_failure_at")
            row.update(health=h["state"], last_failure=h.get("last_failure", ""), last_failure_at=at,
                       last_failure_when=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else "",
                       restarts_by_watchdog=h.get("restarts", 0))
            if h["state"] != "healthy":
                row["fallback"] = _FALLBACK.get(spec.name, "") if failsafe == "open" else "none (failsafe: closed)"
        if spec.name == "dhcp6" and (aside := dhcp6_aside(box.layout.dhcp6.status)):
            # Not a fault: the modem's RA asks for what the box does not give.
            row.update(health="stands aside", fallback=aside, last_failure="")
        rows.append(row)
    return Reading(rows)


_FALLBACK = {"dns": "the modem answers DNS", "dhcp4": "the modem's DHCP serves the home",
             "dhcp6": "the modem's DHCPv6 serves the home", "relay": "the DNS server gives real addresses"}


def dhcp6_aside(status_file: str) -> str | None:
    """Why the DHCPv6 server lets the modem serve the home, if it does (its own status file)."""
    try:
        with open(status_file) as f:
            return json.load(f).get("aside")
    except (OSError, ValueError, AttributeError):
        return None


def health_status(box: Box) -> Reading:
    """The watchdog's status file, when it is fresh (written in the last few seconds)."""
    status = record.read_status(box.layout.health_status)
    if status is None:
        return Reading(problem="the watchdog is not running (no status)")
    age = time.monotonic() - float(status.get("monotonic", 0))
    if age > 3 * float(status.get("stale_after", 3.0)):
        return Reading(status, problem=f"the watchdog has not written for {age:.0f} s")
    return Reading(status)


def health_events(box: Box, limit: int = 50) -> list[record.Event]:
    """The last health transitions and restarts, oldest first (kept across reboots)."""
    return record.read_events(box.layout.health_events, limit)


# ---------------------------------------------------------------- DNS and relay (their control sockets)

def dns(box: Box) -> Reading:
    try:
        with DnsControl(box.layout.dns_socket, timeout=2) as c:
            return Reading(c.stats())
    except (OSError, ValueError) as e:
        return Reading(problem=f"DNS not running ({e})")


def relay(box: Box) -> Reading:
    try:
        return Reading(query(box.layout.relay_socket, "stats", timeout=2))
    except (OSError, ValueError) as e:
        return Reading(problem=f"relay not running ({e})")


def relay_connections(box: Box, history: int = 50) -> Reading:
    """The relay's connection table: live rows (the relay's and the kernel
    fast path's), the last `history` ended ones, per-domain/client counters."""
    sock = box.layout.relay_socket
    try:
        return Reading({"live": query(sock, "connections", timeout=2),
                        "history": query(sock, "history", timeout=2, limit=history),
                        "counters": query(sock, "counters", timeout=2)})
    except (OSError, ValueError) as e:
        return Reading(problem=f"relay not running ({e})")


# ---------------------------------------------------------------- the switch

@dataclass
class AppliedBridge:
    """The box's applied flow table as a `Bridge`, and where its datapath runs."""

    bridge: Bridge
    loader: DatapathLoader

    def datapath(self) -> Datapath | None:
        """The running datapath, or None when none is attached."""
        dp = self.loader.datapath(self.bridge.name)
        return dp if dp.attached() else None

    def health_register(self) -> int | None:
        """The health register (reg15) as the running datapath computes it now; None when it cannot say."""
        dp = self.loader.datapath(self.bridge.name)
        try:
            return HealthMap(os.path.join(dp.pin_dir, "dp_health")).bits()
        except OSError:
            return None  # not root, or no BPF filesystem

    def trace_input(self, text: str) -> str:
        """A trace flow with the health register the datapath has now (unless the flow sets it):
        what a packet arriving now meets. Without a datapath, every service is taken as healthy."""
        if re.search(rf"\b{HEALTH_REG}=", text):
            return text
        live = self.health_register()
        value = live if live is not None else (1 << HEALTH_SERVICES) - 1
        return f"{HEALTH_REG}={value:#x},{text}" if value else text

    def flow_stats(self):
        dp = self.datapath()
        if dp is None:
            return None
        try:
            return dp.flow_stats(self.bridge.flows)
        except OSError:
            return None  # not root: no access to the pinned maps


def device_counters(box: Box) -> Reading:
    """Per home device (MAC -> `MacStats`): what the running datapath counted (dp_macs)."""
    applied = applied_bridge(box)
    if applied is None:
        return Reading(problem="nothing applied yet")
    try:
        dp = applied.datapath()
        if dp is None:
            return Reading(problem="datapath not loaded")
        return Reading(dp.mac_stats())
    except OSError as e:  # not root, or the pins went away under us
        return Reading(problem=f"datapath not loaded ({e})")


def forget_device_counters(box: Box, mac: str) -> bool:
    """Drop a device's counters from the running datapath (False: it had none, or none runs)."""
    applied = applied_bridge(box)
    try:
        dp = applied.datapath() if applied else None
        return dp.forget_mac(mac) if dp else False
    except OSError:
        return False


def paused_devices(box: Box) -> set[str]:
    """The MACs of the paused devices, as the box keeps them."""
    return DatapathLoader.of(box).paused()


def pause_device(box: Box, mac: str, paused: bool) -> Reading:
    """Pause or resume one device: kept by the box and written to the running datapath at once.

    The value says whether the running datapath enforces it now ("enforced": False when
    none runs; the next load will); a problem when the box could not keep it.
    """
    loader = DatapathLoader.of(box)
    macs = loader.paused()
    macs = macs | {mac} if paused else macs - {mac}
    plan = box.applied_plan()
    try:
        enforced = loader.set_paused(plan.switch.bridge if plan else None, macs)
    except (OSError, ValueError) as e:
        return Reading(problem=f"cannot {'pause' if paused else 'resume'} {mac}: {e}")
    return Reading({"mac": mac, "paused": paused, "enforced": enforced})


def device_policy(box: Box) -> Policy:
    """Groups, schedules and budgets of the home's devices (what the console set)."""
    return devices_store.read(box.layout.devices_policy)


def change_device_policy(box: Box, how) -> Policy:
    """Write `how(policy)` for the devices service, which acts on it within a second (no apply)."""
    return devices_store.change(box.layout.devices_policy, how)


def scheduled_devices(box: Box) -> set[str]:
    """The MACs a schedule has off now, as the devices service last decided."""
    return DatapathLoader.of(box).scheduled()


def device_usage(box: Box) -> dict[str, dict[str, int]]:
    """MAC -> bytes this day and this month (the devices service's count, saved every few seconds)."""
    return devices_store.usage(box.layout.devices_state)


def applied_bridge(box: Box, name: str | None = None) -> AppliedBridge | None:
    """The box's applied bridge (only if it is called `name`, when given); None when nothing is applied."""
    plan = box.applied_plan()
    if plan is None or (name is not None and plan.switch.bridge != name):
        return None
    return AppliedBridge(DatapathLoader.bridge_of(plan.switch), DatapathLoader.of(box))


def flows(box: Box) -> FlowDump:
    """dump-flows of the applied table, with the running datapath's counters when it can say."""
    applied = applied_bridge(box)
    if applied is None:
        return FlowDump(counters="nothing applied yet")
    bridge = applied.bridge
    stats, why = {}, None
    try:
        dp = applied.datapath()
        if dp is None:
            why = "datapath not loaded"
        else:
            stats = dp.flow_stats(bridge.flows)
    except OSError as e:  # not root, or the pins went away under us
        why = f"datapath not loaded ({e})"
    rows = []
    for f in bridge.flows:
        st = stats.get(f.key)
        rows.append(FlowRow(text=f.to_ofctl(bridge.port_names), n_packets=st.n_packets if st else None,
                            n_bytes=st.n_bytes if st else None))
    return FlowDump(bridge=bridge.name, rows=rows, counters=why)


class NothingApplied(ValueError):
    """The box has no applied flow table yet (a state, not bad input)."""


def trace(box: Box, text: str) -> dict:
    """ofproto/trace on the applied table: the reference classifier's answer, and the datapath's when it can say.

    Raises ValueError (the packet's or the flow's error, naming the column)
    for bad text, NothingApplied when nothing is applied.
    """
    applied = applied_bridge(box)
    if applied is None:
        raise NothingApplied("nothing applied yet: there is no flow table to trace")
    bridge = applied.bridge
    packet, result = reference_trace(bridge, applied.trace_input(text))
    try:
        datapath = "\n".join(hooks.trace_datapath(bridge, packet, result))
    except Exception as e:  # noqa: BLE001 - the reference answer stands alone; the datapath's is extra
        datapath = f"datapath not loaded: no datapath verdict ({type(e).__name__}: {e})"
    return {"reference": format_trace(bridge, packet, result), "datapath": datapath,
            "outputs": [str(o.port) for o in result.outputs], "dropped": result.dropped}
