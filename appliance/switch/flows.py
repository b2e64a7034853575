"""Flows as data: `Match`, the actions, `Flow` and `FlowTable`.

These are the typed objects the flow text parses into (see `parser.py`) and
prints back from, in the syntax `ovs-ofctl dump-flows` uses. They are the
contract between the reference classifier (`classifier.py`) and the compiled
datapath: both read the same `FlowTable`.

Normalisation follows Open vSwitch: a masked value keeps only the bits of
its mask (`nw_src=10.1.2.3/8` is `nw_src=10.0.0.0/8`), a zero mask removes
the field, a full mask is stored as the field's full mask and printed
without `/mask`.

Ports are OpenFlow port numbers (ints). Names (`in_port=uplink`) are
resolved by the parser through a port map (name -> number) and printed back
through the reverse map; the reserved ports have their OpenFlow numbers
(`OFPP_LOCAL` = 0xfffe ...).

Equal-priority overlaps: OpenFlow leaves the winner undefined. Here the
rule is **insertion order**: among matching flows of equal priority in one
table, the one added first wins. `FlowTable.add` of a flow whose table,
priority and match equal an existing flow's replaces that flow in place
(its position, hence its tie-break rank, is kept), as `ovs-ofctl add-flow`
replaces it. Lint reports every such overlap so a table never depends on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping

from . import fields as F
from .fields import FIELD_BY_NAME, FIELD_ORDER, FIELDS
from .subfield import SubField

# OpenFlow 1.0 reserved port numbers (as OVS uses them internally).
OFPP_MAX = 0xFF00
OFPP_IN_PORT = 0xFFF8
OFPP_TABLE = 0xFFF9
OFPP_NORMAL = 0xFFFA
OFPP_FLOOD = 0xFFFB
OFPP_ALL = 0xFFFC
OFPP_CONTROLLER = 0xFFFD
OFPP_LOCAL = 0xFFFE
OFPP_NONE = 0xFFFF

RESERVED_PORTS: dict[str, int] = {
    "IN_PORT": OFPP_IN_PORT, "NORMAL": OFPP_NORMAL, "FLOOD": OFPP_FLOOD,
    "ALL": OFPP_ALL, "CONTROLLER": OFPP_CONTROLLER, "LOCAL": OFPP_LOCAL,
    "NONE": OFPP_NONE,
}
RESERVED_NAMES: dict[int, str] = {v: k for k, v in RESERVED_PORTS.items()}

DEFAULT_PRIORITY = 32768
MAX_PRIORITY = 65535
N_TABLES = 255


def format_port(port: int, port_names: Mapping[int, str] | None = None) -> str:
    """A port as dump-flows prints it: reserved name, bridge name, or number."""
    if port in RESERVED_NAMES:
        return RESERVED_NAMES[port]
    if port_names and port in port_names:
        return port_names[port]
    return str(port)


# --------------------------------------------------------------------- match

class Match:
    """A set of (field -> value/mask), normalised as Open vSwitch does.

    Immutable and hashable. ``values[name] & ~masks[name] == 0`` always;
    a field absent from ``masks`` is wildcarded. Build it through the parser
    or ``Match.from_fields(nw_src=(value, mask), tp_dst=53, ...)``.
    """

    __slots__ = ("values", "masks", "_key")

    def __init__(self, values: Mapping[str, int] | None = None,
                 masks: Mapping[str, int] | None = None):
        vals: dict[str, int] = {}
        msks: dict[str, int] = {}
        for name, value in (values or {}).items():
            fld = FIELD_BY_NAME[name]
            mask = fld.full_mask if masks is None or name not in masks else masks[name]
            mask &= fld.full_mask
            if mask == 0:
                continue  # OVS drops a fully wildcarded field
            vals[name] = value & mask
            msks[name] = mask
        # Sorted in print order so equal matches compare and hash equal.
        order = sorted(vals, key=FIELD_ORDER.__getitem__)
        self.values = {k: vals[k] for k in order}
        self.masks = {k: msks[k] for k in order}
        self._key = tuple((k, self.values[k], self.masks[k]) for k in order)

    @classmethod
    def from_fields(cls, **kw: int | tuple[int, int]) -> "Match":
        values, masks = {}, {}
        for k, v in kw.items():
            if isinstance(v, tuple):
                values[k], masks[k] = v
            else:
                values[k] = v
        return cls(values, masks)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Match) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"Match({self.to_ofctl()!r})"

    def __contains__(self, name: str) -> bool:
        return name in self.masks

    def __len__(self) -> int:
        return len(self.masks)

    @property
    def signature(self) -> tuple[tuple[str, int], ...]:
        """The mask shape (field, mask) pairs: flows sharing it share a subtable."""
        return tuple((k, self.masks[k]) for k in self.masks)

    def get(self, name: str) -> tuple[int, int] | None:
        if name not in self.masks:
            return None
        return self.values[name], self.masks[name]

    def matches(self, packet_fields: Mapping[str, int]) -> bool:
        """Whether a packet (canonical field -> int, absent = 0) matches."""
        for name, mask in self.masks.items():
            if packet_fields.get(name, 0) & mask != self.values[name]:
                return False
        return True

    def overlaps(self, other: "Match") -> bool:
        """Whether some packet could match both (ignoring prerequisites' semantics)."""
        for name, mask in self.masks.items():
            if name in other.masks:
                common = mask & other.masks[name]
                if (self.values[name] ^ other.values[name]) & common:
                    return False
        return True

    def covers(self, other: "Match") -> bool:
        """Whether every packet matching `other` also matches `self`."""
        for name, mask in self.masks.items():
            omask = other.masks.get(name, 0)
            if mask & ~omask:
                return False
            if (other.values[name] & mask) != self.values[name]:
                return False
        return True

    # -- printing ------------------------------------------------------------

    def to_ofctl(self, port_names: Mapping[int, str] | None = None) -> str:
        """The match as dump-flows prints it (no priority), e.g. 'udp,tp_dst=53'."""
        parts: list[str] = []
        vals, masks = self.values, self.masks
        dl_type = vals.get("dl_type") if "dl_type" in masks else None
        nw_proto = vals.get("nw_proto") if "nw_proto" in masks else None
        shorthand = None
        if dl_type is not None:
            shorthand = F.SHORTHAND_FOR.get((dl_type, nw_proto))
            proto_in_shorthand = shorthand is not None and nw_proto is not None
            if shorthand is None:
                shorthand = F.SHORTHAND_FOR.get((dl_type, None))
                proto_in_shorthand = False
            if shorthand:
                parts.append(shorthand)
        else:
            proto_in_shorthand = False
        for name in vals:
            if name == "dl_type" and shorthand:
                continue
            if name == "nw_proto" and proto_in_shorthand:
                continue
            parts.append(_format_field(name, vals[name], masks[name], port_names))
        return ",".join(parts)


def _format_field(name: str, value: int, mask: int,
                  port_names: Mapping[int, str] | None) -> str:
    fld = FIELD_BY_NAME[name]
    full = mask == fld.full_mask
    kind = fld.kind
    if name == "vlan_tci":
        return _format_vlan_tci(value, mask)
    if kind == F.PORT:
        return f"in_port={format_port(value, port_names)}"
    if kind == F.MAC:
        text = F.format_mac(value)
        return f"{name}={text}" if full else f"{name}={text}/{F.format_mac(mask)}"
    if kind == F.IPV4:
        text = F.format_ipv4(value)
        if full:
            return f"{name}={text}"
        plen = F.prefix_len(mask, 32)
        return f"{name}={text}/{plen if plen is not None else F.format_ipv4(mask)}"
    if kind == F.IPV6:
        text = F.format_ipv6(value)
        if full:
            return f"{name}={text}"
        plen = F.prefix_len(mask, 128)
        return f"{name}={text}/{plen if plen is not None else F.format_ipv6(mask)}"
    if kind == F.LABEL:
        return f"{name}=0x{value:05x}" if full else f"{name}=0x{value:05x}/0x{mask:05x}"
    if kind == F.HEX:
        return f"{name}=0x{value:04x}" if full else f"{name}=0x{value:04x}/0x{mask:04x}"
    if kind == F.HEXN:
        text = f"{name}={F.format_hexn(value)}"
        return text if full else f"{text}/{F.format_hexn(mask)}"
    return f"{name}={value}" if full else f"{name}=0x{value:x}/0x{mask:x}"


def _format_vlan_tci(value: int, mask: int) -> str:
    # Mirrors OVS match_format: dl_vlan / dl_vlan_pcp when the mask is
    # exactly "tag present + whole VID and/or whole PCP".
    vid_mask = mask & F.VLAN_VID_MASK
    pcp_mask = mask & F.VLAN_PCP_MASK
    if (mask & F.VLAN_CFI and value & F.VLAN_CFI
            and vid_mask in (0, F.VLAN_VID_MASK) and pcp_mask in (0, F.VLAN_PCP_MASK)
            and (vid_mask or pcp_mask)):
        out = []
        if vid_mask:
            out.append(f"dl_vlan={value & F.VLAN_VID_MASK}")
        if pcp_mask:
            out.append(f"dl_vlan_pcp={value >> 13}")
        return ",".join(out)
    if mask == 0xFFFF:
        return f"vlan_tci=0x{value:04x}"
    return f"vlan_tci=0x{value:04x}/0x{mask:04x}"


# ------------------------------------------------------------------- actions

class Action:
    """Base of the actions. Each prints itself in dump-flows syntax."""

    __slots__ = ()

    def to_ofctl(self, port_names: Mapping[int, str] | None = None) -> str:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Output(Action):
    """output:PORT for a regular port (reserved ports have their own class).
    `max_len` only limits what a controller would get; kept for printing."""
    port: int
    max_len: int | None = None

    def to_ofctl(self, port_names=None):
        if self.max_len is not None:
            return f"output(port={format_port(self.port, port_names)},max_len={self.max_len})"
        return f"output:{format_port(self.port, port_names)}"


@dataclass(frozen=True, slots=True)
class OutputField(Action):
    """output:FIELD[bits]: to the port number a field holds (as output:PORT)."""
    src: SubField

    def to_ofctl(self, port_names=None):
        return f"output:{self.src.to_text()}"


@dataclass(frozen=True, slots=True)
class Note(Action):
    """note:HEX.HEX...: a comment carried with the flow; does nothing."""
    text: str

    def to_ofctl(self, port_names=None):
        return f"note:{self.text}"


@dataclass(frozen=True, slots=True)
class Exit(Action):
    """exit: stop the whole pipeline here (outputs so far stand)."""

    def to_ofctl(self, port_names=None):
        return "exit"


@dataclass(frozen=True, slots=True)
class Normal(Action):
    """Hand the packet to the L2 learning switch (a Linux bridge in the datapath)."""

    def to_ofctl(self, port_names=None):
        return "NORMAL"


@dataclass(frozen=True, slots=True)
class Flood(Action):
    """Every port except the input port (OVS: and except no-flood ports)."""

    def to_ofctl(self, port_names=None):
        return "FLOOD"


@dataclass(frozen=True, slots=True)
class All(Action):
    """Every port except the input port."""

    def to_ofctl(self, port_names=None):
        return "ALL"


@dataclass(frozen=True, slots=True)
class InPort(Action):
    """Back out of the input port (the one way to send to in_port)."""

    def to_ofctl(self, port_names=None):
        return "IN_PORT"


@dataclass(frozen=True, slots=True)
class Local(Action):
    """The bridge's own port (OFPP_LOCAL)."""

    def to_ofctl(self, port_names=None):
        return "LOCAL"


@dataclass(frozen=True, slots=True)
class Drop(Action):
    """The empty action list, spelled `drop`. Only ever alone."""

    def to_ofctl(self, port_names=None):
        return "drop"


@dataclass(frozen=True, slots=True)
class Controller(Action):
    """Report the packet to userspace (OVS: send to the controller)."""
    max_len: int = 65535

    def to_ofctl(self, port_names=None):
        return f"CONTROLLER:{self.max_len}"


# The legacy OpenFlow 1.0 spellings of set_field, as dump-flows prints them.
MOD_ACTIONS: dict[str, str] = {
    "mod_dl_src": "dl_src", "mod_dl_dst": "dl_dst", "mod_nw_src": "nw_src",
    "mod_nw_dst": "nw_dst", "mod_tp_src": "tp_src", "mod_tp_dst": "tp_dst",
    "mod_nw_tos": "nw_tos", "mod_nw_ttl": "nw_ttl",
}
_MOD_FOR = {v: k for k, v in MOD_ACTIONS.items()}


def format_value(name: str, value: int) -> str:
    """A field value as set_field/learn print it (MACs and addresses dotted)."""
    fld = F.FIELD_BY_NAME.get(name)
    kind = fld.kind if fld is not None else F.INT
    if kind == F.MAC:
        return F.format_mac(value)
    if kind == F.IPV4:
        return F.format_ipv4(value)
    if kind == F.IPV6:
        return F.format_ipv6(value)
    if kind in (F.HEX, F.HEXN, F.LABEL):
        return f"{value:#x}"
    return str(value)


@dataclass(frozen=True, slots=True)
class SetField(Action):
    """Rewrite a field (canonical or a view such as vlan_vid, see
    `subfield.py`): set_field:V[/M]->F, and the mod_* spellings. Like OVS,
    only when the packet has the field (its prerequisites hold)."""
    field: str
    value: int
    mask: int | None = None
    spelling: str = field(default="", compare=False)

    def to_ofctl(self, port_names=None):
        mod = _MOD_FOR.get(self.field)
        if mod and self.mask is None and (self.spelling.startswith("mod_")
                                          or self.field in ("dl_src", "dl_dst")):
            return f"{mod}:{format_value(self.field, self.value)}"
        text = format_value(self.field, self.value)
        if self.mask is not None:
            text += "/" + format_value(self.field, self.mask)
        return f"set_field:{text}->{self.field}"


@dataclass(frozen=True, slots=True)
class Load(Action):
    """load:VALUE->DST[bits]: write a constant into some bits of a field."""
    dst: SubField
    value: int

    def to_ofctl(self, port_names=None):
        return f"load:{self.value:#x}->{self.dst.to_text()}"


@dataclass(frozen=True, slots=True)
class Move(Action):
    """move:SRC[bits]->DST[bits]: copy bits from one field to another."""
    src: SubField
    dst: SubField

    def to_ofctl(self, port_names=None):
        return f"move:{self.src.to_text()}->{self.dst.to_text()}"


@dataclass(frozen=True, slots=True)
class ModVlanVid(Action):
    """Set the VLAN VID; like OVS, push a tag (PCP 0) if there is none."""
    vid: int

    def to_ofctl(self, port_names=None):
        return f"mod_vlan_vid:{self.vid}"


@dataclass(frozen=True, slots=True)
class ModVlanPcp(Action):
    """Set the VLAN PCP; like OVS, push a tag (VID 0) if there is none."""
    pcp: int

    def to_ofctl(self, port_names=None):
        return f"mod_vlan_pcp:{self.pcp}"


@dataclass(frozen=True, slots=True)
class PushVlan(Action):
    """push_vlan:ETHERTYPE: a new outer tag, VID 0 and PCP 0 (set_field on
    vlan_vid gives it its VLAN); an existing tag becomes the inner one."""
    ethertype: int = F.ETH_TYPE_VLAN

    def to_ofctl(self, port_names=None):
        return f"push_vlan:{self.ethertype:#x}"


@dataclass(frozen=True, slots=True)
class StripVlan(Action):
    """Pop the outer VLAN tag if there is one (strip_vlan, pop_vlan)."""
    spelling: str = field(default="strip_vlan", compare=False)

    def to_ofctl(self, port_names=None):
        return self.spelling


@dataclass(frozen=True, slots=True)
class DecTtl(Action):
    """Decrement the IP TTL; at 1 or 0 the packet goes no further in this flow."""

    def to_ofctl(self, port_names=None):
        return "dec_ttl"


@dataclass(frozen=True, slots=True)
class LearnSpec:
    """One item of learn(): a match (`dst` = packet's `src` or `value`),
    a load into the new flow's actions, or an output to a field's port."""
    kind: str                       # "match", "load", "output"
    dst: SubField | None = None
    src: SubField | None = None
    value: int | None = None
    text: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class Learn(Action):
    """learn(...): add (or refresh) a flow built from this packet. Like
    OVS's ofproto/trace, a trace shows it; only a trace with -generate
    (and the datapath) changes the table."""
    table: int = 0
    priority: int = DEFAULT_PRIORITY
    idle_timeout: int = 0
    hard_timeout: int = 0
    cookie: int = 0
    specs: tuple[LearnSpec, ...] = ()
    text: str = field(default="", compare=False)

    def to_ofctl(self, port_names=None):
        return f"learn({self.text})"


@dataclass(frozen=True, slots=True)
class Resubmit(Action):
    """Look the packet up in `table` (None: the current table) as if it came
    from `port` (None: its in_port), run that flow's actions, then go on."""
    port: int | None = None
    table: int | None = None

    def to_ofctl(self, port_names=None):
        port = "" if self.port is None else format_port(self.port, port_names)
        if self.table is None:
            return f"resubmit:{port}"
        return f"resubmit({port},{self.table})"


@dataclass(frozen=True, slots=True)
class GotoTable(Action):
    """OpenFlow 1.1+ instruction: continue in a later table. Always last."""
    table: int

    def to_ofctl(self, port_names=None):
        return f"goto_table:{self.table}"


def format_actions(actions: Iterable[Action], port_names=None) -> str:
    acts = list(actions)
    if not acts:
        return "drop"
    return ",".join(a.to_ofctl(port_names) for a in acts)


# ---------------------------------------------------------------------- flow

@dataclass(frozen=True)
class FlowStats:
    """Counters dump-flows shows; the datapath fills them (the classifier does not)."""
    n_packets: int = 0
    n_bytes: int = 0
    duration: float = 0.0


@dataclass(frozen=True)
class Flow:
    """One flow entry. `actions` is empty for `drop` (as OpenFlow has it).

    Identity (for replace and delete --strict) is (table, priority, match).
    """

    match: Match = field(default_factory=Match)
    actions: tuple[Action, ...] = ()
    table: int = 0
    priority: int = DEFAULT_PRIORITY
    cookie: int = 0
    idle_timeout: int = 0
    hard_timeout: int = 0
    # Where the flow came from and what OVS would have normalised in its
    # text; for errors and lint only, not part of the flow's identity.
    line: int | None = field(default=None, compare=False, repr=False)
    notes: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def key(self) -> tuple[int, int, Match]:
        return (self.table, self.priority, self.match)

    def to_ofctl(self, port_names: Mapping[int, str] | None = None,
                 stats: FlowStats | None = None) -> str:
        """The flow in dump-flows syntax.

        Without `stats` it is what `dump-flows --no-stats` prints (cookie and
        table only when not zero); with `stats` the counters are included.
        The result parses back to an equal Flow.
        """
        head: list[str] = []
        if stats is not None or self.cookie:
            head.append(f"cookie=0x{self.cookie:x}")
        if stats is not None:
            head.append(f"duration={stats.duration:.3f}s")
        if stats is not None or self.table:
            head.append(f"table={self.table}")
        if stats is not None:
            head.append(f"n_packets={stats.n_packets}")
            head.append(f"n_bytes={stats.n_bytes}")
        if self.idle_timeout:
            head.append(f"idle_timeout={self.idle_timeout}")
        if self.hard_timeout:
            head.append(f"hard_timeout={self.hard_timeout}")
        body: list[str] = []
        if self.priority != DEFAULT_PRIORITY:
            body.append(f"priority={self.priority}")
        m = self.match.to_ofctl(port_names)
        if m:
            body.append(m)
        text = ", ".join(head)
        if head:
            text += ", "
        text += ",".join(body)
        if text and not text.endswith(" "):
            text += " "
        return text + "actions=" + format_actions(self.actions, port_names)

    def __str__(self) -> str:
        return self.to_ofctl()


class FlowTable:
    """All flows of a bridge, every OpenFlow table, in insertion order.

    The order is the tie-break between equal-priority overlapping flows
    (the first added wins). `version` increases on every change so derived
    indexes (the classifier's) know when to rebuild.
    """

    def __init__(self, flows: Iterable[Flow] = ()):
        self._flows: list[Flow] = []
        self._index: dict[tuple[int, int, Match], int] = {}
        self.version = 0
        for f in flows:
            self.add(f)

    def __iter__(self) -> Iterator[Flow]:
        return iter(self._flows)

    def __len__(self) -> int:
        return len(self._flows)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FlowTable) and self._flows == other._flows

    def __repr__(self) -> str:
        return f"FlowTable({len(self._flows)} flows)"

    @property
    def flows(self) -> list[Flow]:
        return list(self._flows)

    def tables(self) -> list[int]:
        return sorted({f.table for f in self._flows})

    def in_table(self, table: int) -> list[Flow]:
        return [f for f in self._flows if f.table == table]

    def add(self, flow: Flow) -> None:
        """Add a flow; one with the same table, priority and match is replaced in place."""
        at = self._index.get(flow.key)
        if at is None:
            self._index[flow.key] = len(self._flows)
            self._flows.append(flow)
        else:
            self._flows[at] = flow
        self.version += 1

    def extend(self, flows: Iterable[Flow]) -> None:
        for f in flows:
            self.add(f)

    def delete(self, match: Match | None = None, table: int | None = None,
               priority: int | None = None, strict: bool = False,
               cookie: int = 0, cookie_mask: int = 0) -> int:
        """del-flows: returns how many flows went.

        Non-strict (OVS's default): every flow whose match is at least as
        specific as `match` (i.e. `match` covers it) in `table` (None: all).
        Strict: only the flow with exactly this match and priority.
        `cookie`/`cookie_mask`: only flows whose cookie has these bits.
        """
        match = match or Match()
        keep: list[Flow] = []
        for f in self._flows:
            if (table is not None and f.table != table) or f.cookie & cookie_mask != cookie:
                keep.append(f)
                continue
            if strict:
                prio = DEFAULT_PRIORITY if priority is None else priority
                hit = f.match == match and f.priority == prio
            else:
                hit = match.covers(f.match)
            if not hit:
                keep.append(f)
        removed = len(self._flows) - len(keep)
        if removed:
            self._flows = keep
            self._index = {f.key: i for i, f in enumerate(keep)}
            self.version += 1
        return removed

    def clear(self) -> None:
        self.delete()

    def sorted_for_dump(self) -> list[Flow]:
        """The order dump-flows prints: by table, then priority high to low,
        then insertion order (OVS's own order within a priority is unspecified)."""
        pos = {id(f): i for i, f in enumerate(self._flows)}
        return sorted(self._flows, key=lambda f: (f.table, -f.priority, pos[id(f)]))

    def to_ofctl(self, port_names: Mapping[int, str] | None = None,
                 stats: Mapping[tuple, FlowStats] | None = None) -> str:
        """The whole table as `dump-flows` lines (one leading space, like OVS).

        `stats` maps a flow's key to its counters; this is the hook the
        datapath uses to show n_packets/n_bytes.
        """
        lines = []
        for f in self.sorted_for_dump():
            st = stats.get(f.key) if stats is not None else None
            if stats is not None and st is None:
                st = FlowStats()
            lines.append(" " + f.to_ofctl(port_names, st))
        return "\n".join(lines) + ("\n" if lines else "")
