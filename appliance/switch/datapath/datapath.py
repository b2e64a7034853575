"""The running datapath of one bridge: compile, load, fill maps, swap, detach.

`Datapath.apply(bridge)` turns the bridge's flow table into a loaded
program and swaps it in on every port device: with a tcx link and
`bpf_link_update` where the kernel has tcx (>= 6.6, see `tcx`), else with
a tc clsact filter and "replace" (see `tc`); both swap atomically.
Nothing that is running changes until the new program has compiled,
passed the verifier and had its maps filled; any failure before the swap
raises (`CompileError`, `BuildError`, `VerifierError` naming the flow the
verifier refused, with its log) and leaves the old program in place.

Maps shared by every program of a bridge (ports, counters, events) are
pinned under `<pin_root>/<bridge>/` and handed to each new program with
`bpf_map__reuse_fd`, so per-flow counters carry over a recompile without
copying: a flow that survives keeps its counter slot (recorded in the state
file `<state_dir>/switch/datapath/<bridge>.json`), and the slots of removed
flows are zeroed only after the swap.

Port numbers reach devices through maps (dp_ports, dp_ifports), so a
recreated veth or a renumbered port needs a map update, not a recompile.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..bridge import Bridge, default_state_dir
from ..flows import Flow, FlowStats, FlowTable
from . import contract as C
from . import tc, tcx
from .build import build
from .compiler import Program, assign_slots, compile_table
from .libbpf import BpfError, BpfObject, Map, obj_get, pin, unpin
from .verifier import explain

DEFAULT_PIN_ROOT = "/sys/fs/bpf/appliance"
SHARED_MAPS = {
    # name: (key size, value size, per-CPU)
    "dp_ports": (4, C.PORT.size, False),
    "dp_ifports": (4, 4, False),
    "dp_flood_ports": (4, C.FLOOD_SLOT.size, False),
    "dp_stats": (4, C.STATS.size, True),
    "dp_misc": (4, 8, True),
    "dp_events": (0, 0, False),
}


def flow_identity(flow: Flow) -> str:
    """A flow's identity as text (OVS: table, priority, match), for the state file."""
    return f"{flow.table}|{flow.priority}|{flow.match.to_ofctl()}"


def ensure_bpffs(path: str) -> None:
    """Make sure `path` lives on a BPF filesystem (mount /sys/fs/bpf if needed)."""
    root = "/sys/fs/bpf"
    if path.startswith(root + "/") or path == root:
        if subprocess.run(["mountpoint", "-q", root]).returncode != 0:
            subprocess.run(["mount", "-t", "bpf", "bpf", root], check=True)
    os.makedirs(path, exist_ok=True)


@dataclass
class ApplyResult:
    program: Program
    object_path: Path
    devices: dict[str, int]          # device name -> ifindex the program is on
    added: int = 0
    removed: int = 0
    hook: str = "tc"                 # "tcx" or "tc": how the program is attached


@dataclass
class _State:
    slots: dict[str, int] = field(default_factory=dict)      # flow identity -> slot
    devices: list[str] = field(default_factory=list)
    object_path: str = ""


class Datapath:
    """The compiled datapath of bridge `name`, on devices in `netns`.

    `devices` maps port name -> interface name (default: the same name);
    `local_device` is the interface LOCAL delivers to (e.g. the Linux
    bridge the ports are enslaved to).
    """

    def __init__(self, name: str, netns: str | None = None,
                 pin_root: str = DEFAULT_PIN_ROOT, state_dir: str | Path | None = None,
                 build_dir: str | Path | None = None, local_device: str | None = None,
                 peer_redirect: bool = True):
        self.name = name
        self.netns = netns
        self.pin_dir = os.path.join(pin_root, name)
        state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.state_path = state_dir / "switch" / "datapath" / f"{name}.json"
        self.build_dir = Path(build_dir) if build_dir else state_dir / "switch" / "datapath" / "build"
        self.local_device = local_device
        self.peer_redirect = peer_redirect
        self._obj: BpfObject | None = None

    # -- state ---------------------------------------------------------------

    def _load_state(self) -> _State:
        if not self.state_path.exists():
            return _State()
        data = json.loads(self.state_path.read_text())
        return _State(dict(data.get("slots", {})), list(data.get("devices", [])),
                      data.get("object_path", ""))

    def _save_state(self, st: _State) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.state_path.parent, prefix=".dp.")
        with os.fdopen(fd, "w") as fh:
            json.dump({"slots": st.slots, "devices": st.devices,
                       "object_path": st.object_path}, fh, indent=1)
        os.replace(tmp, self.state_path)

    def _pinned(self) -> dict[str, int]:
        fds = {}
        for name in SHARED_MAPS:
            path = os.path.join(self.pin_dir, name)
            if os.path.exists(path):
                fds[name] = obj_get(path)
        return fds

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
        obj_path = build(program.source, self.build_dir)
        ensure_bpffs(self.pin_dir)
        reuse = self._pinned()
        try:
            obj = BpfObject(str(obj_path), ("dp_ingress",), reuse=reuse)
        except BpfError as e:
            raise explain(e, program, obj_path, bridge.port_names) from None
        finally:
            for fd in reuse.values():
                os.close(fd)
        try:
            for image in program.tables:
                if image.map_name:
                    m = Map(obj.map_fd(image.map_name), image.key_size, 16)
                    for key, val in image.entries:
                        m.update(key, val)
            maps = {n: Map(obj.map_fd(n), k, v, pc) for n, (k, v, pc) in SHARED_MAPS.items()}
            with tc.rtnl(self.netns) as ipr:
                bound = self._bind_ports(ipr, bridge, devices or {}, maps)
                # Pin the shared maps the first time, before any swap.
                for name, m in maps.items():
                    path = os.path.join(self.pin_dir, name)
                    if not os.path.exists(path):
                        pin(m.fd, path)
                # The swap: one link update (or tc replace) per device,
                # old program until then.
                prog_fd = obj.prog_fd("dp_ingress")
                hook = "tcx" if tcx.supported() else "tc"
                for dev, index in bound.items():
                    link = tcx.pin_path(self.pin_dir, dev)
                    if hook == "tcx":
                        tcx.attach(self.netns, link, index, prog_fd)
                        # A filter from an earlier tc attach goes only now,
                        # after the link runs the program.
                        if tc.ours(ipr, index):
                            tc.detach(ipr, index)
                    else:
                        tc.attach(ipr, index, prog_fd)
                        tcx.detach(link)
                st = self._load_state()
                for dev in st.devices:
                    if dev not in bound:
                        tcx.detach(tcx.pin_path(self.pin_dir, dev))
                        try:
                            tc.detach(ipr, tc.ifindex(ipr, dev))
                        except LookupError:
                            pass
            prog_pin = os.path.join(self.pin_dir, "prog")
            unpin(prog_pin)
            pin(prog_fd, prog_pin)
            # Counters of flows that are gone: zero them for the next owner.
            new_ids = {flow_identity(f): program.slots[f.key] for f in bridge.flows}
            freed = set(st.slots.values()) - set(new_ids.values())
            zero = bytes(len(maps["dp_stats"].lookup(C.U32.pack(0)) or b""))
            for slot in freed:
                maps["dp_stats"].update(C.U32.pack(slot), zero)
            added = len(set(new_ids) - set(st.slots))
            removed = len(set(st.slots) - set(new_ids))
            self._save_state(_State(new_ids, sorted(bound), str(obj_path)))
        except BaseException:
            obj.close()
            raise
        if self._obj is not None:
            self._obj.close()
        self._obj = obj
        return ApplyResult(program, obj_path, bound, added, removed, hook)

    def _bind_ports(self, ipr, bridge: Bridge, devices: dict[str, str],
                    maps: dict[str, Map]) -> dict[str, int]:
        """Point dp_ports/dp_ifports/dp_flood_ports at the devices that exist now."""
        bound: dict[str, int] = {}
        entries: list[tuple[int, int, int]] = []     # (ofport, ifindex, flags)
        for pname, number in sorted(bridge.ports.items(), key=lambda kv: kv[1]):
            dev = devices.get(pname, pname)
            found = ipr.link_lookup(ifname=dev)
            if not found:
                continue
            index = found[0]
            bound[dev] = index
            entries.append((number, index, self._port_flags(ipr, index)))
        if self.local_device:
            found = ipr.link_lookup(ifname=self.local_device)
            if found:
                entries.append((C.OFPP_LOCAL, found[0], C.PORT_INGRESS))
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

    def _port_flags(self, ipr, index: int) -> int:
        if not self.peer_redirect:
            return 0
        link = ipr.get_links(index)[0]
        info = link.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info else None
        # A veth whose peer is in another namespace: redirect straight into it.
        if kind == "veth" and link.get_attr("IFLA_LINK_NETNSID") is not None:
            return C.PORT_PEER
        return 0

    # -- reading ---------------------------------------------------------------

    def flow_stats(self, table: FlowTable) -> dict[tuple, FlowStats]:
        """n_packets/n_bytes per flow (Flow.key), summed over CPUs."""
        st = self._load_state()
        path = os.path.join(self.pin_dir, "dp_stats")
        if not st.slots or not os.path.exists(path):
            return {}
        m = Map(obj_get(path), 4, C.STATS.size, percpu=True, owned=True)
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
                out[f.key] = FlowStats(pk, by)
            return out
        finally:
            m.close()

    def misc(self) -> dict[str, int]:
        path = os.path.join(self.pin_dir, "dp_misc")
        if not os.path.exists(path):
            return {}
        m = Map(obj_get(path), 4, 8, percpu=True, owned=True)
        try:
            def total(i):
                return sum(C.U64.unpack(v)[0] for v in m.percpu_values(C.U32.pack(i)))
            return {"loop_drops": total(C.MISC_LOOP_DROPS),
                    "event_drops": total(C.MISC_EVENT_DROPS)}
        finally:
            m.close()

    def slots(self) -> dict[str, int]:
        """Flow identity -> counter slot of the program that runs now."""
        return dict(self._load_state().slots)

    def events_fd(self) -> int:
        """An fd of the controller ring buffer (caller closes it)."""
        return obj_get(os.path.join(self.pin_dir, "dp_events"))

    def attached(self) -> bool:
        return os.path.exists(os.path.join(self.pin_dir, "prog"))

    # -- detach ----------------------------------------------------------------

    def detach(self) -> None:
        """Remove every link, filter, qdisc, pin and map of this bridge's datapath."""
        st = self._load_state()
        for link in tcx.pinned(self.pin_dir):
            tcx.detach(link)
        with tc.rtnl(self.netns) as ipr:
            for dev in st.devices:
                try:
                    tc.detach(ipr, tc.ifindex(ipr, dev))
                except LookupError:
                    pass
        for name in list(SHARED_MAPS) + ["prog"]:
            unpin(os.path.join(self.pin_dir, name))
        # The bridge's directory, then the pin root once no other datapath uses it.
        for directory in (self.pin_dir, os.path.dirname(self.pin_dir)):
            try:
                os.rmdir(directory)
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ENOTEMPTY):
                    raise
                break
        if self._obj is not None:
            self._obj.close()
            self._obj = None
        if self.state_path.exists():
            self.state_path.unlink()
