"""Compile a `FlowTable` into the C of an eBPF tc program (pure: no I/O).

The output is one C file that includes `c/dp_runtime.h` (parser, maps,
output machinery) and adds one function per OpenFlow table.  Two lookup
structures, chosen per table:

- **linear**: the flows as `if` statements in rank order (priority high to
  low, then insertion order, the tie-break of `FlowTable`); the first that
  matches wins.  Cheapest for the handful of flows a home network has.
- **tuple**: Open vSwitch's tuple space search.  Flows with the same mask
  share a "tuple"; all tuples of a table live in one BPF hash map keyed by
  (tuple id, the packet's fields under that mask).  Tuples are probed in
  order of their best rank and the probe stops as soon as no remaining
  tuple can beat the best hit, so the per-packet cost depends on the number
  of distinct masks, not of flows.  A mask with only a few flows is
  compared inline instead of hashed.  The map entries are data (`TableImage`
  .entries), filled by the loader; the C only knows the masks.

Action lists are deduplicated per table and become the cases of a switch.
A jump that ends an action list (`goto_table`, or a `resubmit` as the last
action) is a tail call: the table returns the next table's number and one
chain (`dp_from_T`: table T, then every table its tail jumps reach, in call
order) runs it.  Each table's code then appears once in the chain however
many flows jump to it; inlining it at every jump multiplied the program,
and the verifier's work, by the fan-out of every table (a generated
three-table, 17-flow table needed more than the verifier's 10^6
instructions).  A `resubmit` in the middle of a list must come back to the
actions after it, so it calls the target's chain inline.  A resubmit loop
cannot be expressed: it is rejected with the flow that closes the loop
named.  Same table in, same C out.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Mapping

from .. import flows as FL
from ..fields import FIELD_BY_NAME
from ..flows import Flow, FlowTable

# Tables with at most this many flows compile to straight-line code.
LINEAR_MAX_FLOWS = 64
# In a tuple-space table, a mask shared by at most this many flows is
# checked inline rather than through the hash map.
TUPLE_INLINE_MAX = 4
# The per-CPU counter map is shared by every program of a bridge (it
# survives recompiles), so its size is fixed.
STATS_SLOTS = 65536
# OVS cuts resubmit recursion at 64; the inlined chain must stay below it.
MAX_DEPTH = 63

# dp_key field -> (C type width in bytes, number of words).  Order here is
# the packing order of tuple keys: widest first keeps every store aligned.
_KEY_FIELDS: dict[str, tuple[int, int]] = {
    "ipv6_src": (8, 2), "ipv6_dst": (8, 2), "nd_target": (8, 2),
    "dl_dst": (8, 1), "dl_src": (8, 1), "arp_sha": (8, 1), "arp_tha": (8, 1),
    "nd_sll": (8, 1), "nd_tll": (8, 1),
    "nw_src": (4, 1), "nw_dst": (4, 1), "arp_spa": (4, 1), "arp_tpa": (4, 1),
    "ipv6_label": (4, 1),
    "in_port": (2, 1), "vlan_tci": (2, 1), "dl_type": (2, 1), "arp_op": (2, 1),
    "tp_src": (2, 1), "tp_dst": (2, 1),
    "nw_proto": (1, 1), "nw_tos": (1, 1), "nw_ttl": (1, 1),
    "icmp_type": (1, 1), "icmp_code": (1, 1),
    **{f"reg{i}": (4, 1) for i in range(16)},
}
# The register the datapath loads from the box's health map at entry
# (c/dp_runtime.h, dp_health): bit i set while service i's heartbeat is fresh.
HEALTH_REG = 15
_CTYPE = {8: "__u64", 4: "__u32", 2: "__u16", 1: "__u8"}
_PACK = {8: "Q", 4: "I", 2: "H", 1: "B"}


class CompileError(ValueError):
    """The datapath cannot express a flow; names the flow and the reason."""

    def __init__(self, flow: Flow | None, problem: str,
                 port_names: Mapping[int, str] | None = None):
        self.flow = flow
        self.problem = problem
        where = ""
        if flow is not None:
            line = f" (line {flow.line})" if flow.line else ""
            where = f"flow {flow.to_ofctl(port_names)!r}{line}: "
        super().__init__(where + problem)


@dataclass(frozen=True)
class Tuple:
    """One mask shape of a table: its id, fields and best (lowest) rank."""
    id: int
    signature: tuple[tuple[str, int], ...]
    min_rank: int


@dataclass
class TableImage:
    """What the loader needs for one table besides the C."""
    table: int
    strategy: str                      # "linear" or "tuple"
    map_name: str | None = None        # tuple: the hash map to fill
    key_size: int = 0                  # tuple: bytes of the map key
    entries: list[tuple[bytes, bytes]] = field(default_factory=list)


@dataclass
class Program:
    """A compiled flow table: C source plus the data the loader installs."""
    source: str
    tables: list[TableImage]
    slots: dict[tuple, int]            # Flow.key -> counter slot
    flows_by_slot: dict[int, Flow]
    # Line of the C (1-based) -> the flows whose match or actions it
    # compiles: a verifier or clang complaint about a line names them.
    line_flows: dict[int, tuple[Flow, ...]] = field(default_factory=dict)

    def flows_at(self, line: int) -> tuple[Flow, ...]:
        return self.line_flows.get(line, ())


def rank_order(flows: list[Flow]) -> list[Flow]:
    """Flows as a lookup must try them: priority high to low, then insertion order."""
    return sorted(flows, key=lambda f: -f.priority)  # sort is stable


def assign_slots(table: FlowTable, previous: Mapping[tuple, int] | None = None) -> dict[tuple, int]:
    """Counter slot per flow: a flow that survives a recompile keeps its slot
    (and so its counters); new flows take the lowest free slots."""
    previous = previous or {}
    slots: dict[tuple, int] = {}
    for f in table:
        if f.key in previous:
            slots[f.key] = previous[f.key]
    used = set(slots.values())
    free = (s for s in range(STATS_SLOTS) if s not in used)
    for f in table:
        if f.key not in slots:
            try:
                slots[f.key] = next(free)
            except StopIteration:
                raise CompileError(f, f"more than {STATS_SLOTS} flows") from None
    return slots


# ------------------------------------------------------------------ matching

def _words(name: str, value: int) -> list[int]:
    width, n = _KEY_FIELDS[name]
    if n == 2:
        return [(value >> 64) & (2**64 - 1), value & (2**64 - 1)]
    return [value]


def _c_ref(name: str, word: int) -> str:
    if name.startswith("reg"):
        return f"st->regs[{int(name[3:])}]"
    if _KEY_FIELDS[name][1] == 2:
        return f"k->{name}[{word}]"
    return f"k->{name}"


def _lit(width: int, v: int) -> str:
    return f"0x{v:x}ULL" if width == 8 else f"0x{v:x}"


def _conditions(match: FL.Match) -> list[str]:
    conds = []
    for name, mask in match.masks.items():
        width, _ = _KEY_FIELDS[name]
        full = FIELD_BY_NAME[name].full_mask
        for i, (v, m) in enumerate(zip(_words(name, match.values[name]), _words(name, mask))):
            wfull = _words(name, full)[i]
            if m == 0:
                continue
            ref = _c_ref(name, i)
            if m == wfull:
                conds.append(f"{ref} == {_lit(width, v)}")
            else:
                conds.append(f"({ref} & {_lit(width, m)}) == {_lit(width, v)}")
    return conds


def _tuple_layout(signature) -> list[tuple[str, int, int, int]]:
    """(field, word, offset, width) of each stored word, widest first."""
    names = sorted((n for n, _ in signature), key=list(_KEY_FIELDS).index)
    out, off = [], 0
    for n in names:
        width, count = _KEY_FIELDS[n]
        for w in range(count):
            out.append((n, w, off, width))
            off += width
    return out


def _pack_tuple_key(tid: int, layout, values: Mapping[str, int], size: int) -> bytes:
    buf = bytearray(8 + size)
    struct.pack_into("<I", buf, 0, tid)
    for name, word, off, width in layout:
        struct.pack_into("<" + _PACK[width], buf, 8 + off, _words(name, values[name])[word])
    return bytes(buf)


# ------------------------------------------------------------------- actions

def _action_code(act: FL.Action, flow: Flow, table: int, slot: int,
                 port_names, tail: bool = False) -> list[str]:
    """The C of one action; `tail`: it is the list's last, so a jump there
    returns the next table to the chain instead of calling it."""
    t = type(act)
    if t is FL.Output:
        return [f"dp_output(skb, st, {act.port});"]
    if t is FL.Normal:
        return ["dp_normal(skb, st);"]
    if t is FL.Flood or t is FL.All:
        return ["dp_flood(skb, st);"]
    if t is FL.InPort:
        return ["dp_output_in_port(skb, st);"]
    if t is FL.Local:
        return [f"dp_output(skb, st, {FL.OFPP_LOCAL});"]
    if t is FL.Drop:
        return []
    if t is FL.Controller:
        return [f"dp_controller(skb, st, {table}, {slot});"]
    if t is FL.SetField:
        if act.mask is None and act.field in ("dl_src", "dl_dst"):
            return [f"dp_set_{act.field}(skb, st, 0x{act.value:012x}ULL);"]
        if act.mask is None and act.field == "vlan_vid" and act.value & 0x1000:
            # OpenFlow 1.3's vlan_vid with the present bit: retag, or tag.
            return [f"dp_set_vlan_vid(skb, st, {act.value & 0xFFF});"]
        if act.mask is None and act.field in ("vlan_pcp", "dl_vlan_pcp"):
            return [f"dp_set_vlan_pcp(skb, st, {act.value});"]
        raise CompileError(flow, f"the datapath cannot rewrite {act.field}"
                           f"{' under a mask' if act.mask is not None else ''} "
                           "(it rewrites dl_src, dl_dst, vlan_vid and vlan_pcp)", port_names)
    if t is FL.ModVlanVid:
        return [f"dp_set_vlan_vid(skb, st, {act.vid});"]
    if t is FL.ModVlanPcp:
        return [f"dp_set_vlan_pcp(skb, st, {act.pcp});"]
    if t is FL.PushVlan:
        return ["dp_push_vlan(skb, st);"]
    if t is FL.StripVlan:
        return ["dp_strip_vlan(skb, st);"]
    if t is FL.Resubmit or t is FL.GotoTable:
        target = table if act.table is None else act.table
        jump = f"next = {target};" if tail else f"dp_from_{target}(skb, st);"
        if t is FL.GotoTable or act.port is None:
            return [jump]
        # in_port=PORT for that lookup only: the table puts the real one back.
        return [f"st->key.in_port = dp_blind(st, {act.port});", jump]
    raise CompileError(flow, f"the datapath has no action {act.to_ofctl(port_names)}", port_names)


def check_vlan_pushes(flow: Flow, port_names=None) -> None:
    """push_vlan only where the flow knows the frame is untagged: the
    datapath carries one tag (OVS would stack a second one, QinQ)."""
    tci_mask = flow.match.masks.get("vlan_tci", 0)
    tagged: bool | None = None
    if tci_mask & 0x1000:
        tagged = bool(flow.match.values["vlan_tci"] & 0x1000)
    for a in flow.actions:
        t = type(a)
        if t is FL.PushVlan:
            if tagged is not False:
                raise CompileError(flow, "push_vlan on a frame that may already carry a tag: the "
                                   "datapath carries one tag; match untagged frames "
                                   "(vlan_tci=0x0000/0x1fff) or pop_vlan first", port_names)
            tagged = True
        elif t is FL.StripVlan:
            tagged = False
        elif t in (FL.ModVlanVid, FL.ModVlanPcp) or (t is FL.SetField and a.field in (
                "vlan_vid", "vlan_pcp", "dl_vlan_pcp")):
            tagged = True
        elif t is FL.Resubmit or t is FL.GotoTable:
            tagged = None  # the other table may have changed the tag


def _split_calls(flow: Flow) -> tuple[list[int], list[int]]:
    """(tables the flow resubmits to and comes back from, the table its last
    action jumps to if that is a jump)."""
    calls = _calls(flow)
    if flow.actions and isinstance(flow.actions[-1], (FL.Resubmit, FL.GotoTable)):
        return calls[:-1], calls[-1:]
    return calls, []


def _calls(flow: Flow) -> list[int]:
    out = []
    for a in flow.actions:
        if isinstance(a, FL.Resubmit):
            out.append(flow.table if a.table is None else a.table)
        elif isinstance(a, FL.GotoTable):
            out.append(a.table)
    return out


def _table_order(table: FlowTable, port_names) -> list[int]:
    """Tables reachable from table 0, callees first; rejects resubmit loops."""
    by_table: dict[int, list[Flow]] = {}
    for f in table:
        by_table.setdefault(f.table, []).append(f)
    order: list[int] = []
    state: dict[int, int] = {}      # 1 = on the stack, 2 = done
    depth: dict[int, int] = {}

    def visit(t: int, via: Flow | None) -> int:
        if state.get(t) == 2:
            return depth[t]
        if state.get(t) == 1:
            raise CompileError(via, f"resubmit loop back into table {t}: the datapath "
                               "inlines resubmits and cannot run a loop", port_names)
        state[t] = 1
        d = 0
        for f in by_table.get(t, []):
            for callee in _calls(f):
                d = max(d, 1 + visit(callee, f))
                if d > MAX_DEPTH:
                    raise CompileError(f, f"resubmit chain deeper than {MAX_DEPTH}", port_names)
        state[t] = 2
        depth[t] = d
        order.append(t)
        return d

    visit(0, None)
    return order


def _chains(by_table: Mapping[int, list[Flow]], order: list[int]) -> dict[int, list[int]]:
    """Table 0 and every table a mid-list resubmit calls -> the tables its
    tail jumps reach, callers before callees (`order` has callees first)."""
    rank = {t: i for i, t in enumerate(reversed(order))}
    # Tables table 0 never reaches are not compiled: neither are their calls.
    heads = {0} | {c for t in order for f in by_table.get(t, []) for c in _split_calls(f)[0]}
    chains = {}
    for head in sorted(heads, key=rank.__getitem__):
        seen, todo = set(), [head]
        while todo:
            for f in by_table.get(todo.pop(), []):
                for u in _split_calls(f)[1]:
                    if u not in seen:
                        seen.add(u)
                        todo.append(u)
        chains[head] = sorted(seen, key=rank.__getitem__)
    return chains


# -------------------------------------------------------------------- tables

def _flow_comment(flow: Flow, port_names) -> str:
    text = flow.to_ofctl(port_names).replace("*/", "* /")
    return f"/* {text} */"


def _compile_table(t: int, flows: list[Flow], slots: Mapping[tuple, int], port_names,
                   strategy: str, inline_max: int = TUPLE_INLINE_MAX
                   ) -> tuple[list[str], TableImage, dict[int, tuple[Flow, ...]]]:
    """The table's C lines, its map contents, and line index -> flows."""
    ranked = rank_order(flows)
    action_ids: dict[tuple, int] = {}
    action_code: list[list[str]] = []
    for f in ranked:
        if f.actions not in action_ids:
            lines: list[str] = []
            check_vlan_pushes(f, port_names)
            for i, a in enumerate(f.actions):
                lines += _action_code(a, f, t, slots[f.key], port_names,
                                      tail=i == len(f.actions) - 1)
            # The controller action names the slot; keep such lists per flow.
            key = f.actions if not any(isinstance(a, FL.Controller) for a in f.actions) \
                else (f.actions, slots[f.key])
            if key in action_ids:
                continue
            action_ids[key] = len(action_code)
            action_code.append(lines)

    def action_id(f: Flow) -> int:
        if any(isinstance(a, FL.Controller) for a in f.actions):
            return action_ids[(f.actions, slots[f.key])]
        return action_ids[f.actions]

    users: dict[int, list[Flow]] = {}
    for f in ranked:
        users.setdefault(action_id(f), []).append(f)
    owners: dict[int, tuple[Flow, ...]] = {}   # index in `out` -> flows

    def own(flows_: tuple[Flow, ...], n: int) -> None:
        """The next n lines appended to `out` compile `flows_`."""
        for i in range(len(out), len(out) + n):
            owners[i] = flows_

    out = [f"/* OpenFlow table {t}: {len(flows)} flows, {strategy} lookup. */",
           f"static __always_inline int dp_table_{t}(struct __sk_buff *skb, struct dp_state *st)",
           "{",
           "\tconst struct dp_key *k = &st->key;",
           "\t__u32 slot = 0, action = 0;",
           "\tint next = DP_NO_TABLE;",
           ""]
    image = TableImage(t, strategy)
    if strategy == "linear":
        for f in ranked:
            conds = _conditions(f.match)
            own((f,), 5)
            out.append("\t" + _flow_comment(f, port_names))
            out.append(f"\tif ({' && '.join(conds) or '1'}) {{")
            out.append(f"\t\tslot = {slots[f.key]}; action = {action_id(f)};")
            out.append("\t\tgoto hit;")
            out.append("\t}")
        out.append("\tst->key.in_port = st->in_port;")
        out.append(f"\tdp_miss(st, {t});")
        out.append("\treturn DP_NO_TABLE;")
    else:
        rank_of = {id(f): i for i, f in enumerate(ranked)}
        tuples: dict[tuple, Tuple] = {}
        for f in ranked:
            sig = f.match.signature
            if sig not in tuples:
                tuples[sig] = Tuple(len(tuples), sig, rank_of[id(f)])
        layouts = {sig: _tuple_layout(sig) for sig in tuples}
        size = max([sum(w for *_, w in lay) for lay in layouts.values()] + [8])
        size = (size + 7) // 8 * 8
        image.map_name = f"dp_flows_{t}"
        image.key_size = 8 + size
        members: dict[tuple, list[Flow]] = {}
        for f in ranked:
            members.setdefault(f.match.signature, []).append(f)
        hashed = {sig for sig, fl in members.items() if len(fl) > inline_max}
        seen: set[bytes] = set()
        for f in ranked:
            sig = f.match.signature
            if sig not in hashed:
                continue
            key = _pack_tuple_key(tuples[sig].id, layouts[sig], f.match.values, size)
            if key in seen:
                continue  # same match, worse rank: can never win
            seen.add(key)
            val = struct.pack("<IIII", rank_of[id(f)], slots[f.key], action_id(f), 0)
            image.entries.append((key, val))
        decl = [f"struct dp_tuple_key_{t} {{",
                    "\t__u32 mask_id;",
                    "\t__u32 pad;",
                    f"\t__u8 fields[{size}];",
                    "};",
                    "",
                    "struct {",
                    "\t__uint(type, BPF_MAP_TYPE_HASH);",
                    f"\t__uint(max_entries, {max(1, len(image.entries))});",
                    f"\t__type(key, struct dp_tuple_key_{t});",
                    "\t__type(value, struct dp_tuple_val);",
                    f"}} dp_flows_{t} SEC(\".maps\");",
                    "",
                    # The probe's key, in map memory: on the stack, every table a
                    # resubmit nests kept its own, and nested tables passed the
                    # 512 bytes BPF has (a table's key is dead before its
                    # actions run, so one per table is enough).
                    "struct {",
                    "\t__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);",
                    "\t__uint(max_entries, 1);",
                    "\t__type(key, __u32);",
                    f"\t__type(value, struct dp_tuple_key_{t});",
                    f"}} dp_tk_{t} SEC(\".maps\");",
                    ""]
        out[0:0] = decl
        owners = {i + len(decl): fl for i, fl in owners.items()}
        out += ["\t__u32 tk_zero = 0;",
                f"\tstruct dp_tuple_key_{t} *tk = bpf_map_lookup_elem(&dp_tk_{t}, &tk_zero);",
                "\tstruct dp_tuple_val *v;",
                # With a hashed tuple the verifier cannot know best anyway;
                # an unknown start lets its hit/miss paths merge (dp_runtime.h).
                f"\t__u32 best = {'dp_no_rank' if hashed else '0xffffffff'};",
                ""]
        for sig, tp in tuples.items():
            desc = ",".join(n if m == FIELD_BY_NAME[n].full_mask else f"{n}/0x{m:x}"
                            for n, m in sig) or "(no fields)"
            how = "hashed" if sig in hashed else "inline"
            out.append(f"\t/* tuple {tp.id} ({how}, {len(members[sig])} flows): {desc} */")
            if tp.id:
                out.append(f"\tif (best < {tp.min_rank})")
                out.append("\t\tgoto found;")
            if sig not in hashed:
                # Few flows under this mask: comparing beats hashing.
                for f in members[sig]:
                    conds = _conditions(f.match) + [f"{rank_of[id(f)]} < best"]
                    own((f,), 4)
                    out.append("\t" + _flow_comment(f, port_names))
                    out.append(f"\tif ({' && '.join(conds)}) {{")
                    out.append(f"\t\tbest = {rank_of[id(f)]}; slot = {slots[f.key]}; "
                               f"action = {action_id(f)};")
                    out.append("\t}")
                continue
            out.append("\tif (!tk)")
            out.append("\t\tgoto found;  /* index 0 of a per-CPU array: not reached */")
            out.append("\t__builtin_memset(tk, 0, sizeof(*tk));")
            out.append(f"\ttk->mask_id = {tp.id};")
            masks = dict(sig)
            for name, word, off, width in layouts[sig]:
                m = _words(name, masks[name])[word]
                ref = _c_ref(name, word)
                full = _words(name, FIELD_BY_NAME[name].full_mask)[word]
                expr = ref if m == full else f"{ref} & {_lit(width, m)}"
                out.append(f"\t*({_CTYPE[width]} *)&tk->fields[{off}] = {expr};")
            out.append(f"\tv = bpf_map_lookup_elem(&dp_flows_{t}, tk);")
            out.append("\tif (v && v->rank < best) {")
            out.append("\t\tbest = v->rank; slot = v->slot; action = v->action;")
            out.append("\t}")
        out += ["found:",
                "\tst->key.in_port = st->in_port;",
                "\tif (best == 0xffffffff) {",
                f"\t\tdp_miss(st, {t});",
                "\t\treturn DP_NO_TABLE;",
                "\t}"]
    out += ["hit:",
            "\tst->key.in_port = st->in_port;" if strategy == "linear" else "",
            f"\tdp_count(st, {t}, slot, skb->len);",
            "\tswitch (action) {"]
    for i, lines in enumerate(action_code):
        own(tuple(users.get(i, ())), len(lines) + 2)
        out.append(f"\tcase {i}:")
        out += ["\t\t" + ln for ln in lines]
        out.append("\t\tbreak;")
    out += ["\t}", "\treturn next;", "}", ""]
    if strategy == "linear":
        # `k` and the labels are used by every shape of table; silence the
        # unused warnings of an empty one.
        out.insert(6, "\t(void)k;")
        owners = {i + (i >= 6): fl for i, fl in owners.items()}
    return out, image, owners


def compile_table(table: FlowTable, port_names: Mapping[int, str] | None = None,
                  slots: Mapping[tuple, int] | None = None,
                  strategy: str = "auto") -> Program:
    """The C program and map contents for a flow table.

    `strategy` is "auto" (linear up to LINEAR_MAX_FLOWS flows in a table,
    tuple space above), "linear", "tuple", or "hashed" (tuple space with
    every mask hashed, none inline; tests force each).
    Raises CompileError naming the first flow the datapath cannot express.
    """
    if strategy not in ("auto", "linear", "tuple", "hashed"):
        raise ValueError(f"strategy {strategy!r}: use auto, linear, tuple or hashed")
    slots = dict(slots) if slots is not None else assign_slots(table)
    flows_by_slot = {}
    for f in table:
        if f.key not in slots:
            raise CompileError(f, "no counter slot assigned", port_names)
        flows_by_slot[slots[f.key]] = f
    by_table: dict[int, list[Flow]] = {}
    for f in table:
        by_table.setdefault(f.table, []).append(f)
        for a in f.actions:  # reject what cannot be expressed, even if unreachable
            _action_code(a, f, f.table, slots[f.key], port_names)
    order = _table_order(table, port_names)
    regs = [int(n[3:]) for f in table for n in f.match.masks if n.startswith("reg")]
    lines = ["/* Generated by appliance/switch/datapath/compiler.py from a flow table.",
             " * Do not edit: change the flows and recompile. */",
             f"#define DP_STATS_SLOTS {STATS_SLOTS}",
             # Only a table that matches reg15 pays for loading the health map.
             f"#define DP_N_REGS {max(regs) + 1 if regs else 1}",
             '#include "dp_runtime.h"',
             "",
             "#define DP_NO_TABLE (-1)",
             ""]
    chains = _chains(by_table, order)
    lines += [f"static __always_inline void dp_from_{t}(struct __sk_buff *skb, struct dp_state *st);"
              for t in chains] + [""]
    images = []
    line_flows: dict[int, tuple[Flow, ...]] = {}
    for t in order:
        flows = by_table.get(t, [])
        strat = strategy
        if strat == "auto":
            strat = "linear" if len(flows) <= LINEAR_MAX_FLOWS else "tuple"
        if strat == "hashed":
            code, image, owners = _compile_table(t, flows, slots, port_names, "tuple", inline_max=0)
        else:
            code, image, owners = _compile_table(t, flows, slots, port_names, strat)
        line_flows.update({len(lines) + i + 1: fl for i, fl in owners.items() if fl})
        lines += code
        images.append(image)
    for t, reach in chains.items():
        lines += [f"/* Table {t}, then where its tail jumps lead. */",
                  f"static __always_inline void dp_from_{t}(struct __sk_buff *skb, struct dp_state *st)",
                  "{",
                  f"\tint next = dp_table_{t}(skb, st);",
                  ""]
        lines += [f"\tif (next == {u})\n\t\tnext = dp_table_{u}(skb, st);" for u in reach]
        lines += ["\t(void)next;", "}", ""]
    lines += ['SEC("tc")',
              "int dp_ingress(struct __sk_buff *skb)",
              "{",
              "\tstruct dp_state state = {};",
              "\tstruct dp_state *st = &state;",
              "\tint verdict = dp_begin(skb, st);",
              "",
              "\tif (verdict >= 0)",
              "\t\treturn verdict;",
              "\tdp_from_0(skb, st);",
              "\treturn dp_finish(skb, st);",
              "}",
              "",
              'char _license[] SEC("license") = "GPL";',
              ""]
    return Program("\n".join(lines), images, slots, flows_by_slot, line_flows)
