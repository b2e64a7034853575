"""Random flow tables and packets aimed at their matches (hypothesis strategies
and a plain seeded generator for the benchmarks).

Values come from small pools so that flows overlap and packets hit them;
every generated flow satisfies the prerequisites, outputs only to existing
ports, and resubmits/goto_tables only forward (no loops), so Open vSwitch
and the reference classifier can be compared on every packet.
"""
from __future__ import annotations

import random

from hypothesis import strategies as st

from appliance.switch import fields as F
from appliance.switch import flows as FL
from appliance.switch.flows import Flow, FlowTable, Match
from appliance.switch.packet import Packet

PORTS = (1, 2, 3, 4, 5)
MACS = (0x180000000001, 0x180000000002, 0xFFFFFFFFFFFF, 0x020000000003)
IPS = (0x0A000001, 0x0A000002, 0x0A000102, 0xC0A80101)
IP6S = (1 << 120 | 1, 1 << 120 | 2, 0xFE80 << 112 | 5)
L4PORTS = (53, 67, 68, 80)
PRIORITIES = (0, 1, 100, 1000, 32768)
LABELS = (0, 5, 0x12345)
ICMP6_TYPES = (128, 135, 136)
PROTOS = (None, "ip", "arp", "tcp", "udp", "icmp", "ipv6", "tcp6", "udp6", "icmp6", "icmp6")
ND_FIELDS = ("nd_target", "nd_sll", "nd_tll")


def _fields_for(proto: str | None) -> list[str]:
    base = ["in_port", "dl_src", "dl_dst", "vlan_tci"]
    if proto is None:
        return base + ["dl_type"]
    if proto == "arp":
        return base + ["arp_spa", "arp_tpa", "arp_op"]
    if proto in ("ip", "tcp", "udp", "icmp"):
        extra = ["nw_src", "nw_dst"]
        if proto == "ip":
            extra.append("nw_proto")
        if proto in ("tcp", "udp"):
            extra += ["tp_src", "tp_dst"]
        if proto == "icmp":
            extra += ["icmp_type", "icmp_code"]
        return base + extra
    extra = ["ipv6_src", "ipv6_dst", "ipv6_label"]
    if proto in ("tcp6", "udp6"):
        extra += ["tp_src", "tp_dst"]
    if proto == "icmp6":
        extra += ["icmp_type", "icmp_code"]
    return base + extra


def _value(r: random.Random, name: str) -> tuple[int, int]:
    """A (value, mask) for a field, masked sometimes."""
    fld = F.FIELD_BY_NAME[name]
    full = fld.full_mask
    if name == "in_port":
        return r.choice(PORTS), full
    if name in ("dl_src", "dl_dst"):
        v = r.choice(MACS)
        if r.random() < 0.2:
            return v & 0x010000000000, 0x010000000000  # multicast bit
        return v, full
    if name == "vlan_tci":
        kind = r.randrange(3)
        if kind == 0:
            return 0, 0xFFFF  # untagged
        if kind == 1:
            return F.VLAN_CFI | r.choice((5, 7)), F.VLAN_CFI | F.VLAN_VID_MASK
        return F.VLAN_CFI, F.VLAN_CFI  # any tag
    if name == "dl_type":
        return r.choice((0x0800, 0x0806, 0x86DD, 0x88CC)), full
    if name in ("nw_src", "nw_dst", "arp_spa", "arp_tpa"):
        plen = r.choice((32, 32, 24, 16, 0))
        mask = (full << (32 - plen)) & full
        return r.choice(IPS) & mask, mask
    if name == "ipv6_label":
        return (r.choice(LABELS), full) if r.random() < 0.7 else (r.choice(LABELS) & 0xF, 0xF)
    if name in ("nd_sll", "nd_tll"):
        v = r.choice(MACS)
        return (v, full) if r.random() < 0.8 else (v & 0xFFFFFF000000, 0xFFFFFF000000)
    if name in ("ipv6_src", "ipv6_dst", "nd_target"):
        plen = r.choice((128, 64, 8))
        mask = (full << (128 - plen)) & full
        return r.choice(IP6S) & mask, mask
    if name == "nw_proto":
        return r.choice((6, 17, 1, 47)), full
    if name == "arp_op":
        return r.choice((1, 2)), full
    if name in ("tp_src", "tp_dst"):
        if r.random() < 0.15:
            return r.choice(L4PORTS) & 0xFF00, 0xFF00
        return r.choice(L4PORTS), full
    if name in ("icmp_type", "icmp_code"):
        return r.choice((0, 3, 8)), full
    raise KeyError(name)


def random_match(r: random.Random) -> Match:
    proto = r.choice(PROTOS)
    values, masks = {}, {}
    if proto is not None:
        dl_type, nw_proto = F.SHORTHANDS[proto]
        values["dl_type"], masks["dl_type"] = dl_type, 0xFFFF
        if nw_proto is not None:
            values["nw_proto"], masks["nw_proto"] = nw_proto, 0xFF
    for name in _fields_for(proto):
        if r.random() < 0.3:
            values[name], masks[name] = _value(r, name)
    if proto == "icmp6":
        if "icmp_type" in values:
            values["icmp_type"] = r.choice(ICMP6_TYPES)
        if values.get("icmp_type") in (135, 136) and values.get("icmp_code", 0) == 0:
            # Neighbour discovery: its fields need the type (and code 0).
            for name in ND_FIELDS:
                if F.FIELD_BY_NAME[name].prereq.satisfied_by(values, masks) and r.random() < 0.5:
                    values[name], masks[name] = _value(r, name)
    return Match(values, masks)


def random_actions(r: random.Random, table: int, n_tables: int) -> tuple[FL.Action, ...]:
    acts: list[FL.Action] = []
    for _ in range(r.choice((0, 1, 1, 2, 3))):
        k = r.randrange(12)
        if k <= 3:
            acts.append(FL.Output(r.choice(PORTS)))
        elif k == 4:
            acts.append(FL.Normal())
        elif k == 5:
            acts.append(r.choice((FL.Flood(), FL.All(), FL.InPort(), FL.Local(), FL.Controller())))
        elif k in (6, 7):
            acts.append(FL.SetField(r.choice(("dl_src", "dl_dst")), r.choice(MACS)))
        elif k == 8:
            acts.append(FL.ModVlanVid(r.choice((5, 9))))
        elif k == 9:
            acts.append(FL.StripVlan())
        elif k in (10, 11) and table + 1 < n_tables:
            port = r.choice(PORTS) if r.random() < 0.2 else None
            acts.append(FL.Resubmit(port, r.randrange(table + 1, n_tables)))
    if table + 1 < n_tables and r.random() < 0.2:
        acts.append(FL.GotoTable(r.randrange(table + 1, n_tables)))
    return tuple(acts)


def random_flow(r: random.Random, n_tables: int = 3) -> Flow:
    table = r.randrange(n_tables)
    return Flow(match=random_match(r), actions=random_actions(r, table, n_tables),
                table=table, priority=r.choice(PRIORITIES))


def random_table(r: random.Random, n: int, n_tables: int = 3) -> FlowTable:
    return FlowTable(random_flow(r, n_tables) for _ in range(n))


def random_packet(r: random.Random, aim: Match | None = None) -> Packet:
    """A packet; with `aim`, one that satisfies that match (when possible)."""
    if aim is not None and "dl_type" in aim:
        dl_type = aim.values["dl_type"]
    else:
        dl_type = r.choice((0x0800, 0x0800, 0x0806, 0x86DD, 0x88CC))
    f = {"in_port": r.choice(PORTS + (FL.OFPP_LOCAL,) if r.random() < 0.05 else PORTS),
         "dl_src": r.choice(MACS), "dl_dst": r.choice(MACS), "dl_type": dl_type}
    if r.random() < 0.3:
        f["vlan_tci"] = F.VLAN_CFI | r.choice((5, 7)) | (r.randrange(8) << 13)
    if dl_type == 0x0800:
        proto = aim.values["nw_proto"] if aim is not None and "nw_proto" in aim else r.choice((6, 17, 1, 47))
        f.update(nw_src=r.choice(IPS), nw_dst=r.choice(IPS), nw_proto=proto, nw_ttl=64)
    elif dl_type == 0x86DD:
        proto = aim.values["nw_proto"] if aim is not None and "nw_proto" in aim else r.choice((6, 17, 58))
        f.update(ipv6_src=r.choice(IP6S), ipv6_dst=r.choice(IP6S), nw_proto=proto, nw_ttl=64)
    elif dl_type == 0x0806:
        f.update(arp_spa=r.choice(IPS), arp_tpa=r.choice(IPS), arp_op=r.choice((1, 2)),
                 arp_sha=r.choice(MACS), arp_tha=0)
    if dl_type == 0x86DD:
        f["ipv6_label"] = r.choice(LABELS)
    if f.get("nw_proto") in (6, 17):
        f.update(tp_src=r.choice(L4PORTS), tp_dst=r.choice(L4PORTS))
    elif f.get("nw_proto") == 1 and dl_type == 0x0800:
        f.update(icmp_type=r.choice((0, 3, 8)), icmp_code=r.choice((0, 3)))
    elif f.get("nw_proto") == 58 and dl_type == 0x86DD:
        f.update(icmp_type=r.choice(ICMP6_TYPES), icmp_code=r.choice((0, 0, 1)),
                 nd_target=r.choice(IP6S), nd_sll=r.choice(MACS + (0,)), nd_tll=r.choice(MACS + (0,)))
    if aim is not None:
        for name, mask in aim.masks.items():
            if name in ("dl_type", "nw_proto"):
                continue
            full = F.FIELD_BY_NAME[name].full_mask
            f[name] = aim.values[name] | (f.get(name, r.getrandbits(F.FIELD_BY_NAME[name].width)) & ~mask & full)
        if f.get("vlan_tci", 0) and not f["vlan_tci"] & F.VLAN_CFI:
            f["vlan_tci"] = 0  # no tag: the whole TCI reads 0
    for name in ND_FIELDS:
        # Only what a frame can carry (and a trace can say): ND fields on
        # an NS/NA with code 0, the source address on an NS, the target's
        # on an NA.
        if name in f and not F.FIELD_BY_NAME[name].prereq.holds_for(f):
            del f[name]
    return Packet(f)


def packets_for(table: FlowTable, r: random.Random, n: int) -> list[Packet]:
    flows = table.flows
    out = []
    for _ in range(n):
        aim = r.choice(flows).match if flows and r.random() < 0.8 else None
        out.append(random_packet(r, aim))
    return out


# -- hypothesis strategies (a seed drawn by hypothesis drives the generator,
#    so failures shrink to a seed and a size and replay exactly) ---------------

@st.composite
def flow_tables(draw, min_size: int = 1, max_size: int = 25, n_tables: int = 3):
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(min_size, max_size))
    return random_table(random.Random(seed), n, n_tables)


@st.composite
def flows(draw, n_tables: int = 3):
    return random_flow(random.Random(draw(st.integers(0, 2**32 - 1))), n_tables)


def ambiguous(table: FlowTable, lookups) -> bool:
    """Whether any lookup's winner tied with another matching flow of equal
    priority (OpenFlow leaves those undefined)."""
    for lk in lookups:
        if lk.flow is None:
            continue
        n = sum(1 for f in table if f.table == lk.table and f.priority == lk.flow.priority
                and f.match.matches(lk.packet.fields))
        if n > 1:
            return True
    return False


# -- OpenFlow 1.3 pipelines: flow text with every action class of the subset,
#    loaded with `-O OpenFlow13` on both sides (tests/integration/switch) ----

NONEXISTENT_PORT = 9


def rich_match(r: random.Random, table: int) -> tuple[str, dict]:
    """A match's text, and what it guarantees (dl_type, nw_proto, a VLAN tag)."""
    m = random_match(r)
    text = m.to_ofctl()
    known = {"dl_type": m.values.get("dl_type"), "nw_proto": m.values.get("nw_proto"),
             "vlan": bool(m.masks.get("vlan_tci", 0) & F.VLAN_CFI and m.values.get("vlan_tci", 0) & F.VLAN_CFI)}
    extra = []
    if table and r.random() < 0.3:
        extra.append(f"reg0={r.choice((0, 5, 7))}")
    if "vlan_tci" not in m and r.random() < 0.2:
        vid = r.choice((0, 5, 100))
        extra.append(f"vlan_vid={vid | F.VLAN_CFI if vid else 0}")
        known["vlan"] = bool(vid)
    return ",".join(x for x in [text, *extra] if x), known


def rich_actions(r: random.Random, table: int, n_tables: int, known: dict) -> list[str]:
    acts: list[str] = []
    tags = [known["vlan"]]  # is there a tag, outermost first, as the match says
    ip = known["dl_type"] in (0x0800, 0x86DD)
    l4 = ip and known["nw_proto"] in (6, 17)
    for _ in range(r.choice((0, 1, 2, 2, 3, 4))):
        k = r.randrange(20)
        if k <= 2:
            acts.append(f"output:{r.choice(PORTS + (NONEXISTENT_PORT,))}")
        elif k == 3:
            acts.append(r.choice(("NORMAL", "FLOOD", "ALL", "LOCAL", "IN_PORT", "CONTROLLER:64",
                                  "output(2)", "output(port=3,max_len=128)")))
        elif k == 4 and sum(tags) < 2:  # OVS carries two tags at most (OFPBAC_BAD_TAG)
            acts.append("push_vlan:0x8100")
            tags.insert(0, True)
        elif k == 5 and tags[0]:
            acts.append(f"set_field:{F.VLAN_CFI | r.choice((5, 9, 100))}->vlan_vid")
        elif k == 6 and tags[0]:
            acts.append(r.choice(("pop_vlan", "strip_vlan")))
            tags.pop(0)
            if not tags:
                tags = [False]
        elif k == 7:
            acts.append(r.choice((f"mod_vlan_vid:{r.choice((5, 9))}", f"mod_vlan_pcp:{r.randrange(8)}",
                                  f"mod_vlan_vid({r.choice((5, 9))})")))
            if not tags[0]:
                tags.insert(0, True)
        elif k == 8 and tags[0]:
            acts.append(f"set_field:{r.randrange(8)}->vlan_pcp")
        elif k == 9:
            mac = F.format_mac(r.choice(MACS))
            acts.append(r.choice((f"mod_dl_src:{mac}", f"set_field:{mac}->eth_dst",
                                  f"mod_dl_dst({mac})", "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]")))
        elif k == 10 and ip and known["dl_type"] == 0x0800:
            ipa = F.format_ipv4(r.choice(IPS))
            acts.append(r.choice((f"set_field:{ipa}->nw_dst", f"mod_nw_src:{ipa}", "dec_ttl",
                                  f"set_field:{r.randrange(64)}->ip_dscp")))
        elif k == 10 and ip:
            acts.append(f"set_field:{r.choice(LABELS):#x}->ipv6_label")
        elif k == 11 and l4:
            l4name = "tcp" if known["nw_proto"] == 6 else "udp"
            acts.append(r.choice((f"set_field:{r.choice(L4PORTS)}->{l4name}_dst",
                                  f"mod_tp_src:{r.choice(L4PORTS)}")))
        elif k == 12:
            acts.append(r.choice(("load:0x5->NXM_NX_REG0[]", "set_field:7->reg0",
                                  "move:NXM_OF_IN_PORT[]->NXM_NX_REG0[0..15]", "load:0x1->NXM_NX_REG0[0..3]")))
        elif k in (13, 14) and table + 1 < n_tables:
            t = r.randrange(table + 1, n_tables)
            acts.append(r.choice((f"resubmit(,{t})", f"resubmit({r.choice(PORTS)},{t})")))
        elif k == 15 and table + 1 < n_tables:
            acts.append(f"learn(table={r.randrange(table + 1, n_tables)},priority=7,"
                        "NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],output:NXM_OF_IN_PORT[])")
    if table + 1 < n_tables and r.random() < 0.35:
        t = r.randrange(table + 1, n_tables)
        acts.append(r.choice((f"goto_table:{t}", f"goto_table({t})")))
    return acts or ["drop"]


def rich_table_text(r: random.Random, n: int, n_tables: int = 4) -> str:
    """n flows over n_tables tables, as flow-file text (cookie = line number)."""
    lines = []
    for i in range(n):
        table = r.randrange(n_tables) if i else 0
        match, known = rich_match(r, table)
        head = [f"cookie={i + 1:#x}", f"table={table}", f"priority={r.choice(PRIORITIES)}"]
        if match:
            head.append(match)
        lines.append(",".join(head) + " actions=" + ",".join(rich_actions(r, table, n_tables, known)))
    return "\n".join(lines) + "\n"


def fan_out_pipeline() -> str:
    """Four tables where every flow rewrites something and jumps on, as a
    pipeline of per-port VLANs, source and destination tables does: 5 x 8 x
    8 ways through to the last table."""
    macs = [f"02:00:00:00:00:{i:02x}" for i in range(1, 9)]
    lines = [f"priority=100,in_port={p},actions=mod_vlan_vid:{p * 10},goto_table:1" for p in PORTS[:3]]
    lines += ["priority=50,dl_vlan=7,actions=strip_vlan,goto_table:1",
              "priority=0,actions=mod_dl_src:0e:00:00:00:00:01,goto_table:1"]
    for i, mac in enumerate(macs):
        jump = "resubmit(,2)" if i % 2 else "goto_table:2"
        lines.append(f"table=1,priority={10 + i},dl_src={mac},actions=mod_dl_dst:{macs[-1 - i]},{jump}")
    for i, mac in enumerate(macs):
        lines.append(f"table=2,priority=10,dl_dst={mac},actions=mod_vlan_vid:{100 + i},goto_table:3")
    for i, mac in enumerate(macs):
        out = f"output:{PORTS[i % len(PORTS)]}" if i % 4 else "NORMAL"
        lines.append(f"table=3,priority=10,dl_src={mac},dl_vlan={100 + i},actions={out}")
    lines.append("table=3,priority=0,actions=FLOOD")
    return "\n".join(lines) + "\n"


def retagging_pipeline(tables: int = 8, per_table: int = 20) -> str:
    """`tables` goto_table tables, each with `per_table` flows that rewrite a header to a
    constant of their own (VID, PCP, source or destination MAC) and as many that match on
    the VID or source MAC an earlier table may have written: a VLAN-per-class pipeline as
    OVS users write it. Five such tables passed the verifier's 10^6 instructions when each
    flow's constant was a state of its own."""
    rewrites = ("mod_vlan_vid:{v}", "mod_dl_src:02:00:00:00:{t:02x}:{i:02x}", "mod_vlan_pcp:{p}",
                "mod_dl_dst:02:00:00:00:{t:02x}:{i:02x}")
    lines = []
    for t in range(tables):
        jump = f",goto_table:{t + 1}" if t < tables - 1 else ""
        for i in range(per_table):
            act = rewrites[i % len(rewrites)].format(v=i + 1, t=max(t - 1, 0), i=i, p=i % 8)
            lines.append(f"table={t},priority={100 + i},ip,nw_src=10.{t}.{i}.0/24,actions={act}{jump}")
            match = f"dl_vlan={i + 1}" if i % 2 else f"dl_src=02:00:00:00:{max(t - 1, 0):02x}:{i:02x}"
            lines.append(f"table={t},priority={50 + i},{match},actions=output:{PORTS[i % 4]}{jump}")
        lines.append(f"table={t},priority=0,actions=" + (f"goto_table:{t + 1}" if jump else "NORMAL"))
    return "\n".join(lines) + "\n"
