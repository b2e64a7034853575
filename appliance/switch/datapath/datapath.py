"""The running datapath of one bridge: compile, load, fill maps, swap, detach.

`Datapath.apply(bridge)` turns the bridge's flow table into a loaded
program and swaps it in on every port device: with a tcx link and
`bpf_link_update` where the kernel has tcx (>= 6.6), else with a tc
clsact filter and "replace" (see `appliance.kernel.tc`); both swap
atomically.
Nothing that is running changes until the new program has compiled,
passed the verifier and had its maps filled; any failure before the swap
raises (`CompileError`, `BuildError`, `VerifierError` naming the flow the
verifier refused, with its log) and leaves the old program in place.

Maps shared by every program of a bridge (ports, counters, events) are
pinned under `<pin_root>/<bridge>/` and handed to each new program with
`bpf_map__reuse_fd`, so per-flow counters carry over a recompile without
copying: a flow that survives keeps its counter slot (recorded in the state
file `<state_dir>/switch/datapath/<bridge>.json`), and the slots of removed
flows are zeroed only after the swap (also when a new flow takes one over).

Port numbers reach devices through maps (dp_ports, dp_ifports), so a
recreated veth or a renumbered port needs a map update, not a recompile.

Every kernel call goes through the interfaces of `appliance.kernel` (`Bpf`,
`Tc`, `Devices`), given to `Datapath` (Linux by default; the unit tests give
the fakes).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from appliance.kernel.base import KernelError
from appliance.kernel.bpf import (ARRAY, HASH, LRU_PERCPU_HASH, PERCPU_ARRAY, PERCPU_KINDS, RINGBUF, Bpf,
                                  BpfError, BpfObject, Map, MapSpec)
from appliance.kernel.clock import boot_id, boottime
from appliance.kernel.devices import Device, Devices, LinuxDevices
from appliance.kernel.libbpf import LinuxBpf
from appliance.kernel.tc import LinuxTc, Tc, ours

from ..bridge import Bridge, default_state_dir
from ..flows import Flow, FlowStats, FlowTable
from . import contract as C
from .build import build
from .compiler import STATS_SLOTS, Program, assign_slots, compile_table
from .verifier import explain

DEFAULT_PIN_ROOT = "/sys/fs/bpf/appliance"
# struct dp_out (c/dp_runtime.h): five __u32, two flags and their padding, two __u32 of dp_blind's.
OUT_SIZE = 32
# The maps c/dp_runtime.h defines (a unit test reads them there too).
MAPS = {
    "dp_ports": MapSpec(HASH, 4, C.PORT.size, 4096),
    "dp_ifports": MapSpec(HASH, 4, 4, 4096),
    "dp_flood_ports": MapSpec(ARRAY, 4, C.FLOOD_SLOT.size, C.MAX_PORTS),
    "dp_stats": MapSpec(PERCPU_ARRAY, 4, C.STATS.size, STATS_SLOTS),
    "dp_misc": MapSpec(PERCPU_ARRAY, 4, 8, C.MISC_MAX),
    "dp_events": MapSpec(RINGBUF, 0, 0, 256 * 1024),
    "dp_health": MapSpec(ARRAY, 4, C.HEALTH.size, 1),
    "dp_macs": MapSpec(LRU_PERCPU_HASH, 8, C.MAC_STATS.size, C.MAX_MACS),
    "dp_paused": MapSpec(HASH, 8, 4, C.MAX_PAUSED),
    "dp_trace": MapSpec(ARRAY, 4, C.TRACE_SIZE, 1),      # the test build's
    "dp_outs": MapSpec(PERCPU_ARRAY, 4, OUT_SIZE, 1),     # the pending output, per CPU (not shared)
}
# Shared by every program of a bridge: pinned, and reused by the next load.
# dp_health is written by the box's watchdog (appliance.services.health), by its pin.
# dp_macs (per-device counters) is read by the console (`mac_stats`); dp_paused is
# written by it (`set_paused`), without a recompile.
SHARED_MAPS = ("dp_ports", "dp_ifports", "dp_flood_ports", "dp_stats", "dp_misc", "dp_events", "dp_health",
               "dp_macs", "dp_paused")
LINK_PIN_PREFIX = "tcx-"


def flow_identity(flow: Flow) -> str:
    """A flow's identity as text (OVS: table, priority, match), for the state file."""
    return f"{flow.table}|{flow.priority}|{flow.match.to_ofctl()}"


def open_map(bpf: Bpf, fd: int, name: str, owned: bool = False) -> Map:
    """One of the runtime's maps (`MAPS`) by fd."""
    spec = MAPS[name]
    return Map(bpf, fd, spec.key_size, spec.value_size, spec.kind in PERCPU_KINDS, owned)


@dataclass
class ApplyResult:
    program: Program
    object_path: Path
    devices: dict[str, int]          # device name -> ifindex the program is on
    added: int = 0
    removed: int = 0
    hook: str = "tc"                 # "tcx" or "tc": how the program is attached


@dataclass(frozen=True)
class MacStats:
    """One home device's traffic as the datapath counted it (summed over CPUs)."""

    mac: str
    rx_packets: int       # delivered to the device
    rx_bytes: int
    tx_packets: int       # sent by the device
    tx_bytes: int
    last_tx_ns: int       # CLOCK_MONOTONIC of its last frame


def mac_text(mac: int) -> str:
    return ":".join(f"{(mac >> s) & 0xff:02x}" for s in range(40, -8, -8))


def mac_number(text: str) -> int:
    return int(text.replace(":", "").replace("-", ""), 16)


def read_mac_stats(m: Map) -> dict[str, MacStats]:
    """dp_macs as MAC text -> counters summed over CPUs (last_tx_ns: the latest)."""
    out = {}
    for key in m.keys():
        sums = [0, 0, 0, 0]
        last = 0
        for raw in m.percpu_values(key):
            txp, txb, rxp, rxb, seen = C.MAC_STATS.unpack(raw)
            for i, v in enumerate((rxp, rxb, txp, txb)):
                sums[i] += v
            last = max(last, seen)
        mac = mac_text(C.U64.unpack(key)[0])
        out[mac] = MacStats(mac, *sums, last)
    return out


def read_paused(m: Map) -> set[str]:
    """dp_paused as MAC texts."""
    return {mac_text(C.U64.unpack(k)[0]) for k in m.keys()}


def write_paused(m: Map, macs) -> None:
    """Make dp_paused hold exactly `macs` (added first, then the others removed)."""
    wanted = {C.U64.pack(mac_number(mac)) for mac in macs}
    if len(wanted) > C.MAX_PAUSED:
        raise ValueError(f"at most {C.MAX_PAUSED} devices can be paused")
    for key in wanted:
        m.update(key, C.U32.pack(0))
    for key in m.keys():
        if key not in wanted:
            m.delete(key)


@dataclass
class _State:
    slots: dict[str, int] = field(default_factory=dict)      # flow identity -> slot
    devices: list[str] = field(default_factory=list)
    object_path: str = ""
    # When each flow was added (CLOCK_BOOTTIME of `boot`): dump-flows' duration. A flow that
    # stays through an install keeps it, as its counters; a reboot starts every flow again.
    added: dict[str, float] = field(default_factory=dict)
    boot: str = ""


class Datapath:
    """The compiled datapath of bridge `name`, on devices in `netns`.

    `devices` maps port name -> interface name (default: the same name);
    `local_device` is the interface LOCAL delivers to (e.g. the Linux
    bridge the ports are enslaved to). `home_ports` are the ports facing the
    home's devices, whose traffic `mac_stats` counts per MAC; `dns_ports` the
    ports of the box's DNS server, which a paused device may still ask. `bpf`, `tc` and `devices` are the
    kernel (Linux unless given); `build` turns C into an object (clang).
    """

    def __init__(self, name: str, netns: str | None = None,
                 pin_root: str = DEFAULT_PIN_ROOT, state_dir: str | Path | None = None,
                 build_dir: str | Path | None = None, local_device: str | None = None,
                 peer_redirect: bool = True, home_ports: tuple[str, ...] = (),
                 dns_ports: tuple[str, ...] = (), *, bpf: Bpf | None = None, tc: Tc | None = None,
                 devices: Devices | None = None, build=build):
        self.bpf = bpf if bpf is not None else LinuxBpf()
        self.tc = tc if tc is not None else LinuxTc()
        self.devices = devices if devices is not None else LinuxDevices()
        self.build = build
        self.name = name
        self.netns = netns
        self.pin_dir = os.path.join(pin_root, name)
        state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.state_path = state_dir / "switch" / "datapath" / f"{name}.json"
        self.build_dir = Path(build_dir) if build_dir else state_dir / "switch" / "datapath" / "build"
        self.local_device = local_device
        self.peer_redirect = peer_redirect
        self.home_ports = frozenset(home_ports)
        self.dns_ports = frozenset(dns_ports)
        self._obj: BpfObject | None = None

    # -- state ---------------------------------------------------------------

    def _load_state(self) -> _State:
        if not self.state_path.exists():
            return _State()
        data = json.loads(self.state_path.read_text())
        return _State(dict(data.get("slots", {})), list(data.get("devices", [])),
                      data.get("object_path", ""), dict(data.get("added", {})), data.get("boot", ""))

    def _save_state(self, st: _State) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.state_path.parent, prefix=".dp.")
        with os.fdopen(fd, "w") as fh:
            json.dump({"slots": st.slots, "devices": st.devices,
                       "object_path": st.object_path, "added": st.added, "boot": st.boot}, fh, indent=1)
        os.replace(tmp, self.state_path)

    def _pinned(self) -> dict[str, int]:
        fds = {}
        try:
            for name in SHARED_MAPS:
                path = os.path.join(self.pin_dir, name)
                if self.bpf.is_pinned(path):
                    fds[name] = self.bpf.open_pinned(path)
        except BaseException:
            for fd in fds.values():
                self.bpf.close(fd)
            raise
        return fds

    def link_pin(self, device: str) -> str:
        """Where the tcx link of a port device is pinned."""
        return os.path.join(self.pin_dir, LINK_PIN_PREFIX + device)

    # -- apply ---------------------------------------------------------------

    def compile(self, bridge: Bridge, strategy: str = "auto") -> Program:
        """Compile only (no kernel): raises CompileError for a flow we cannot express."""
        st = self._load_state()
        previous = {}
        by_id = {flow_identity(f): f.key for f in bridge.flows}
        for ident, slot in st.slots.items():
            if ident in by_id:
                previous[by_id[ident]] = slot
        slots = assign_slots(bridge.flows, previous)
        return compile_table(bridge.flows, bridge.port_names, slots=slots, strategy=strategy)

    def apply(self, bridge: Bridge, devices: dict[str, str] | None = None,
              strategy: str = "auto") -> ApplyResult:
        program = self.compile(bridge, strategy)
        obj_path = self.build(program.source, self.build_dir)
        self.bpf.make_pin_dir(self.pin_dir)
        reuse = self._pinned()
        try:
            obj = self.bpf.load(str(obj_path), ("dp_ingress",), reuse=reuse)
        except BpfError as e:
            raise explain(e, program, obj_path, bridge.port_names) from None
        finally:
            for fd in reuse.values():
                self.bpf.close(fd)
        try:
            for image in program.tables:
                if image.map_name:
                    m = Map(self.bpf, obj.map_fd(image.map_name), image.key_size, 16)
                    for key, val in image.entries:
                        m.update(key, val)
            maps = {n: open_map(self.bpf, obj.map_fd(n), n) for n in SHARED_MAPS}
            present = {d.name: d for d in self.devices.devices(self.netns)}
            bound = self._bind_ports(present, bridge, devices or {}, maps)
            # Pin the shared maps the first time, before any swap.
            for name, m in maps.items():
                path = os.path.join(self.pin_dir, name)
                if not self.bpf.is_pinned(path):
                    m.pin(path)
            # The swap: one link update (or tc replace) per device,
            # old program until then.
            prog_fd = obj.prog_fd("dp_ingress")
            hook = "tcx" if self.tc.tcx_supported() else "tc"
            for dev, index in bound.items():
                if hook == "tcx":
                    self.tc.link_attach(self.netns, self.link_pin(dev), index, prog_fd)
                    # A filter from an earlier tc attach goes only now,
                    # after the link runs the program.
                    if ours(self.tc.filters(self.netns, index)):
                        self.tc.filter_detach(self.netns, index)
                else:
                    self.tc.filter_attach(self.netns, index, prog_fd)
                    self.tc.link_detach(self.link_pin(dev))
            st = self._load_state()
            for dev in st.devices:
                if dev not in bound:
                    self._unhook(dev, present)
            prog_pin = os.path.join(self.pin_dir, "prog")
            self.bpf.unpin(prog_pin)
            self.bpf.pin(prog_fd, prog_pin)
            # A slot that no longer counts the flow it counted (the flow is
            # gone, and a new flow may have taken the slot) starts again from zero.
            new_ids = {flow_identity(f): program.slots[f.key] for f in bridge.flows}
            kept = {slot for ident, slot in new_ids.items() if st.slots.get(ident) == slot}
            zero = bytes(len(maps["dp_stats"].lookup(C.U32.pack(0)) or b""))
            for slot in set(st.slots.values()) - kept:
                maps["dp_stats"].update(C.U32.pack(slot), zero)
            added = len(set(new_ids) - set(st.slots))
            removed = len(set(st.slots) - set(new_ids))
            now, boot = boottime(), boot_id()
            since = {ident: (st.added.get(ident, now) if st.boot == boot and st.slots.get(ident) == slot else now)
                     for ident, slot in new_ids.items()}
            self._save_state(_State(new_ids, sorted(bound), str(obj_path), since, boot))
        except BaseException:
            obj.close()
            raise
        if self._obj is not None:
            self._obj.close()
        self._obj = obj
        return ApplyResult(program, obj_path, bound, added, removed, hook)

    def _unhook(self, dev: str, present: dict[str, Device]) -> None:
        """Take the program off a device that is no longer a port (or no longer there)."""
        self.tc.link_detach(self.link_pin(dev))
        if dev in present:
            self.tc.filter_detach(self.netns, present[dev].ifindex)

    def _bind_ports(self, present: dict[str, Device], bridge: Bridge, devices: dict[str, str],
                    maps: dict[str, Map]) -> dict[str, int]:
        """Point dp_ports/dp_ifports/dp_flood_ports at the devices that exist now."""
        bound: dict[str, int] = {}
        entries: list[tuple[int, int, int]] = []     # (ofport, ifindex, flags)
        ports = [(pname, number, present.get(devices.get(pname, pname)))
                 for pname, number in sorted(bridge.ports.items(), key=lambda kv: kv[1])]
        # A home side of veths (the lab) is counted as veths count: one packet per skb.
        virtual = any(dev is not None and dev.kind == "veth" for pname, _, dev in ports
                      if pname in self.home_ports)
        for pname, number, dev in ports:
            if dev is None:
                continue
            bound[dev.name] = dev.ifindex
            flags = (self._port_flags(dev) | (C.PORT_HOME if pname in self.home_ports else 0)
                     | (C.PORT_DNS if pname in self.dns_ports else 0) | (C.PORT_SKB_COUNT if virtual else 0))
            entries.append((number, dev.ifindex, flags))
        if self.local_device and self.local_device in present:
            entries.append((C.OFPP_LOCAL, present[self.local_device].ifindex, C.PORT_INGRESS))
        wanted_ports = {C.U32.pack(n) for n, _, _ in entries}
        for n, index, flags in entries:
            maps["dp_ports"].update(C.U32.pack(n), C.PORT.pack(index, flags))
            if n != C.OFPP_LOCAL:
                maps["dp_ifports"].update(C.U32.pack(index), C.U32.pack(n))
        for key in maps["dp_ports"].keys():
            if key not in wanted_ports:
                maps["dp_ports"].delete(key)
        wanted_ifs = {C.U32.pack(i) for n, i, _ in entries if n != C.OFPP_LOCAL}
        for key in maps["dp_ifports"].keys():
            if key not in wanted_ifs:
                maps["dp_ifports"].delete(key)
        # FLOOD order is the classifier's: port numbers ascending, LOCAL last.
        flood = sorted(entries)[: C.MAX_PORTS]
        for i in range(C.MAX_PORTS):
            val = C.FLOOD_SLOT.pack(*flood[i], 0) if i < len(flood) else bytes(C.FLOOD_SLOT.size)
            maps["dp_flood_ports"].update(C.U32.pack(i), val)
        return bound

    def _port_flags(self, dev: Device) -> int:
        # A veth whose peer is in another namespace: redirect straight into it.
        return C.PORT_PEER if self.peer_redirect and dev.peer_elsewhere else 0

    # -- reading ---------------------------------------------------------------

    def flow_stats(self, table: FlowTable) -> dict[tuple, FlowStats]:
        """n_packets/n_bytes per flow (Flow.key), summed over CPUs."""
        st = self._load_state()
        path = os.path.join(self.pin_dir, "dp_stats")
        if not st.slots or not self.bpf.is_pinned(path):
            return {}
        m = open_map(self.bpf, self.bpf.open_pinned(path), "dp_stats", owned=True)
        now, boot = boottime(), boot_id()
        try:
            out = {}
            for f in table:
                slot = st.slots.get(flow_identity(f))
                if slot is None:
                    continue
                pk = by = 0
                for raw in m.percpu_values(C.U32.pack(slot)):
                    p, b = C.STATS.unpack(raw)
                    pk += p
                    by += b
                since = st.added.get(flow_identity(f)) if st.boot == boot else None
                out[f.key] = FlowStats(pk, by, max(0.0, now - since) if since is not None else 0.0)
            return out
        finally:
            m.close()

    def misc(self) -> dict[str, int]:
        path = os.path.join(self.pin_dir, "dp_misc")
        if not self.bpf.is_pinned(path):
            return {}
        m = open_map(self.bpf, self.bpf.open_pinned(path), "dp_misc", owned=True)
        try:
            def total(i):
                return sum(C.U64.unpack(v)[0] for v in m.percpu_values(C.U32.pack(i)))
            return {"loop_drops": total(C.MISC_LOOP_DROPS),
                    "event_drops": total(C.MISC_EVENT_DROPS),
                    "pause_drops": total(C.MISC_PAUSE_DROPS)}
        finally:
            m.close()

    def mac_stats(self) -> dict[str, MacStats]:
        """Per home device (MAC text -> counters), from the pinned dp_macs; {} when not loaded."""
        m = self._shared("dp_macs")
        if m is None:
            return {}
        try:
            return read_mac_stats(m)
        finally:
            m.close()

    def forget_mac(self, mac: str) -> bool:
        """Drop a device's counters (it starts again from zero if it comes back)."""
        path = os.path.join(self.pin_dir, "dp_macs")
        if not self.bpf.is_pinned(path):
            return False
        m = open_map(self.bpf, self.bpf.open_pinned(path), "dp_macs", owned=True)
        try:
            return m.delete(C.U64.pack(mac_number(mac)))
        finally:
            m.close()

    def _shared(self, name: str) -> Map | None:
        path = os.path.join(self.pin_dir, name)
        if not self.bpf.is_pinned(path):
            return None
        return open_map(self.bpf, self.bpf.open_pinned(path), name, owned=True)

    def paused(self) -> set[str]:
        """The MACs whose frames the running program drops (dp_paused)."""
        m = self._shared("dp_paused")
        if m is None:
            return set()
        try:
            return read_paused(m)
        finally:
            m.close()

    def set_paused(self, macs) -> bool:
        """Make dp_paused hold exactly `macs`: the running program acts on it at the next
        frame, no recompile. False when no datapath is loaded (nothing to write)."""
        m = self._shared("dp_paused")
        if m is None:
            return False
        try:
            write_paused(m, macs)
            return True
        finally:
            m.close()

    def slots(self) -> dict[str, int]:
        """Flow identity -> counter slot of the program that runs now."""
        return dict(self._load_state().slots)

    def events_fd(self) -> int:
        """An fd of the controller ring buffer (caller closes it)."""
        return self.bpf.open_pinned(os.path.join(self.pin_dir, "dp_events"))

    def attached(self) -> bool:
        return self.bpf.is_pinned(os.path.join(self.pin_dir, "prog"))

    # -- detach ----------------------------------------------------------------

    def detach(self) -> None:
        """Remove every link, filter, qdisc, pin and map of this bridge's datapath."""
        st = self._load_state()
        for name in self.bpf.pins(self.pin_dir):
            if name.startswith(LINK_PIN_PREFIX):
                self.tc.link_detach(os.path.join(self.pin_dir, name))
        if st.devices:
            try:
                present = {d.name: d for d in self.devices.devices(self.netns)}
            except KernelError:
                present = {}   # the namespace is gone, and its devices' filters with it
            for dev in st.devices:
                if dev in present:
                    self.tc.filter_detach(self.netns, present[dev].ifindex)
        for name in list(SHARED_MAPS) + ["prog"]:
            self.bpf.unpin(os.path.join(self.pin_dir, name))
        # The bridge's directory, then the pin root once no other datapath uses it.
        for directory in (self.pin_dir, os.path.dirname(self.pin_dir)):
            if not self.bpf.remove_pin_dir(directory):
                break
        if self._obj is not None:
            self._obj.close()
            self._obj = None
        if self.state_path.exists():
            self.state_path.unlink()
