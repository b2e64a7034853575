"""Differential tests: the reference classifier against Open vSwitch.

Our classifier and `ovs-appctl ofproto/trace` on a private OVS with a dummy
datapath must agree on every packet: the flow matched in each table (by
cookie), and every output as (OpenFlow port, dl_src, dl_dst, vlan_tci),
the controller included. Packets whose lookup ties with another flow of
equal priority are undefined in OpenFlow: they are counted apart and not
compared. The counts are printed (run with -s) and asserted at the end.
"""
import random
import re
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.switch.bridge import Bridge, seed_bridge
from appliance.switch.classifier import classify
from appliance.switch.flows import FlowTable
from appliance.switch.packet import Packet
from appliance.switch.parser import parse_flows
from tests.support import flowgen
from tests.support.ipv6ext import EXT_TABLE, ext_frames
from tests.support.ovs import OvsOracle, expected_from_classifier, ovs_available

pytestmark = pytest.mark.skipif(not ovs_available(), reason="Open vSwitch is not installed")

SEED = "tests/data/seed-flows.txt"
COUNTS: Counter = Counter()


@pytest.fixture(scope="module")
def oracle():
    o = OvsOracle({f"p{n}": n for n in flowgen.PORTS})
    o.start()
    try:
        yield o
    finally:
        o.stop()


@pytest.fixture(scope="module")
def seed_oracle():
    br = seed_bridge()
    o = OvsOracle(br.ports)
    o.start()
    try:
        yield o
    finally:
        o.stop()


def compare(oracle: OvsOracle, table: FlowTable, bridge: Bridge, packet: Packet, kind: str,
            frame: bytes | None = None) -> None:
    """`frame`: traced as OVS parses its bytes (`packet` is our reading of them)."""
    ours = classify(table, packet, bridge)
    if flowgen.ambiguous(table, ours.lookups):
        COUNTS[f"{kind} packets with an equal-priority tie (not compared)"] += 1
        return
    tr = oracle.trace(packet) if frame is None else oracle.trace_frame(frame, packet.in_port)
    index = {id(f): i + 1 for i, f in enumerate(oracle.flows)}
    our_lookups = [(lk.table, None if lk.flow is None else index[id(lk.flow)]) for lk in ours.lookups]
    assert not tr.unparsed, tr.text
    assert our_lookups == tr.lookups, f"matched flows differ for {packet}\n{tr.text}"
    expected = expected_from_classifier(ours, packet.in_port, bridge.ports.values(), tr)
    assert expected == tr.outputs, f"outputs differ for {packet}\nours: {expected}\novs: {tr.outputs}\n{tr.text}"
    COUNTS[f"{kind} packets compared"] += 1


def assert_dump_matches(oracle: OvsOracle, table: FlowTable) -> None:
    """Our dump-flows text is OVS's, line for line (as sets: OVS's order
    within a priority is its own). OVS speaks OpenFlow 1.0 here, where
    goto_table:N is resubmit(,N)."""
    from dataclasses import replace
    ours = set()
    for i, f in enumerate(oracle.flows):
        line = replace(f, cookie=i + 1).to_ofctl()
        ours.add(re.sub(r"goto_table:(\d+)", r"resubmit(,\1)", line))
    theirs = {ln.strip() for ln in oracle.dump_flows().splitlines() if ln.strip() and "NXST" not in ln}
    assert ours == theirs
    COUNTS["flows printed identically to ovs-ofctl dump-flows"] += len(ours)


def test_seed_table_agrees_with_ovs(seed_oracle):
    br = seed_bridge()
    with open(SEED) as fh:
        br.flows.extend(parse_flows(fh.read(), br.port_map))
    seed_oracle.load_flows(br.flows)
    assert_dump_matches(seed_oracle, br.flows)
    r = random.Random(1)
    packets = flowgen.packets_for(br.flows, r, 400)
    # The seed's own scenarios, with its MACs and addresses.
    gw, gw_mac, vp_mac = 0xC0A80101, 0x1800000000E8, 0xD600000000BF
    for in_port in br.ports.values():
        for dst in (gw_mac, 0xFFFFFFFFFFFF, vp_mac, 0x020000000009):
            for src in (gw_mac, 0x020000000007):
                base = dict(in_port=in_port, dl_src=src, dl_dst=dst)
                packets += [
                    Packet(base, dl_type=0x0800, nw_proto=17, nw_src=0xC0A80146, nw_dst=gw, tp_src=40000, tp_dst=53, nw_ttl=64),
                    Packet(base, dl_type=0x0800, nw_proto=17, nw_src=0, nw_dst=0xFFFFFFFF, tp_src=68, tp_dst=67, nw_ttl=64),
                    Packet(base, dl_type=0x0800, nw_proto=17, nw_src=gw, nw_dst=0xC0A80146, tp_src=67, tp_dst=68, nw_ttl=64),
                    Packet(base, dl_type=0x0806, arp_op=1, arp_spa=0xC0A80146, arp_tpa=gw, arp_sha=src),
                    Packet(base, dl_type=0x0806, arp_op=2, arp_spa=gw, arp_tpa=0xC0A80146, arp_sha=src),
                    Packet(base, dl_type=0x0800, nw_proto=6, nw_src=0xC0A80146, nw_dst=0x64600001, tp_src=40000, tp_dst=443, nw_ttl=64),
                    Packet(base, dl_type=0x86DD, nw_proto=17, ipv6_src=1, ipv6_dst=2, tp_src=546, tp_dst=547, nw_ttl=64),
                ]
    for p in packets:
        compare(seed_oracle, br.flows, br, p, "seed")
    assert COUNTS["seed packets compared"] > 300


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(table=flowgen.flow_tables(max_size=30), seed=st.integers(0, 2**32 - 1))
def test_random_tables_agree_with_ovs(oracle, table, seed):
    bridge = Bridge("br0", {f"p{n}": n for n in flowgen.PORTS}, table)
    oracle.load_flows(table)
    assert_dump_matches(oracle, table)
    COUNTS["random tables"] += 1
    COUNTS["random flows"] += len(table)
    for p in flowgen.packets_for(table, random.Random(seed), 25):
        compare(oracle, table, bridge, p, "random")


@pytest.mark.parametrize("tci", [0x1000, 0x7000, 0x1005])
def test_normal_sends_a_priority_tagged_frame_untagged_as_ovs_does(oracle, tci):
    """Found by the random tables: NORMAL drops a tag of VLAN 0 and priority 0 on output (OVS's
    default `priority-tags=false`); priority 3 in VLAN 0, or VLAN 5, keeps its tag."""
    table = FlowTable(parse_flows("priority=1000,udp6,vlan_tci=0x1000/0x1000 actions=NORMAL\n"))
    bridge = Bridge("br0", {f"p{n}": n for n in flowgen.PORTS}, table)
    oracle.load_flows(table)
    packet = Packet(in_port=2, vlan_tci=tci, dl_src=0x180000000002, dl_dst=0x180000000002, dl_type=0x86DD,
                    ipv6_src=0xFE800000000000000000000000000005, ipv6_dst=0x01000000000000000000000000000002,
                    nw_proto=17, nw_ttl=64, tp_src=67, tp_dst=53)
    compare(oracle, table, bridge, packet, "priority-tag")


# Neighbour discovery, ICMPv6 and the flow label as a home's IPv6 meets them:
# the modem's advertisements, solicitations for the box's and the clients'
# addresses, options in every shape OVS's parse_icmpv6 distinguishes.
IPV6_TABLE = """\
priority=1000,icmp6,in_port=1,icmp_type=136,nd_tll=18:00:00:00:00:e8,actions=output:2
priority=990,icmp6,icmp_type=135,nd_target=2001:db8:1::1,actions=output:1
priority=980,icmp6,icmp_type=135,icmp_code=0,nd_target=fe80::/64,nd_sll=02:00:00:00:00:00/ff:ff:ff:00:00:00,actions=output:3
priority=970,icmp6,icmp_type=136,nd_target=::1/::ffff,actions=output:4
priority=968,icmp6,icmp_type=136,nd_target=::ff:1/::ff:ff,actions=output:3
priority=965,icmp6,icmp_type=135,nd_sll=00:00:00:00:00:00,actions=output:5
priority=960,icmp6,icmp_type=134,actions=FLOOD
priority=950,icmp6,icmpv6_type=128,icmpv6_code=0,actions=output:5
priority=940,icmp6,icmp_type=1,icmp_code=4,actions=drop
priority=930,icmp6,icmp_type=135,actions=resubmit(,1)
priority=900,ipv6,ipv6_label=0x12345,actions=output:2
priority=890,udp6,ipv6_label=0x00005/0x0000f,tp_dst=547,actions=output:4
priority=0,actions=NORMAL
table=1,priority=10,icmp6,icmp_type=135,icmp_code=0,nd_target=2001:db8:1::/48,actions=output:3
table=1,priority=5,ipv6,ipv6_label=0/0x80000,actions=output:4
table=1,priority=0,actions=drop
"""


def ipv6_packets() -> list[Packet]:
    ll, gua, modem = 0xFE80 << 112 | 0x1A00_00FF_FE00_00E8, 0x20010DB8_0001 << 80, 0x1800000000E8
    out = []
    for in_port in flowgen.PORTS:
        for src in (modem, 0x020000000050, 0x1A0000000005):
            for label in (0, 5, 0x12345, 0x80005):
                base = dict(in_port=in_port, dl_src=src, dl_dst=0x3333FF000001, dl_type=0x86DD, nw_proto=58,
                            ipv6_src=ll, ipv6_dst=0xFF02 << 112 | 0x1FF000001, nw_ttl=255, ipv6_label=label)
                for target in (gua | 1, gua | 0xFFFF0001, ll, 0xFE80 << 112 | 0x20001, (0x20010DB8_0002 << 80) | 1,
                               0xFF0001, 0xFFFF_0A00_0001):
                    out += [
                        Packet(base, icmp_type=135, nd_target=target, nd_sll=src),
                        Packet(base, icmp_type=135, nd_target=target),  # DAD: no source option
                        Packet(base, icmp_type=135, icmp_code=1, nd_target=target, nd_sll=src),
                        Packet(base, icmp_type=136, nd_target=target, nd_tll=src),
                        Packet(base, icmp_type=136, nd_target=target),
                    ]
                out += [
                    Packet(base, icmp_type=134), Packet(base, icmp_type=128), Packet(base, icmp_type=128, icmp_code=1),
                    Packet(base, icmp_type=1, icmp_code=4), Packet(base, icmp_type=1, icmp_code=3),
                    Packet({**base, "nw_proto": 17}, tp_src=546, tp_dst=547),
                    Packet({**base, "nw_proto": 17}, tp_src=546, tp_dst=53),
                ]
    return out


def test_ipv6_nd_icmpv6_and_label_agree_with_ovs(oracle):
    """The flow language's IPv6 fields against OVS: dump-flows prints them as
    OVS does, and every packet meets the same flows with the same outputs.
    The packets are the frames' own view (built, then parsed back), so the
    ND options are what a frame can carry."""
    table = FlowTable(parse_flows(IPV6_TABLE))
    bridge = Bridge("br0", {f"p{n}": n for n in flowgen.PORTS}, table)
    oracle.load_flows(table)
    assert_dump_matches(oracle, table)
    packets = [Packet.from_bytes(p.to_bytes(), p.in_port) for p in ipv6_packets()]
    for p in packets:
        compare(oracle, table, bridge, p, "ipv6")
    assert COUNTS["ipv6 packets compared"] > 2000


def test_ipv6_extension_headers_agree_with_ovs(oracle):
    """Frames with hop-by-hop, routing, destination options, AH and fragment headers, in front of
    UDP, TCP, ICMPv6 and MLD, traced from their bytes by OVS's own parser: the transport fields
    behind the headers match (a DNS query behind a destination option is udp6,tp_dst=53), a later
    fragment is nw_proto=44 without them, a header that claims more than the packet holds leaves
    nw_proto 0."""
    table = FlowTable(parse_flows(EXT_TABLE))
    bridge = Bridge("br0", {f"p{n}": n for n in flowgen.PORTS}, table)
    oracle.load_flows(table)
    frames = ext_frames()
    for name, frame in frames:
        for in_port in (1, 2):
            compare(oracle, table, bridge, Packet.from_bytes(frame, in_port), "ipv6 extension-header", frame)
    assert COUNTS["ipv6 extension-header packets compared"] == 2 * len(frames)


def test_zz_report_counts():
    for k, v in sorted(COUNTS.items()):
        print(f"  {k}: {v}")
    assert COUNTS["random tables"] >= 50
    assert COUNTS["random packets compared"] > 500
