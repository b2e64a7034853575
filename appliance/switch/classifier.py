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
- Outputs to ports that are not on the bridge are skipped (recorded in
  `nonexistent`), as OVS's "Nonexistent output port".
- `NORMAL` is the L2 learning switch of `normal.py` (flood when the
  destination is unknown, the learned port otherwise), over the bridge's
  MAC table; without a bridge it stays the symbolic OFPP_NORMAL output.
  `CONTROLLER` is recorded as an output to OFPP_CONTROLLER.
- `set_field` (and the mod_* actions) change a field only when the packet
  has it (its prerequisites hold), as OVS does; `push_vlan` makes the old
  tag the inner one (`vlan_tci1`) and a new outer tag with VID 0, PCP 0.
- `learn` builds its flow (in `learned`); the table changes only with
  `generate`, as `ofproto/trace -generate` (a plain trace has no side effects).
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
from .normal import decide
from .packet import Packet
from .subfield import packet_has, write

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
    stopped: bool = False    # dec_ttl at TTL 1 ended the flow's actions
    exited: bool = False     # the exit action ended the pipeline
    nonexistent: list[int] = field(default_factory=list)  # outputs to ports not on the bridge
    learned: list[Flow] = field(default_factory=list)     # flows learn() built
    # index in `actions` -> what OVS's trace says under that action
    notes: dict[int, str] = field(default_factory=dict)

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
             start_table: int = 0, generate: bool = False) -> ClassifyResult:
    """Run `packet` through `table` from `start_table`.

    `generate` allows side effects, as `ofproto/trace -generate` and real
    traffic have them: NORMAL learns the source MAC into the bridge's MAC
    table and `learn` adds its flow to `table`.
    """
    cls = classifier_for(table)
    res = ClassifyResult()
    ctx = _Ctx(cls, table, res, bridge, generate)
    state = [packet]
    _run(ctx, start_table, state, 0)
    res.packet = state[0]
    return res


class _Ctx:
    __slots__ = ("cls", "table", "res", "bridge", "generate", "flood_ports", "known")

    def __init__(self, cls, table, res, bridge, generate):
        self.cls, self.table, self.res, self.bridge, self.generate = cls, table, res, bridge, generate
        self.flood_ports = None
        self.known = None
        if bridge is not None:
            self.flood_ports = sorted(bridge.ports.values()) + [FL.OFPP_LOCAL]
            self.known = set(self.flood_ports)


def _note(res: ClassifyResult, text: str) -> None:
    res.notes[len(res.actions) - 1] = text


def _out(ctx: _Ctx, port: int, pkt: Packet, in_port: int) -> None:
    res = ctx.res
    if port == in_port:
        res.skipped.append(port)
        _note(res, ">> skipping output to input port")
    elif ctx.known is not None and port not in ctx.known:
        res.nonexistent.append(port)
        _note(res, ">> Nonexistent output port")
    else:
        res.outputs.append(OutputEvent(port, pkt))


def _run(ctx: _Ctx, table: int, state: list[Packet], depth: int,
         lookup_port: int | None = None) -> None:
    res = ctx.res
    pkt = state[0]
    looked = pkt if lookup_port is None else pkt.replace(in_port=lookup_port)
    flow = ctx.cls.lookup(table, looked.fields)
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
            _out(ctx, act.port, pkt, in_port)
        elif t is FL.SetField:
            if packet_has(act.field, pkt.fields):
                f = dict(pkt.fields)
                write(f, act.field, act.value, act.mask)
                state[0] = _changed(pkt, f)
            else:
                _note(res, f">> unmet prerequisites for {act.field}, set_field ignored")
        elif t is FL.Normal:
            res.normal = True
            _normal(ctx, pkt)
        elif t is FL.Resubmit or t is FL.GotoTable:
            if depth + 1 >= MAX_RESUBMIT_DEPTH:
                res.truncated = True
                return
            target = act.table if t is FL.GotoTable else table if act.table is None else act.table
            _run(ctx, target, state, depth + 1, None if t is FL.GotoTable else act.port)
            if res.truncated or res.exited:
                return
        elif t is FL.Flood or t is FL.All:
            if ctx.flood_ports is None:
                outputs.append(OutputEvent(FL.OFPP_FLOOD if t is FL.Flood else FL.OFPP_ALL, pkt))
            else:
                for p in ctx.flood_ports:
                    if p != in_port:
                        outputs.append(OutputEvent(p, pkt))
        elif t is FL.InPort:
            if ctx.known is not None and in_port not in ctx.known:
                res.nonexistent.append(in_port)
                _note(res, ">> Nonexistent output port")
            else:
                outputs.append(OutputEvent(in_port, pkt))
        elif t is FL.Local:
            _out(ctx, FL.OFPP_LOCAL, pkt, in_port)
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
        elif t is FL.ModVlanPcp:
            tci = pkt.fields.get("vlan_tci", 0)
            tci = (tci & ~F.VLAN_PCP_MASK & 0xFFFF) | F.VLAN_CFI | (act.pcp << 13)
            state[0] = pkt.replace(vlan_tci=tci)
        elif t is FL.PushVlan:
            state[0] = pkt.replace(vlan_tci=F.VLAN_CFI, vlan_tci1=pkt.fields.get("vlan_tci", 0))
        elif t is FL.StripVlan:
            if pkt.fields.get("vlan_tci", 0) & F.VLAN_CFI:
                state[0] = pkt.replace(vlan_tci=pkt.fields.get("vlan_tci1", 0), vlan_tci1=0)
        elif t is FL.Load or t is FL.Move:
            f = dict(pkt.fields)
            value = act.value if t is FL.Load else act.src.get(f)
            act.dst.put(f, value)
            state[0] = _changed(pkt, f)
        elif t is FL.DecTtl:
            if pkt.fields.get("dl_type") in (F.ETH_TYPE_IP, F.ETH_TYPE_IPV6):
                ttl = pkt.fields.get("nw_ttl", 0)
                if ttl <= 1:
                    _note(res, ">> TTL exceeded: the packet goes no further in this flow")
                    res.stopped = True
                    return
                state[0] = pkt.replace(nw_ttl=ttl - 1)
        elif t is FL.OutputField:
            port = act.src.get(pkt.fields)
            _note(res, f"-> output port is {port}")
            _out(ctx, port, pkt, in_port)
        elif t is FL.Exit:
            res.exited = True
            return
        elif t is FL.Note:
            pass
        elif t is FL.Learn:
            learned = learned_flow(act, pkt.fields)
            res.learned.append(learned)
            if ctx.generate:
                ctx.table.add(learned)
                ctx.cls = classifier_for(ctx.table)
        else:  # pragma: no cover - the parser produces no other action
            raise TypeError(f"unknown action {act!r}")


def _changed(pkt: Packet, f: dict[str, int]) -> Packet:
    changes = {k: v for k, v in f.items() if pkt.fields.get(k, 0) != v}
    return pkt.replace(**changes) if changes else pkt


def _normal(ctx: _Ctx, pkt: Packet) -> None:
    res = ctx.res
    macs = getattr(ctx.bridge, "macs", None)
    if macs is None:
        # No bridge, or one without a MAC table (the box's datapath, whose
        # NORMAL is the Linux bridge joining its ports): the symbolic output.
        res.outputs.append(OutputEvent(FL.OFPP_NORMAL, pkt))
        return
    d = decide(macs, pkt.fields, ctx.flood_ports, ctx.generate)
    _note(res, d.note)
    if pkt.fields.get("vlan_tci", 0) == F.VLAN_CFI:
        # A tag of VLAN 0 and priority 0 says nothing: OVS's NORMAL sends the frame untagged to a
        # port without other_config:priority-tags (the default); a priority other than 0 stays.
        pkt = pkt.replace(vlan_tci=0)
    for p in d.ports:
        res.outputs.append(OutputEvent(p, pkt))


def learned_flow(act: FL.Learn, fields: dict[str, int]) -> Flow:
    """The flow `learn` adds for a packet with these fields."""
    values: dict[str, int] = {}
    masks: dict[str, int] = {}
    actions: list[FL.Action] = []
    for spec in act.specs:
        if spec.kind == "match":
            v = spec.value if spec.src is None else spec.src.get(fields)
            probe: dict[str, int] = {}
            spec.dst.put(probe, v)
            mprobe: dict[str, int] = {}
            spec.dst.put(mprobe, -1)
            for name, m in mprobe.items():
                m &= F.FIELD_BY_NAME[name].full_mask
                if name == "vlan_tci" and spec.dst.name in ("vlan_pcp", "dl_vlan_pcp", "dl_vlan"):
                    m |= F.VLAN_CFI
                masks[name] = masks.get(name, 0) | m
                values[name] = (values.get(name, 0) & ~m) | (probe.get(name, 0) & m)
        elif spec.kind == "load":
            v = spec.value if spec.src is None else spec.src.get(fields)
            actions.append(FL.Load(spec.dst, v))
        else:
            port = spec.src.get(fields)
            actions.append(FL.Output(port) if port not in FL.RESERVED_NAMES
                           else FL.InPort() if port == FL.OFPP_IN_PORT else FL.Local())
    return Flow(match=FL.Match(values, masks), actions=tuple(actions), table=act.table,
                priority=act.priority, cookie=act.cookie, idle_timeout=act.idle_timeout,
                hard_timeout=act.hard_timeout)
