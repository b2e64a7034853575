"""Parse one action of a flow, in every spelling ovs-ofctl 3.1 accepts for
the subset: output, the reserved ports, the VLAN, field-modification,
pipeline and learning actions of ovs-actions(7).

Any `name:value` action may also be written `name(value)` (`output(2)`,
`goto_table(1)`, `mod_dl_dst(00:...)`), as OVS's key-value parser allows.
`one_action` raises ValueError with a message that says what OVS would
accept; the caller locates it in the flow text.
"""
from __future__ import annotations

import re
from typing import Mapping

from . import fields as F
from . import flows as FL
from .subfield import SubField, parse_subfield, resolve, width
from .values import _int, _ipv4, _ipv6, _mac, parse_port

# Action keywords that take no argument.

KNOWN = ("output, NORMAL, FLOOD, ALL, LOCAL, IN_PORT, CONTROLLER[:N], drop, "
         "push_vlan, pop_vlan, strip_vlan, mod_vlan_vid, mod_vlan_pcp, set_field, load, move, "
         "mod_dl_src/dst, mod_nw_src/dst/tos/ttl, mod_tp_src/dst, dec_ttl, resubmit, "
         "goto_table, learn, note, exit")


def split_call(token: str) -> tuple[str, str | None]:
    """'output(port=2,max_len=9)' -> ('output', 'port=2,max_len=9')."""
    i = token.find("(")
    if i > 0 and token.endswith(")"):
        return token[:i], token[i + 1:-1]
    return token, None


def parse_field_value(name: str, text: str, what: str) -> int:
    """A value for a field (or view) as set_field and learn take it."""
    text = text.strip()
    fld = F.FIELD_BY_NAME.get(name)
    kind = fld.kind if fld is not None else F.INT
    if kind == F.MAC:
        return _mac(text, what)
    if kind == F.IPV4:
        return _ipv4(text, what)
    if kind == F.IPV6:
        return _ipv6(text, what)
    return _int(text, what, 0, (1 << width(name)) - 1)


def one_action(key: str, value: str | None, port_map: Mapping[str, int] | None,
               table: int) -> FL.Action:
    k = key.lower()
    if value is None:
        name, inner = split_call(key)
        if inner is not None:
            return _called(name.lower(), inner, port_map, table)
        return _bare(key, k, port_map)
    if value == "":
        raise ValueError(f"{k}: missing value")
    return _valued(k, value, port_map, table)


def _bare(key: str, k: str, port_map) -> FL.Action:
    if k == "drop":
        return FL.Drop()
    if k in ("normal", "flood", "all", "in_port", "local", "controller"):
        return reserved_action(FL.RESERVED_PORTS[k.upper()])
    if k in ("strip_vlan", "pop_vlan"):
        return FL.StripVlan(k)
    if k == "dec_ttl":
        return FL.DecTtl()
    if k == "exit":
        return FL.Exit()
    if k == "push_vlan":
        raise ValueError("push_vlan needs an ethertype: push_vlan:0x8100 (or 0x88a8)")
    # A bare port number or name means output to it.
    try:
        return output(parse_port(key, port_map, "action"))
    except ValueError:
        raise ValueError(f"unknown action '{key}' (actions: {KNOWN})") from None


def _called(k: str, inner: str, port_map, table: int) -> FL.Action:
    if k == "output":
        return _output_args(inner, port_map)
    if k == "controller":
        return _controller_args(inner)
    if k == "resubmit":
        return _resubmit(inner, port_map, table)
    if k == "learn":
        return parse_learn(inner)
    if k == "dec_ttl":
        return FL.DecTtl()  # dec_ttl(ids...): controller ids do not change what we do
    return _valued(k, inner, port_map, table)


def _valued(k: str, v: str, port_map, table: int) -> FL.Action:
    if k == "output":
        if "=" in v:
            return _output_args(v, port_map)
        if "[" in v:
            src = parse_subfield(v, "output")
            if src.nbits > 32:
                raise ValueError(f"output:{v}: a port number has at most 32 bits")
            return FL.OutputField(src)
        return output(parse_port(v, port_map, "output"))
    if k == "controller":
        if "=" in v:
            return _controller_args(v)
        return FL.Controller(_int(v, "controller max_len", 0, 65535))
    if k == "resubmit":
        if "," in v:
            return _resubmit(v, port_map, table)
        return FL.Resubmit(parse_port(v, port_map, "resubmit port"), None)
    if k == "goto_table":
        tab = _int(v, "goto_table", 0, FL.N_TABLES - 1)
        if tab <= table:
            raise ValueError(f"goto_table:{tab} must go to a later table than {table}")
        return FL.GotoTable(tab)
    if k in FL.MOD_ACTIONS:
        name = FL.MOD_ACTIONS[k]
        if name == "nw_tos":
            tos = _int(v, k, 0, 255)
            if tos & 3:
                raise ValueError(f"{k}: {tos} has ECN bits set; mod_nw_tos takes a DSCP value "
                                 "shifted left by 2 (a multiple of 4)")
            return FL.SetField(name, tos, None, k)
        return FL.SetField(name, parse_field_value(name, v, k), None, k)
    if k == "mod_vlan_vid":
        return FL.ModVlanVid(_int(v, "mod_vlan_vid", 0, 4095))
    if k == "mod_vlan_pcp":
        return FL.ModVlanPcp(_int(v, "mod_vlan_pcp", 0, 7))
    if k == "push_vlan":
        et = _int(v, "push_vlan", 0, 0xFFFF)
        if et not in (0x8100, 0x88A8):
            raise ValueError(f"push_vlan: ethertype {et:#x} is not a VLAN ethertype (0x8100 or 0x88a8)")
        return FL.PushVlan(et)
    if k == "note":
        if not re.fullmatch(r"[0-9A-Fa-f]{1,2}(\.?[0-9A-Fa-f]{1,2})*", v):
            raise ValueError(f"note:{v}: expected hex bytes, e.g. note:41.42.43")
        return FL.Note(v)
    if k == "set_field":
        return _set_field(v)
    if k == "load":
        return _load(v)
    if k == "move":
        return _move(v)
    if k in ("strip_vlan", "pop_vlan", "dec_ttl", "drop") or k.upper() in FL.RESERVED_PORTS:
        raise ValueError(f"{k} takes no argument")
    raise ValueError(f"unknown action '{k}' (actions: {KNOWN})")


def _kv(inner: str) -> list[tuple[str, str | None]]:
    out = []
    for item in _split_top(inner):
        if "=" in item:
            a, b = item.split("=", 1)
            out.append((a.strip(), b.strip()))
        elif ":" in item and "[" not in item.split(":", 1)[0]:
            a, b = item.split(":", 1)
            out.append((a.strip(), b.strip()))
        else:
            out.append((item.strip(), None))
    return out


def _split_top(s: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        depth += (ch == "(") - (ch == ")")
        cur += ch
    out.append(cur)
    return [x.strip() for x in out if x.strip()]


def _output_args(inner: str, port_map) -> FL.Action:
    items = _kv(inner)
    if len(items) == 1 and items[0][1] is None:
        return output(parse_port(items[0][0], port_map, "output"))
    port, max_len = None, None
    for a, b in items:
        if a == "port" and b:
            port = parse_port(b, port_map, "output port")
        elif a == "max_len" and b:
            max_len = _int(b, "output max_len", 0, 65535)
        else:
            raise ValueError(f"output: unknown argument {a!r} (output(port=N,max_len=M))")
    if port is None:
        raise ValueError("output(...) needs port=N")
    act = output(port)
    if max_len is not None and isinstance(act, FL.Output):
        return FL.Output(port, max_len)
    return act


def _controller_args(inner: str) -> FL.Action:
    max_len = 65535
    for a, b in _kv(inner):
        if a == "max_len" and b:
            max_len = _int(b, "controller max_len", 0, 65535)
        elif a in ("reason", "id", "userdata", "pause", "meter_id") or a == "":
            continue  # what the controller is told; no effect on forwarding here
        elif b is None and a.isdigit():
            max_len = _int(a, "controller max_len", 0, 65535)
        else:
            raise ValueError(f"controller: unknown argument {a!r} "
                             "(controller(max_len=N,reason=R,id=I,userdata=D))")
    return FL.Controller(max_len)


def _resubmit(inner: str, port_map, table: int) -> FL.Action:
    parts = [p.strip() for p in inner.split(",")]
    if len(parts) == 1:
        return FL.Resubmit(parse_port(parts[0], port_map, "resubmit port"), None)
    if len(parts) > 3 or (len(parts) == 3 and parts[2] not in ("", "ct")):
        raise ValueError("resubmit(PORT,TABLE): too many arguments")
    if len(parts) == 3 and parts[2] == "ct":
        raise ValueError("resubmit(,T,ct) needs connection tracking, which is not supported")
    p, tb = parts[0], parts[1]
    port = parse_port(p, port_map, "resubmit port") if p else None
    tab = _int(tb, "resubmit table", 0, FL.N_TABLES - 1) if tb else None
    if port is None and tab is None:
        raise ValueError("resubmit(,) needs a port or a table")
    return FL.Resubmit(port, tab)


def _set_field(v: str) -> FL.Action:
    if "->" not in v:
        raise ValueError("set_field: expected VALUE->FIELD (e.g. set_field:4196->vlan_vid)")
    val, fname = v.rsplit("->", 1)
    try:
        name = resolve(fname.strip())
    except KeyError:
        raise ValueError(f"set_field: unknown field {fname.strip()!r}") from None
    if "[" in fname:
        raise ValueError("set_field: the destination is a whole field (use load: for bits)")
    mask = None
    if "/" in val:
        val, mtext = val.split("/", 1)
        mask = parse_field_value(name, mtext, f"set_field mask for {name}")
    value = parse_field_value(name, val, f"set_field value for {name}")
    if name == "vlan_vid" and not value & F.VLAN_CFI and (mask is None or mask & F.VLAN_CFI):
        raise ValueError(f"set_field:{value}->vlan_vid lacks the present bit: OpenFlow 1.3's "
                         f"vlan_vid is VID|0x1000, e.g. set_field:{value | 0x1000}->vlan_vid "
                         f"for VLAN {value}")
    if mask is not None and mask == (1 << width(name)) - 1:
        mask = None
    return FL.SetField(name, value & (mask if mask is not None else -1), mask, "set_field")


def _load(v: str) -> FL.Action:
    if "->" not in v:
        raise ValueError("load: expected VALUE->FIELD[bits] (e.g. load:5->NXM_NX_REG0[0..15])")
    val, dst = v.rsplit("->", 1)
    sub = parse_subfield(dst, "load destination")
    value = _int(val.strip(), "load value", 0, (1 << 128) - 1)
    if value >> sub.nbits:
        raise ValueError(f"load: {value:#x} does not fit in {sub.nbits} bits of {dst.strip()}")
    return FL.Load(sub, value)


def _move(v: str) -> FL.Action:
    if "->" not in v:
        raise ValueError("move: expected SRC[bits]->DST[bits] (e.g. move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[])")
    a, b = v.rsplit("->", 1)
    src = parse_subfield(a, "move source")
    dst = parse_subfield(b, "move destination")
    if src.nbits != dst.nbits:
        raise ValueError(f"move: source is {src.nbits} bits, destination {dst.nbits}")
    return FL.Move(src, dst)


_LEARN_INT = {"table": (0, FL.N_TABLES - 1), "priority": (0, FL.MAX_PRIORITY),
              "idle_timeout": (0, 65535), "hard_timeout": (0, 65535),
              "fin_idle_timeout": (0, 65535), "fin_hard_timeout": (0, 65535),
              "cookie": (0, (1 << 64) - 1), "limit": (0, (1 << 32) - 1)}


def parse_learn(inner: str) -> FL.Action:
    """learn(table=N,priority=P,idle_timeout=..,hard_timeout=..,cookie=..,
    FIELD[bits], FIELD[bits]=SRC[bits]|VALUE, load:SRC|VALUE->DST[bits], output:SRC[bits])."""
    opts: dict[str, int] = {}
    specs: list[FL.LearnSpec] = []
    for item in _split_top(inner):
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", item)
        if m and m.group(1) in _LEARN_INT:
            lo, hi = _LEARN_INT[m.group(1)]
            opts[m.group(1)] = _int(m.group(2), f"learn {m.group(1)}", lo, hi)
            continue
        if item in ("send_flow_rem", "delete_learned"):
            continue
        if item.startswith("load:"):
            body = item[5:]
            if "->" not in body:
                raise ValueError(f"learn: {item!r}: expected load:SRC->DST[bits]")
            a, b = body.rsplit("->", 1)
            dst = parse_subfield(b, "learn load destination")
            src, value = _src_or_value(a, dst, "learn load")
            specs.append(FL.LearnSpec("load", dst, src, value, item))
            continue
        if item.startswith("output:"):
            src = parse_subfield(item[7:], "learn output")
            specs.append(FL.LearnSpec("output", None, src, None, item))
            continue
        if "=" in item:
            a, b = item.split("=", 1)
            dst = parse_subfield(a, "learn match")
            src, value = _src_or_value(b, dst, "learn match")
            specs.append(FL.LearnSpec("match", dst, src, value, item))
            continue
        dst = parse_subfield(item, "learn match")
        specs.append(FL.LearnSpec("match", dst, dst, None, item))
    return FL.Learn(opts.get("table", 1), opts.get("priority", FL.DEFAULT_PRIORITY),
                    opts.get("idle_timeout", 0), opts.get("hard_timeout", 0),
                    opts.get("cookie", 0), tuple(specs), ",".join(_split_top(inner)))


def _src_or_value(text: str, dst: SubField, what: str) -> tuple[SubField | None, int | None]:
    text = text.strip()
    if re.match(r"^[A-Za-z_][A-Za-z0-9_]*(\[[0-9.]*\])?$", text):
        try:
            src = parse_subfield(text, what)
        except ValueError:
            src = None
        if src is not None:
            if src.nbits != dst.nbits:
                raise ValueError(f"{what}: {text} is {src.nbits} bits, {dst.to_text()} {dst.nbits}")
            return src, None
    if dst.whole:
        value = parse_field_value(dst.name, text, what)
    else:
        value = _int(text, what, 0, (1 << dst.nbits) - 1)
    return None, value


def reserved_action(port: int) -> FL.Action:
    return {
        FL.OFPP_NORMAL: FL.Normal(), FL.OFPP_FLOOD: FL.Flood(), FL.OFPP_ALL: FL.All(),
        FL.OFPP_IN_PORT: FL.InPort(), FL.OFPP_LOCAL: FL.Local(),
        FL.OFPP_CONTROLLER: FL.Controller(),
    }[port]


def output(port: int) -> FL.Action:
    if port in FL.RESERVED_NAMES:
        if port in (FL.OFPP_NONE, FL.OFPP_TABLE):
            raise ValueError(f"output:{FL.RESERVED_NAMES[port]} is not a valid output")
        return reserved_action(port)
    return FL.Output(port)
