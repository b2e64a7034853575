"""The compiled datapath agrees with the reference classifier, packet by packet.

The test build of a table runs under BPF_PROG_TEST_RUN and records, for
each frame, the flow matched by every lookup and every output with the
MACs and VLAN the copy left with; `classify()` must say exactly the same.
Checked on the seed's table and on hypothesis-generated tables (every
action of the language, every match field, masks, resubmit/goto_table),
each compiled both as straight-line code and as tuple space search
(hashed: every mask through the hash map; tuple: small masks inline).
"""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from appliance.switch import flows as FL
from appliance.switch import parser
from appliance.switch.bridge import seed_bridge
from appliance.switch.classifier import classify
from appliance.switch.fields import FIELD_BY_NAME
from appliance.switch.flows import Flow, FlowTable, Match
from appliance.switch.packet import Packet
from appliance.switch.parser import parse_flows
from appliance.switch.datapath.testrun import TestDatapath
from tests.support.flowgen import fan_out_pipeline, retagging_pipeline


DATA = Path(__file__).resolve().parents[3] / "data"
SEED = DATA / "seed-flows.txt"
PORTS = (1, 2, 3, 4, 5)
COUNTS = {"tables": 0, "packets": 0}

# Small value pools so generated packets hit generated matches.
POOL = {
    "in_port": list(PORTS),
    "dl_src": [0x1800000000E8, 0x020000000050, 0xD600000000BF],
    "dl_dst": [0xFFFFFFFFFFFF, 0x1800000000E8, 0x020000000050],
    "vlan_tci": [0, 0x1005, 0x3007],
    "dl_type": [0x0800, 0x0806, 0x86DD, 0x88B5],
    "nw_src": [0xC0A80101, 0xC0A80132, 0x64600001],
    "nw_dst": [0xC0A80101, 0xC0A80108, 0x64640101],
    "arp_spa": [0xC0A80101, 0xC0A80132],
    "arp_tpa": [0xC0A80101, 0xC0A80108],
    "arp_op": [1, 2],
    "arp_sha": [0x1800000000E8, 0x020000000050],
    "arp_tha": [0, 0x020000000050],
    "nw_proto": [6, 17, 1, 58],
    "nw_tos": [0, 0x20],
    "nw_ttl": [64, 1],
    "icmp_type": [0, 8, 135, 136],
    "icmp_code": [0, 3],
    "tp_src": [53, 67, 68, 1234],
    "tp_dst": [53, 67, 68, 80],
    "ipv6_src": [0xFE80 << 112 | 1, 0x20010DB8 << 96 | 5],
    "ipv6_dst": [0xFF02 << 112 | 1, 0x20010DB8 << 96 | 6],
    "ipv6_label": [0, 5, 0xABCDE],
    "nd_target": [0xFE80 << 112 | 1, 0x20010DB8 << 96 | 6],
    "nd_sll": [0, 0x020000000050],
    "nd_tll": [0, 0x1800000000E8],
}


def field_match(name):
    fld = FIELD_BY_NAME[name]
    value = st.sampled_from(POOL[name])
    if not fld.maskable:
        return value.map(lambda v: (v, fld.full_mask))
    mask = st.sampled_from([fld.full_mask, fld.full_mask, fld.full_mask ^ 0xFF,
                            (fld.full_mask >> 1) << 1 | 0, 0x1000 & fld.full_mask or 1])
    return st.tuples(value, mask)


@st.composite
def matches(draw):
    names = draw(st.lists(st.sampled_from(sorted(POOL)), max_size=4, unique=True))
    values, masks = {}, {}
    for n in names:
        v, m = draw(field_match(n))
        values[n], masks[n] = v, m
    return Match(values, masks)


def actions(table: int, n_tables: int):
    simple = st.one_of(
        st.sampled_from(PORTS).map(FL.Output),
        st.just(FL.Normal()), st.just(FL.Flood()), st.just(FL.All()),
        st.just(FL.InPort()), st.just(FL.Local()), st.just(FL.Controller()),
        st.sampled_from(POOL["dl_dst"]).map(lambda v: FL.SetField("dl_dst", v)),
        st.sampled_from(POOL["dl_src"]).map(lambda v: FL.SetField("dl_src", v)),
        st.sampled_from([5, 7, 100]).map(FL.ModVlanVid),
        st.just(FL.StripVlan()),
    )
    later = list(range(table + 1, n_tables))
    choices = [simple]
    if later:
        choices.append(st.tuples(st.sampled_from([None] + list(PORTS)), st.sampled_from(later))
                       .map(lambda pt: FL.Resubmit(pt[0], pt[1])))
    acts = st.lists(st.one_of(*choices), max_size=4)
    if later:
        return st.tuples(acts, st.one_of(st.none(), st.sampled_from(later))).map(
            lambda a: tuple(a[0]) + ((FL.GotoTable(a[1]),) if a[1] is not None else ()))
    return acts.map(tuple)


@st.composite
def tables(draw):
    n_tables = draw(st.integers(1, 3))
    flows = []
    for t in range(n_tables):
        for _ in range(draw(st.integers(0, 8))):
            flows.append(Flow(draw(matches()), draw(actions(t, n_tables)), table=t,
                              priority=draw(st.sampled_from([0, 10, 100, 100, 1000]))))
    return FlowTable(flows)


@st.composite
def packets(draw, table: FlowTable):
    f = {n: draw(st.sampled_from(POOL[n])) for n in
         ("in_port", "dl_src", "dl_dst", "vlan_tci", "dl_type")}
    # Aim at a flow: take its matched values where it has them.
    flows = table.flows
    if flows and draw(st.booleans()):
        target = draw(st.sampled_from(flows))
        f.update(target.match.values)
        if "in_port" in f and f["in_port"] not in PORTS:
            f["in_port"] = 1
    dl_type = f["dl_type"]
    if dl_type == 0x0806:
        for n in ("arp_spa", "arp_tpa", "arp_op", "arp_sha", "arp_tha"):
            f[n] = draw(st.sampled_from(POOL[n]))
    elif dl_type in (0x0800, 0x86DD):
        for n in ("nw_proto", "nw_tos", "nw_ttl"):
            f[n] = draw(st.sampled_from(POOL[n]))
        if dl_type == 0x0800:
            f["nw_src"], f["nw_dst"] = draw(st.sampled_from(POOL["nw_src"])), draw(st.sampled_from(POOL["nw_dst"]))
        else:
            f["ipv6_src"], f["ipv6_dst"] = draw(st.sampled_from(POOL["ipv6_src"])), draw(st.sampled_from(POOL["ipv6_dst"]))
            f["ipv6_label"] = draw(st.sampled_from(POOL["ipv6_label"]))
        if f["nw_proto"] in (6, 17):
            f["tp_src"], f["tp_dst"] = draw(st.sampled_from(POOL["tp_src"])), draw(st.sampled_from(POOL["tp_dst"]))
        elif f["nw_proto"] in (1, 58):
            f["icmp_type"], f["icmp_code"] = draw(st.sampled_from(POOL["icmp_type"])), draw(st.sampled_from(POOL["icmp_code"]))
            if f["nw_proto"] == 58:
                # Neighbour discovery when the type and code make it one
                # (the frame built from these fields carries them then).
                for n in ("nd_target", "nd_sll", "nd_tll"):
                    f[n] = draw(st.sampled_from(POOL[n]))
    if f.get("vlan_tci"):
        f["vlan_tci"] |= 0x1000
    # What the classifier sees is the frame the program gets.
    frame = Packet(f).to_bytes()
    return Packet.from_bytes(frame, in_port=f["in_port"])


class _Bridge:
    """Just what classify() needs to expand FLOOD/ALL."""
    ports = {f"p{n}": n for n in PORTS}


def expected(table: FlowTable, pkt: Packet):
    res = classify(table, pkt, _Bridge())
    outs = [(o.port, o.packet["dl_src"], o.packet["dl_dst"], o.packet["vlan_tci"])
            for o in res.outputs]
    return [lk.flow for lk in res.lookups], outs


def check(dp: TestDatapath, table: FlowTable, pkt: Packet, frame: bytes | None = None):
    want_flows, want_outs = expected(table, pkt)
    got, _ = dp.run(pkt if frame is None else frame, in_port=pkt.in_port)
    got_outs = [(o.port, o.dl_src, o.dl_dst, o.vlan_tci) for o in got.outputs]
    assert list(got.flows) == want_flows, (pkt, got.flows, want_flows)
    # The test build records the first MAX_TRACE_OUT outputs and counts them all.
    assert got_outs == want_outs[:len(got_outs)], (pkt, got_outs, want_outs, [str(f) for f in table])
    assert got.n_outputs == len(want_outs), (pkt, got.n_outputs, len(want_outs), [str(f) for f in table])
    COUNTS["packets"] += 1


@pytest.mark.parametrize("strategy,defines", [
    ("linear", ()), ("tuple", ()), ("hashed", ()),
    # Headers copied to the stack, as for frames built in pages (test runs
    # are always linear, so force that path), on whole and cut-off frames.
    ("linear", ("DP_PARSE_COPY",)),
], ids=["linear", "tuple", "hashed", "linear-copy"])
def test_seed_table_agrees(strategy, defines):
    br = seed_bridge()
    table = FlowTable(parse_flows(SEED.read_text(), br.port_map))
    pkts = packets(table)
    with TestDatapath(table, PORTS, strategy=strategy, defines=defines) as dp:
        @settings(max_examples=300, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(pkts, st.integers(0, 60))
        def run(pkt, cut):
            frame = pkt.to_bytes()
            if defines and cut:
                # A frame that ends inside its headers: what is cut off is
                # absent.  BPF_PROG_TEST_RUN wants a whole IPv4/IPv6 header
                # after an untagged Ethernet header, so cut no deeper.
                keep = 18 + {0x0800: 20, 0x86DD: 40}.get(pkt["dl_type"], 0)
                frame = frame[:max(keep, len(frame) - cut)]
                pkt = Packet.from_bytes(frame, in_port=pkt.in_port)
            check(dp, table, pkt, frame)
        run()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_generated_tables_agree(data):
    table = data.draw(tables())
    # The flows themselves, for a failure to be reproduced by hand.
    note("\n".join(str(f) for f in table))
    COUNTS["tables"] += 1
    for strategy in ("linear", "hashed"):
        with TestDatapath(table, PORTS, strategy=strategy) as dp:
            for _ in range(12):
                check(dp, table, data.draw(packets(table)))


RESUBMIT_TWICE = DATA / "resubmit-twice-flows.txt"


NESTED_RESUBMITS = DATA / "nested-resubmits-flows.txt"


def _parse_generated(path: Path) -> FlowTable:
    """A table as generated: without the prerequisites the parser insists on (the datapath
    and the classifier must agree on such flows all the same)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(parser, "_check_prereqs", lambda mb: None)
        return FlowTable(parse_flows(path.read_text()))


def _generated(path: Path):
    """`_parse_generated(path)`, loaded in every strategy."""
    table = _parse_generated(path)
    dps = {}
    try:
        for s in ("linear", "tuple", "hashed"):
            dps[s] = TestDatapath(table, PORTS, strategy=s)
        yield table, dps
    finally:
        for dp in dps.values():
            dp.close()


@pytest.fixture(scope="module")
def resubmit_twice():
    yield from _generated(RESUBMIT_TWICE)


@pytest.fixture(scope="module")
def nested_resubmits():
    yield from _generated(NESTED_RESUBMITS)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_table_that_resubmits_twice_into_hashed_tables_loads_and_agrees(resubmit_twice, data):
    """Every output and header change an action list leaves used to be a
    state the verifier kept apart for each table after it; with two inline
    resubmits into hashed tables that passed its 10^6 instructions."""
    table, dps = resubmit_twice
    pkt = data.draw(packets(table))
    for dp in dps.values():
        check(dp, table, pkt)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_table_with_nested_resubmits_into_hashed_tables_loads_and_agrees(nested_resubmits, data):
    """Each hashed table kept its tuple key on the stack, and a resubmit nests the target's
    code in the caller's frame: nested tables passed BPF's 512 bytes of stack (the verifier
    refused the program). The key now lives in a per-CPU map."""
    table, dps = nested_resubmits
    pkt = data.draw(packets(table))
    for dp in dps.values():
        check(dp, table, pkt)


def test_a_frame_sent_more_often_than_the_trace_records_is_counted_whole():
    """Three tables of FLOOD, FLOOD, ALL send a broadcast 35 times; the test build records
    the first 32 and counted only those, so the datapath looked as if it sent 32 (a
    generated table found it)."""
    table = FlowTable(parse_flows(
        "priority=0 actions=FLOOD,FLOOD,ALL,strip_vlan,goto_table:1\n"
        "table=1, priority=0 actions=FLOOD,FLOOD,ALL,output:1,goto_table:2\n"
        "table=2, priority=0 actions=ALL\n"))
    pkt = Packet({"in_port": 1, "dl_src": 0x1800000000E8, "dl_dst": 0xFFFFFFFFFFFF, "dl_type": 0x0800,
                  "nw_src": 0xC0A80101, "nw_dst": 0xC0A80101, "nw_proto": 6, "nw_tos": 0, "nw_ttl": 64,
                  "tp_src": 53, "tp_dst": 53, "vlan_tci": 0})
    assert len(expected(table, pkt)[1]) == 35
    with TestDatapath(table, PORTS) as dp:
        check(dp, table, pkt)


FAUCET = DATA / "faucet-flows.txt"


def check_udp(dp: TestDatapath, table: FlowTable, in_port: int, src: int, dst: int, tci: int,
              nw_src: int = 0x0A000001):
    """`check` on a UDP frame from `src` to `dst` (VLAN tag `tci`, 0: none), sent as bytes."""
    f = {"in_port": in_port, "dl_src": src, "dl_dst": dst, "dl_type": 0x0800, "nw_proto": 17,
         "nw_src": nw_src, "nw_dst": 0x0A000002, "tp_src": 1, "tp_dst": 2, "nw_ttl": 64, "vlan_tci": tci}
    frame = Packet(f).to_bytes()
    check(dp, table, Packet.from_bytes(frame, in_port=in_port), frame)


@pytest.mark.parametrize("strategy", ["linear", "hashed"])
def test_faucet_pipeline_agrees(strategy):
    """The Faucet tutorial's four tables (push_vlan, set_field on vlan_vid,
    CONTROLLER, goto_table, pop_vlan) compiled, against the classifier."""
    table = FlowTable(parse_flows(FAUCET.read_text(), {f"p{n}": n for n in PORTS}, of11=True))
    hosts = [0x001111000000, 0x002222000000, 0x004444000000, 0x003333000000]
    dsts = hosts + [0xFFFFFFFFFFFF, 0x333300000001, 0x01005E000001, 0x0180C2000003]
    with TestDatapath(table, PORTS, strategy=strategy) as dp:
        for in_port, src, dst, tci in itertools.product(PORTS, hosts + [0x0E0000000001], dsts, (0, 0x1064)):
            check_udp(dp, table, in_port, src, dst, tci)


@pytest.mark.parametrize("strategy", ["linear", "hashed"])
def test_a_pipeline_whose_every_flow_jumps_on_loads_and_agrees(strategy):
    """Each table's code once however many flows jump to it: with a copy
    per jump this pipeline is 320 copies of its last table, past what the
    verifier accepts."""
    table = FlowTable(parse_flows(fan_out_pipeline()))
    macs = [0x020000000000 + i for i in range(1, 10)]
    with TestDatapath(table, PORTS, strategy=strategy) as dp:
        for in_port, src, tci in itertools.product(PORTS, macs, (0, 0x1007)):
            check_udp(dp, table, in_port, src, macs[0], tci)


@pytest.mark.parametrize("strategy", ["linear", "hashed"])
def test_a_pipeline_of_eight_retagging_tables_loads_and_agrees(strategy):
    """Each flow's rewrite writes a constant of its own (a VID, a MAC) that later tables
    match on; straight-line code for five such tables was refused by the verifier ("BPF
    program is too large") until a rewritten header was hidden from it (`dp_blind`)."""
    table = FlowTable(parse_flows(retagging_pipeline(8)))
    with TestDatapath(table, PORTS, strategy=strategy) as dp:
        for in_port, nw_src, src, tci in itertools.product(
                PORTS[:2], (0x0A000001, 0x0A000301, 0x0A010201, 0x0A070501, 0xC0A80101),
                (0x020000000000, 0x020000000003, 0x020000000601, 0x0E0000000001), (0, 0x1002, 0x1005, 0x3008)):
            check_udp(dp, table, in_port, src, 0x020000000050, tci, nw_src)


def test_report_counts():
    # Printed with -s; the counts go into the report.
    print(f"\nequivalence: {COUNTS['tables']} generated tables, {COUNTS['packets']} packets compared")
    assert COUNTS["packets"] > 0


ND_TABLE = """\
priority=30,icmp6,icmp_type=135,nd_target=2001:db8:1::1,nd_sll=02:00:00:00:00:50,actions=output:1
priority=25,icmp6,icmp_type=135,nd_sll=00:00:00:00:00:00,actions=output:5
priority=20,icmp6,icmp_type=135,nd_target=2001:db8:1::/64,actions=output:2
priority=20,icmp6,icmp_type=136,nd_tll=18:00:00:00:00:00/ff:ff:ff:00:00:00,actions=output:3
priority=15,icmp6,icmp_type=136,nd_target=::,actions=output:1,output:2
priority=10,ipv6,ipv6_label=0x00005/0x0000f,actions=output:4
priority=5,icmp6,actions=resubmit(,1)
priority=0,actions=NORMAL
table=1,priority=10,icmp6,icmp_type=136,icmp_code=0,nd_target=fe80::/10,nd_tll=02:00:00:00:00:50,actions=output:5
table=1,priority=0,actions=drop
"""


def nd_frames():
    """NS/NA frames as a kernel (or a stranger) writes them: every option
    shape OVS's parse_icmpv6 tells apart, within the five options the
    datapath reads, tagged and untagged."""
    import struct
    from ipaddress import IPv6Address

    def lla(kind, mac):
        return struct.pack("!BB", kind, 1) + mac.to_bytes(6, "big")
    client, modem = 0x020000000050, 0x1800000000E8
    options = [b"", lla(1, client), lla(2, modem), lla(1, client) + lla(2, modem),
               lla(1, client) + lla(1, modem),                       # two sources: invalid
               struct.pack("!BB6x", 14, 1) + lla(1, client),          # a nonce first
               lla(2, modem) + struct.pack("!BB", 2, 0) + bytes(6),   # zero length stops
               struct.pack("!BB", 1, 2) + bytes(14) + lla(2, modem),  # a 16-byte lla: skipped
               lla(1, client) + struct.pack("!BB6x", 2, 4),           # runs past the end
               b"".join(struct.pack("!BB6x", 14, 1) for _ in range(4)) + lla(1, modem)]
    out = []
    for kind in (135, 136):
        for code in (0, 1):
            for target in ("2001:db8:1::1", "fe80::1", "::"):
                for opts in options:
                    for tag in (b"", bytes.fromhex("81000005")):
                        for label in (0, 0x15):
                            icmp = struct.pack("!BBHI", kind, code, 0, 0) + IPv6Address(target).packed + opts
                            ip6 = struct.pack("!IHBB", 6 << 28 | label, len(icmp), 58, 255) + \
                                IPv6Address("fe80::50").packed + IPv6Address("ff02::1:ff00:1").packed
                            out.append(bytes.fromhex("3333ff000001" "020000000050") + tag + b"\x86\xdd" + ip6 + icmp)
    return out


@pytest.mark.parametrize("strategy,defines", [
    ("linear", ()), ("hashed", ()), ("linear", ("DP_PARSE_COPY",)), ("hashed", ("DP_PARSE_COPY",)),
], ids=["linear", "hashed", "linear-copy", "hashed-copy"])
def test_neighbour_discovery_agrees_on_whole_and_cut_frames(strategy, defines):
    """nd_target/nd_sll/nd_tll and the flow label read by the program (on
    the packet, and on the stack copy) as by the reference, frame by frame,
    also when the frame ends inside the ND message or its options."""
    table = FlowTable(parse_flows(ND_TABLE))
    with TestDatapath(table, PORTS, strategy=strategy, defines=defines) as dp:
        for frame in nd_frames():
            for keep in {len(frame), len(frame) - 3, len(frame) - 8, len(frame) - 14, 14 + 4 + 40 + 8 + 20}:
                cut = frame[:keep]
                for in_port in (1, 3):
                    check(dp, table, Packet.from_bytes(cut, in_port=in_port), cut)


@pytest.mark.parametrize("strategy,defines", [
    ("linear", ()), ("hashed", ()), ("linear", ("DP_PARSE_COPY",)), ("hashed", ("DP_PARSE_COPY",)),
], ids=["linear", "hashed", "linear-copy", "hashed-copy"])
def test_ipv6_extension_headers_agree_on_whole_and_cut_frames(strategy, defines):
    """The transport fields behind IPv6 extension headers, later fragments and headers cut off,
    read by the program (on the packet and on the stack copy) as by the reference, also where
    the datapath stops short of OVS (seven headers, a transport header past its 128 bytes)."""
    from tests.support.ipv6ext import EXT_TABLE, ext_frames
    table = FlowTable(parse_flows(EXT_TABLE))
    with TestDatapath(table, PORTS, strategy=strategy, defines=defines) as dp:
        for _, frame in ext_frames(beyond_ovs=True):
            for keep in {len(frame), len(frame) - 3, 14 + 40 + 6, 14 + 40 + 12, 14 + 40 + 30}:
                cut = frame[:keep]
                for in_port in (1, 3):
                    check(dp, table, Packet.from_bytes(cut, in_port=in_port), cut)


def test_a_table_too_long_for_bpf_jumps_is_refused_saying_why_and_what_to_do():
    """Nested mid-list resubmits copy their tables at each call: this generated table's hashed
    build passes 32,767 instructions, which the kernel refuses before verifying ("jump out of
    range"). The apply's error says what that means; its straight-line build loads."""
    from appliance.kernel.bpf import BpfError
    from appliance.switch.datapath.verifier import TOO_LONG

    table = _parse_generated(DATA / "too-long-flows.txt")
    with pytest.raises(BpfError) as refused:
        TestDatapath(table, PORTS, strategy="hashed").close()
    assert TOO_LONG in str(refused.value) and "jump out of range" in str(refused.value)
    with TestDatapath(table, PORTS, strategy="linear"):
        pass
