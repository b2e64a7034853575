"""The reference classifier: what a flow table does to one packet.

``classify(table, packet, bridge=None)`` looks the packet up in table 0,
runs the matched flow's actions (following `resubmit` and `goto_table`)
and returns a `ClassifyResult`: the flow matched in each lookup, the
actions executed, every output with the packet as it left, and the final
packet. This is the semantics the compiled datapath must reproduce packet
for packet.

Rules, as OpenFlow and Open vSwitch have them:

- The highest priority matching flow wins; among equal priorities the flow
  added first wins (the documented tie-break of `FlowTable`; OpenFlow
  leaves it undefined, lint reports every case).
- No matching flow (a table miss) drops the packet: no actions.
- `output` to the packet's in_port is skipped (recorded in `skipped`);
  `IN_PORT` is the way to send it back. `FLOOD`/`ALL` expand to every
  bridge port but the input port (needs `bridge`; without one they stay
  as the symbolic OFPP_FLOOD/OFPP_ALL output).
- `NORMAL` and `CONTROLLER` are recorded as outputs with their reserved
  port numbers (OFPP_NORMAL, OFPP_CONTROLLER) in sequence, and flagged in
  `normal`/`controller`; the L2 switching NORMAL does is not modelled here
  (the datapath hands the frame to a Linux bridge).
- Header rewrites apply in order and are seen by later lookups
  (`resubmit`). `resubmit(PORT,T)` uses in_port=PORT for that one lookup
  only: the flow's actions (output skipping, IN_PORT, FLOOD, later
  lookups) see the real in_port, as in OVS's xlate_table_action.
  Recursion is cut at 64 nested resubmits, as in OVS.

Speed: lookups use tuple space search, as OVS does: flows with the same
mask shape share a subtable hashed on the masked values; subtables are
visited by decreasing maximum priority and the search stops once no
remaining subtable can beat the best match found.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import fields as F
from . import flows as FL
from .flows import Flow, FlowTable
from .packet import Packet

if TYPE_CHECKING:
    from .bridge import Bridge

MAX_RESUBMIT_DEPTH = 64


@dataclass
class TableLookup:
    """One lookup: the table, the flow that matched (None: miss), the
    packet as it was looked up (in_port from `resubmit(PORT,..)`), how deep
    in resubmits it happened, and the packet's real in_port."""
    table: int
    flow: Flow | None
    packet: Packet
    depth: int = 0
    real_in_port: int = 0


@dataclass
class OutputEvent:
    """The packet leaving through `port` (an OpenFlow port number, or
    OFPP_NORMAL / OFPP_CONTROLLER / symbolic OFPP_FLOOD / OFPP_ALL)."""
    port: int
    packet: Packet


@dataclass
class ClassifyResult:
    lookups: list[TableLookup] = field(default_factory=list)
    actions: list[FL.Action] = field(default_factory=list)
    outputs: list[OutputEvent] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    packet: Packet | None = None
    normal: bool = False
    controller: bool = False
    truncated: bool = False  # resubmit recursion limit hit

    @property
    def flows(self) -> list[Flow | None]:
        """The flow matched by each lookup, in order."""
        return [lk.flow for lk in self.lookups]

    @property
    def output_ports(self) -> list[int]:
        """Real OpenFlow output ports in order (LOCAL included; NORMAL and
        CONTROLLER excluded)."""
        return [e.port for e in self.outputs
                if e.port not in (FL.OFPP_NORMAL, FL.OFPP_CONTROLLER)]

    @property
    def dropped(self) -> bool:
        return not self.outputs


class _Subtable:
    __slots__ = ("pairs", "buckets", "max_priority", "first_at_max")

    def __init__(self, signature):
        self.pairs = signature
        self.buckets: dict[tuple, tuple[int, int, Flow]] = {}
        self.max_priority = -1
        self.first_at_max = 0  # lowest insertion index among its max-priority flows


class Classifier:
    """An index of a FlowTable for fast lookups. Build once per table version."""

    def __init__(self, table: FlowTable):
        self.version = table.version
        subtables: dict[int, dict[tuple, _Subtable]] = {}
        for index, flow in enumerate(table):
            per = subtables.setdefault(flow.table, {})
            sig = flow.match.signature
            st = per.get(sig)
            if st is None:
                st = per[sig] = _Subtable(sig)
            key = tuple(flow.match.values[n] for n, _ in sig)
            # Rank: higher priority first, then earlier insertion.
            rank = (flow.priority, -index)
            old = st.buckets.get(key)
            if old is None or rank > (old[0], old[1]):
                st.buckets[key] = (flow.priority, -index, flow)
            if flow.priority > st.max_priority:
                st.max_priority, st.first_at_max = flow.priority, index
        # Visit order: highest max priority first, then earliest flow at that
        # priority, so the search can stop at the first subtable that cannot
        # beat the best hit on (priority, insertion order).
        self.tables: dict[int, list[_Subtable]] = {
            t: sorted(per.values(), key=lambda s: (-s.max_priority, s.first_at_max))
            for t, per in subtables.items()
        }

    def lookup(self, table: int, fields: dict[str, int]) -> Flow | None:
        best = None
        best_rank = (-1, 0)
        get = fields.get
        for st in self.tables.get(table, ()):
            # Every later subtable has a lower max priority, or the same one
            # with only later-added flows at it: none can win.
            if st.max_priority < best_rank[0] or (
                    st.max_priority == best_rank[0] and -st.first_at_max < best_rank[1]):
                break
            hit = st.buckets.get(tuple([get(n, 0) & m for n, m in st.pairs]))
            if hit is not None and (hit[0], hit[1]) > best_rank:
                best_rank = (hit[0], hit[1])
                best = hit[2]
        return best


def classifier_for(table: FlowTable) -> Classifier:
    """The table's index, rebuilt only when the table changed."""
    cls = getattr(table, "_classifier", None)
    if cls is None or cls.version != table.version:
        cls = Classifier(table)
        table._classifier = cls
    return cls


def classify(table: FlowTable, packet: Packet, bridge: "Bridge | None" = None,
             start_table: int = 0) -> ClassifyResult:
    """Run `packet` through `table` from `start_table`."""
    cls = classifier_for(table)
    res = ClassifyResult()
    flood_ports = None
    if bridge is not None:
        flood_ports = sorted(bridge.ports.values()) + [FL.OFPP_LOCAL]
    state = [packet]
    _run(cls, start_table, state, res, flood_ports, 0)
    res.packet = state[0]
    return res


def _run(cls: Classifier, table: int, state: list[Packet], res: ClassifyResult,
         flood_ports: list[int] | None, depth: int, lookup_port: int | None = None) -> None:
    pkt = state[0]
    looked = pkt if lookup_port is None else pkt.replace(in_port=lookup_port)
    flow = cls.lookup(table, looked.fields)
    res.lookups.append(TableLookup(table, flow, looked, depth, pkt.fields.get("in_port", 0)))
    if flow is None:
        return
    outputs = res.outputs
    for act in flow.actions:
        res.actions.append(act)
        t = type(act)
        pkt = state[0]
        in_port = pkt.fields.get("in_port", 0)
        if t is FL.Output:
            if act.port == in_port:
                res.skipped.append(act.port)
            else:
                outputs.append(OutputEvent(act.port, pkt))
        elif t is FL.SetField:
            state[0] = pkt.replace(**{act.field: act.value})
        elif t is FL.Normal:
            res.normal = True
            outputs.append(OutputEvent(FL.OFPP_NORMAL, pkt))
        elif t is FL.Resubmit or t is FL.GotoTable:
            if depth + 1 >= MAX_RESUBMIT_DEPTH:
                res.truncated = True
                return
            if t is FL.GotoTable:
                _run(cls, act.table, state, res, flood_ports, depth + 1)
                continue
            target = table if act.table is None else act.table
            _run(cls, target, state, res, flood_ports, depth + 1, act.port)
            if res.truncated:
                return
        elif t is FL.Flood or t is FL.All:
            if flood_ports is None:
                outputs.append(OutputEvent(FL.OFPP_FLOOD if t is FL.Flood else FL.OFPP_ALL, pkt))
            else:
                for p in flood_ports:
                    if p != in_port:
                        outputs.append(OutputEvent(p, pkt))
        elif t is FL.InPort:
            outputs.append(OutputEvent(in_port, pkt))
        elif t is FL.Local:
            if in_port == FL.OFPP_LOCAL:
                res.skipped.append(FL.OFPP_LOCAL)
            else:
                outputs.append(OutputEvent(FL.OFPP_LOCAL, pkt))
        elif t is FL.Controller:
            res.controller = True
            outputs.append(OutputEvent(FL.OFPP_CONTROLLER, pkt))
        elif t is FL.ModVlanVid:
            tci = pkt.fields.get("vlan_tci", 0)
            if tci & F.VLAN_CFI:
                tci = (tci & ~F.VLAN_VID_MASK) | act.vid
            else:
                tci = F.VLAN_CFI | act.vid
            state[0] = pkt.replace(vlan_tci=tci)
        elif t is FL.StripVlan:
            if pkt.fields.get("vlan_tci", 0):
                state[0] = pkt.replace(vlan_tci=0)
        else:  # pragma: no cover - the parser produces no other action
            raise TypeError(f"unknown action {act!r}")
