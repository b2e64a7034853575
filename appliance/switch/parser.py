"""Parse flow text as `ovs-ofctl add-flow`/`add-flows` and `dump-flows` write it.

``parse_flow(text)`` reads one flow, ``parse_flows(text)`` a file (blank
lines and lines starting with ``#`` skipped, a trailing ``\\`` joins the
next line). Both return typed `Flow` objects or raise `FlowSyntaxError`
with ``.line``, ``.column`` (1-based, in the original text) and
``.message``; a file with any error yields nothing, so nothing partial can
be applied.

Where Open vSwitch is lenient in ways that surprise, this parser is strict:

- a field without its prerequisite (``nw_src=10.0.0.1`` without ``ip``)
  is an error that says what to add, where OVS silently drops the field;
- a field given twice with different values, or a shorthand that
  contradicts a field (``udp,nw_proto=6``), is an error, where OVS keeps
  the last one.

Normalisations OVS applies silently (host bits outside a mask, a zero mask,
a field that repeats a shorthand) are applied too and recorded in
``Flow.notes`` for lint to report.

Port names resolve through ``port_map`` (name -> OpenFlow port number);
the reserved names (LOCAL, IN_PORT, ...) are case-insensitive and always win.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from typing import Mapping

from . import fields as F
from . import flows as FL
from .fields import FIELD_BY_NAME
from .flows import Flow, Match
from .actionparse import one_action
from .subfield import packet_has, prereq
from .values import _int, _mac, _value_mask, parse_port


class FlowSyntaxError(ValueError):
    """An error in flow text, located by line and column (both 1-based)."""

    def __init__(self, message: str, line: int = 1, column: int = 1, text: str | None = None):
        self.message = message
        self.line = line
        self.column = column
        self.text = text
        super().__init__(f"line {line}, column {column}: {message}")


@dataclass
class _Tok:
    key: str
    value: str | None
    kcol: int   # 0-based offset of the key in the flow string
    vcol: int   # 0-based offset of the value


class _Located:
    """Turns offsets in a (possibly joined) flow string into (line, column)."""

    def __init__(self, positions: list[tuple[int, int]] | None, line: int, base_col: int = 0):
        self.positions = positions
        self.line = line
        self.base_col = base_col

    def error(self, message: str, offset: int) -> FlowSyntaxError:
        if self.positions:
            offset = max(0, min(offset, len(self.positions) - 1))
            ln, col = self.positions[offset]
            return FlowSyntaxError(message, ln, col + 1)
        return FlowSyntaxError(message, self.line, self.base_col + offset + 1)


_ACTIONS_RE = re.compile(r"(?:^|[\s,])(actions?)\s*=")
_SEP = " \t\r\n,"
_STAT_KEYS = {"duration", "n_packets", "n_bytes", "idle_age", "hard_age", "importance"}
_FLOW_FLAGS = {"send_flow_rem", "check_overlap", "reset_counts", "no_packet_counts",
               "no_byte_counts", "no_readonly_table", "allow_hidden_fields"}
# OpenFlow 1.3's vlan_vid: the VID and the present bit, the low 13 bits of vlan_tci.
_VLAN_VID = F.Field("vlan_vid", 13, F.INT, True)


def _split_kv(s: str, start: int, end: int) -> list[_Tok]:
    """Split s[start:end] at commas/whitespace into key[=value] tokens
    (like OVS's ofputil_parse_key_value: ':' also separates key and value)."""
    toks: list[_Tok] = []
    i = start
    while i < end:
        while i < end and s[i] in _SEP:
            i += 1
        if i >= end:
            break
        j = i
        depth = 0
        while j < end and (depth or s[j] not in _SEP):
            if s[j] == "(":
                depth += 1
            elif s[j] == ")":
                depth -= 1
            j += 1
        tok = s[i:j]
        m = re.search(r"[=:]", tok)
        paren = tok.find("(")
        if m and (paren < 0 or m.start() < paren):
            toks.append(_Tok(tok[:m.start()], tok[m.start() + 1:], i, i + m.start() + 1))
        else:
            toks.append(_Tok(tok, None, i, i))
        i = j
    return toks


class _MatchBuilder:
    def __init__(self, loc: _Located):
        self.loc = loc
        self.values: dict[str, int] = {}
        self.masks: dict[str, int] = {}
        self.where: dict[str, int] = {}
        self.notes: list[str] = []
        self.shorthand: str | None = None

    def set(self, name: str, value: int, mask: int, col: int, spelled: str) -> None:
        fld = FIELD_BY_NAME[name]
        mask &= fld.full_mask
        if value & ~mask & fld.full_mask:
            norm = Match({name: value}, {name: mask})
            shown = norm.to_ofctl() or f"{name}=*"
            self.notes.append(f"{spelled} has bits outside its mask; OVS stores it as {shown}")
            value &= mask
        if mask == 0:
            self.notes.append(f"{spelled} has a zero mask and matches anything; OVS drops it")
            return
        if name in self.masks:
            if self.masks[name] == mask and self.values[name] == value:
                self.notes.append(f"{spelled} repeats a match already given")
                return
            common = self.masks[name] & mask
            if name == "vlan_tci" and not (self.values[name] ^ value) & common:
                # dl_vlan and dl_vlan_pcp set different bits of one field.
                self.values[name] |= value
                self.masks[name] |= mask
                return
            raise self.loc.error(f"{spelled} conflicts with an earlier match on {name}", col)
        self.values[name] = value
        self.masks[name] = mask
        self.where[name] = col


def _parse_match_tokens(toks: list[_Tok], loc: _Located, port_map, mb: _MatchBuilder,
                        extra: dict | None) -> None:
    """Fill mb from tokens. `extra` (None for a bare match) collects
    table/priority/cookie/timeouts."""
    # First pass: the protocol, so aliases that depend on it (nw_src on ARP)
    # resolve the same whichever order the user wrote things in.
    dl_type: int | None = None
    for t in toks:
        k = t.key.lower()
        if t.value is None and k in F.SHORTHANDS:
            dl_type = F.SHORTHANDS[k][0]
        elif k in ("dl_type", "eth_type") and t.value:
            try:
                dl_type = int(t.value, 0)
            except ValueError:
                pass
    for t in toks:
        k = t.key
        kl = k.lower()
        try:
            if t.value is None:
                if extra is not None and kl in _FLOW_FLAGS:
                    continue  # what OVS tells a controller; no effect on forwarding here
                if kl in F.SHORTHANDS:
                    dt, proto = F.SHORTHANDS[kl]
                    if "dl_type" in mb.masks and mb.values["dl_type"] != dt:
                        raise mb.loc.error(f"'{k}' contradicts the dl_type already given", t.kcol)
                    if proto is not None and "nw_proto" in mb.masks and mb.values["nw_proto"] != proto:
                        raise mb.loc.error(f"'{k}' contradicts the nw_proto already given", t.kcol)
                    if mb.shorthand and mb.shorthand != kl:
                        mb.notes.append(f"'{k}' follows '{mb.shorthand}'")
                    mb.shorthand = kl
                    mb.values["dl_type"], mb.masks["dl_type"] = dt, 0xFFFF
                    mb.where.setdefault("dl_type", t.kcol)
                    if proto is not None:
                        mb.values["nw_proto"], mb.masks["nw_proto"] = proto, 0xFF
                        mb.where.setdefault("nw_proto", t.kcol)
                    continue
                if k.upper() in FL.RESERVED_PORTS or kl in ("drop", "strip_vlan"):
                    raise mb.loc.error(f"'{k}' looks like an action; actions go after 'actions='", t.kcol)
                raise mb.loc.error(f"'{k}' is not a field or a protocol (ip, arp, tcp, udp, icmp, ipv6, tcp6, udp6, icmp6)", t.kcol)
            v = t.value
            if v == "":
                raise mb.loc.error(f"{k}: missing value after '='", t.vcol)
            if extra is not None and kl in ("table", "priority", "cookie", "idle_timeout", "hard_timeout"):
                if kl in extra:
                    raise mb.loc.error(f"{kl} given twice", t.kcol)
                if kl == "table":
                    extra[kl] = _int(v, "table", 0, FL.N_TABLES - 1)
                elif kl == "priority":
                    extra[kl] = _int(v, "priority", 0, FL.MAX_PRIORITY)
                elif kl == "cookie":
                    if "/" in v:
                        if not extra.get("_filter"):
                            raise ValueError("cookie: a mask is only meaningful to del-flows and dump-flows")
                        v, mtext = v.split("/", 1)
                        extra["cookie_mask"] = _int(mtext, "cookie mask", 0, (1 << 64) - 1)
                    extra[kl] = _int(v, "cookie", 0, (1 << 64) - 1)
                else:
                    extra[kl] = _int(v, kl, 0, 65535)
                continue
            if extra is not None and kl in _STAT_KEYS:
                continue  # dump-flows counters read back in: not part of the flow
            if kl == "vlan_vid":
                vv, vm = _value_mask(_VLAN_VID, v, "vlan_vid")
                mb.set("vlan_tci", vv, vm, t.kcol, f"vlan_vid={v}")
                continue
            if kl == "vlan_pcp":
                pcp = _int(v, "vlan_pcp", 0, 7)
                mb.set("vlan_tci", F.VLAN_CFI | (pcp << 13), F.VLAN_CFI | F.VLAN_PCP_MASK, t.kcol, f"vlan_pcp={v}")
                continue
            if kl == "ip_dscp":
                dscp = _int(v, "ip_dscp", 0, 63)
                mb.set("nw_tos", dscp << 2, 0xFF, t.kcol, f"ip_dscp={v}")
                continue
            if kl == "in_port":
                port = parse_port(v, port_map, "in_port")
                mb.set("in_port", port, 0xFFFF, t.kcol, f"in_port={v}")
                continue
            if kl == "dl_vlan":
                vid = _int(v, "dl_vlan", 0, 0xFFFF)
                if vid == 0xFFFF:
                    mb.set("vlan_tci", 0, 0xFFFF, t.kcol, "dl_vlan=0xffff")
                elif vid > 4095:
                    raise ValueError(f"dl_vlan: {vid} is not a VLAN id (0..4095, or 0xffff for untagged)")
                else:
                    mb.set("vlan_tci", F.VLAN_CFI | vid, F.VLAN_CFI | F.VLAN_VID_MASK, t.kcol, f"dl_vlan={v}")
                continue
            if kl == "dl_vlan_pcp":
                pcp = _int(v, "dl_vlan_pcp", 0, 7)
                mb.set("vlan_tci", F.VLAN_CFI | (pcp << 13), F.VLAN_CFI | F.VLAN_PCP_MASK, t.kcol, f"dl_vlan_pcp={v}")
                continue
            try:
                name = F.resolve_alias(kl, dl_type)
            except KeyError:
                raise mb.loc.error(f"unknown field '{k}'", t.kcol) from None
            if name == "in_port":
                continue
            fld = FIELD_BY_NAME[name]
            value, mask = _value_mask(fld, v, kl)
            if kl in F.ALIAS_PREREQ:
                pre = F.ALIAS_PREREQ[kl]
                mb.where.setdefault("_alias_" + name, t.kcol)
                mb.notes_alias = getattr(mb, "notes_alias", [])
                mb.notes_alias.append((kl, pre, t.kcol))
            # A field that repeats the shorthand (udp,nw_proto=17) is
            # normalised away by OVS; one that contradicts it is an error.
            mb.set(name, value, mask, t.kcol, f"{k}={v}")
        except ValueError as e:
            if isinstance(e, FlowSyntaxError):
                raise
            raise mb.loc.error(str(e), t.vcol if t.value is not None else t.kcol) from None
    _check_prereqs(mb)


def _check_prereqs(mb: _MatchBuilder) -> None:
    for name in list(mb.masks):
        fld = FIELD_BY_NAME[name]
        if fld.prereq and not fld.prereq.satisfied_by(mb.values, mb.masks):
            raise mb.loc.error(
                f"{name} needs {_describe(fld.prereq)}: {fld.prereq.hint} "
                f"(Open vSwitch would silently ignore this field)", mb.where.get(name, 0))
    for kl, pre, col in getattr(mb, "notes_alias", []):
        if not pre.satisfied_by(mb.values, mb.masks):
            raise mb.loc.error(f"{kl} needs {_describe(pre)}: {pre.hint}", col)


def _describe(pre: F.Prerequisite) -> str:
    return pre.describe()


def _parse_actions(s: str, start: int, end: int, loc: _Located, port_map,
                   table: int, mb: "_MatchBuilder | None" = None,
                   of11: bool = False) -> tuple[FL.Action, ...]:
    toks = _split_kv(s, start, end)
    if not toks:
        raise loc.error("no actions after 'actions=' (write 'drop' to drop)", start)
    out: list[FL.Action] = []
    saw_drop = None
    # What the packet is known to carry at each action (OVS checks set_field
    # against the match as the earlier actions changed it).
    state = _ActionState(mb)
    for i, t in enumerate(toks):
        v = t.value
        try:
            act = one_action(t.key, v, port_map, table)
            if of11 and isinstance(act, (FL.ModVlanVid, FL.ModVlanPcp)):
                # OpenFlow 1.1+ has no "push a tag if needed": ovs-ofctl -O
                # OpenFlow13 sends push_vlan + set_field unless the match
                # guarantees a tag, and the switch does exactly that.
                out.extend(_of11_vlan(act, state))
                continue
            state.check(act)
        except ValueError as e:
            if isinstance(e, FlowSyntaxError):
                raise
            raise loc.error(str(e), t.vcol if v is not None else t.kcol) from None
        if isinstance(act, FL.Drop):
            saw_drop = t
            continue
        if out and isinstance(out[-1], FL.GotoTable):
            raise loc.error("goto_table must be the last action (OVS: apply_actions must "
                            "appear before goto_table)", goto.kcol)
        if isinstance(act, FL.GotoTable):
            goto = t
        out.append(act)
    if saw_drop is not None and (out or len(toks) > 1):
        raise loc.error("'drop' must not be accompanied by any other action", saw_drop.kcol)
    return tuple(out)


def _of11_vlan(act: FL.Action, state: "_ActionState") -> list[FL.Action]:
    out: list[FL.Action] = []
    if not state.vlan:
        out.append(FL.PushVlan(F.ETH_TYPE_VLAN))
        state.vlan = True
    if isinstance(act, FL.ModVlanVid):
        out.append(FL.SetField("vlan_vid", F.VLAN_CFI | act.vid, None, "set_field"))
    else:
        out.append(FL.SetField("vlan_pcp", act.pcp, None, "set_field"))
    return out


class _ActionState:
    """The match's protocol and VLAN, updated by each action, for OVS's
    "set_field lacks correct prerequisites" check."""

    def __init__(self, mb: "_MatchBuilder | None"):
        self.fields: dict[str, int] = {}
        self.vlan = False
        if mb is not None:
            for name in ("dl_type", "nw_proto", "icmp_type", "icmp_code"):
                if mb.masks.get(name) == F.FIELD_BY_NAME[name].full_mask:
                    self.fields[name] = mb.values[name]
            tci_mask = mb.masks.get("vlan_tci", 0)
            self.vlan = bool(tci_mask & F.VLAN_CFI and mb.values["vlan_tci"] & F.VLAN_CFI)
        self.known = mb is not None

    def check(self, act: FL.Action) -> None:
        t = type(act)
        if t is FL.PushVlan or t is FL.ModVlanVid or t is FL.ModVlanPcp:
            self.vlan = True
        elif t is FL.StripVlan:
            self.vlan = False
        elif t is FL.SetField and act.spelling == "set_field" and self.known:
            name = act.field
            if name in ("vlan_vid", "vlan_pcp") and not self.vlan:
                raise ValueError(f"set_field {name} needs a VLAN tag: match one (vlan_tci=0x1000/0x1000, "
                                 f"dl_vlan=N) or push_vlan:0x8100 before it")
            pre = prereq(name)
            if pre is not None and not packet_has(name, self.fields):
                raise ValueError(f"set_field {name} needs {_describe(pre)} in the match: {pre.hint}")
        elif t is FL.SetField and name_is_vlan_view(act.field):
            self.vlan = True


def name_is_vlan_view(name: str) -> bool:
    return name in ("dl_vlan", "dl_vlan_pcp")


def _parse(s: str, loc: _Located, port_map, of11: bool = False) -> Flow:
    m = _ACTIONS_RE.search(s)
    if not m:
        raise loc.error("missing 'actions=' (every flow needs actions; 'actions=drop' drops)", len(s))
    mb = _MatchBuilder(loc)
    extra: dict[str, int] = {}
    toks = _split_kv(s, 0, m.start(1))
    _parse_match_tokens(toks, loc, port_map, mb, extra)
    table = extra.get("table", 0)
    actions = _parse_actions(s, m.end(), len(s), loc, port_map, table, mb, of11)
    return Flow(
        match=Match(mb.values, mb.masks), actions=actions, table=table,
        priority=extra.get("priority", FL.DEFAULT_PRIORITY), cookie=extra.get("cookie", 0),
        idle_timeout=extra.get("idle_timeout", 0), hard_timeout=extra.get("hard_timeout", 0),
        line=loc.positions[0][0] if loc.positions else loc.line, notes=tuple(mb.notes))


def parse_flow(text: str, port_map: Mapping[str, int] | None = None, line: int = 1,
               of11: bool = False) -> Flow:
    """One flow in add-flow (or dump-flows) syntax. `of11`: sent as
    OpenFlow 1.1+ (`ofctl -O OpenFlow13`), where mod_vlan_vid/mod_vlan_pcp
    become push_vlan + set_field as ovs-ofctl encodes them."""
    if not text.strip():
        raise FlowSyntaxError("empty flow", line, 1)
    return _parse(text, _Located(None, line), port_map, of11)


def parse_match(text: str, port_map: Mapping[str, int] | None = None,
                line: int = 1) -> Match:
    """A match alone ('in_port=1,udp,tp_dst=53'), as del-flows and trace take it."""
    loc = _Located(None, line)
    mb = _MatchBuilder(loc)
    _parse_match_tokens(_split_kv(text, 0, len(text)), loc, port_map, mb, None)
    return Match(mb.values, mb.masks)


def parse_del_match(text: str, port_map: Mapping[str, int] | None = None
                    ) -> tuple[Match, int | None, int | None]:
    """del-flows' argument: a match plus optional table= and priority=."""
    loc = _Located(None, 1)
    mb = _MatchBuilder(loc)
    extra: dict[str, int] = {"_filter": 1}
    _parse_match_tokens(_split_kv(text, 0, len(text)), loc, port_map, mb, extra)
    return Match(mb.values, mb.masks), extra.get("table"), extra.get("priority")


def parse_filter(text: str, port_map: Mapping[str, int] | None = None) -> dict:
    """del-flows'/dump-flows' argument: match, table, priority, cookie and its mask."""
    loc = _Located(None, 1)
    mb = _MatchBuilder(loc)
    extra: dict[str, int] = {"_filter": 1}
    _parse_match_tokens(_split_kv(text, 0, len(text)), loc, port_map, mb, extra)
    cookie_mask = extra.get("cookie_mask", (1 << 64) - 1 if "cookie" in extra else 0)
    return {"match": Match(mb.values, mb.masks), "table": extra.get("table"),
            "priority": extra.get("priority"), "cookie": extra.get("cookie", 0) & cookie_mask,
            "cookie_mask": cookie_mask}


def logical_lines(text: str) -> list[tuple[str, list[tuple[int, int]]]]:
    """A flow file's flows: (text, position of every char as (line, col0)).

    Skips blank and '#' lines; a line ending in '\\' continues on the next.
    """
    out: list[tuple[str, list[tuple[int, int]]]] = []
    buf: list[str] = []
    pos: list[tuple[int, int]] = []
    for ln, raw in enumerate(text.splitlines(), start=1):
        if not buf and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        cont = raw.endswith("\\")
        body = raw[:-1] if cont else raw
        buf.append(body)
        pos.extend((ln, c) for c in range(len(body)))
        if cont:
            buf.append(" ")
            pos.append((ln, len(body)))
            continue
        out.append(("".join(buf), pos + [(ln, len(body))]))
        buf, pos = [], []
    if buf:
        out.append(("".join(buf), pos + [pos[-1] if pos else (1, 0)]))
    return out


def parse_flows(text: str, port_map: Mapping[str, int] | None = None,
                of11: bool = False) -> list[Flow]:
    """A flow file, all or nothing: the first error raises, nothing is returned."""
    flows = []
    for s, pos in logical_lines(text):
        if not s.strip():
            continue
        flows.append(_parse(s, _Located(pos, pos[0][0]), port_map, of11))
    return flows


def without_source(flow: Flow) -> Flow:
    return replace(flow, line=None, notes=())
