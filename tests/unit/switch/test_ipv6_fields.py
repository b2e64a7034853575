"""IPv6's own fields in the flow language: ipv6_label, ICMPv6 type/code and
neighbour discovery's nd_target/nd_sll/nd_tll, from text to packets.

Spellings, printing and prerequisites follow Open vSwitch (ovs-fields(7),
lib/match.c's match_format, lib/meta-flow.c's MFP_ND*); the packet side
follows lib/flow.c's parse_icmpv6.
"""
import io
import struct
from ipaddress import IPv6Address

import pytest

from appliance.switch import cli
from appliance.switch.bridge import Bridge
from appliance.switch.classifier import classify
from appliance.switch.datapath.compiler import compile_table
from appliance.switch.flows import FlowTable
from appliance.switch.lint import lint
from appliance.switch.odpflow import fields as odp_fields
from appliance.switch.packet import Packet, packet_from_text
from appliance.switch.parser import FlowSyntaxError, parse_flow, parse_flows


def a6(text: str) -> int:
    return int(IPv6Address(text))


@pytest.mark.parametrize("text,printed", [
    ("ipv6,ipv6_label=0x12345,actions=drop", "ipv6,ipv6_label=0x12345 actions=drop"),
    ("ipv6,ipv6_label=5,actions=drop", "ipv6,ipv6_label=0x00005 actions=drop"),
    ("ipv6,ipv6_label=0x12345/0xff,actions=drop", "ipv6,ipv6_label=0x00045/0x000ff actions=drop"),
    ("udp6,ipv6_label=0xfffff,tp_dst=547,actions=drop", "udp6,ipv6_label=0xfffff,tp_dst=547 actions=drop"),
    # icmpv6_type is OVS's name; dump-flows prints icmp_type under icmp6.
    ("icmp6,icmpv6_type=128,icmpv6_code=0,actions=drop", "icmp6,icmp_type=128,icmp_code=0 actions=drop"),
    ("dl_type=0x86dd,nw_proto=58,icmp_type=2,actions=drop", "icmp6,icmp_type=2 actions=drop"),
    ("icmp6,icmp_type=135,nd_target=fe80::1,actions=drop",
     "icmp6,icmp_type=135,nd_target=fe80::1 actions=drop"),
    ("icmp6,icmp_type=135,icmp_code=0,nd_target=2001:db8:1::1234/64,nd_sll=02:00:00:00:00:01,actions=drop",
     "icmp6,icmp_type=135,icmp_code=0,nd_target=2001:db8:1::/64,nd_sll=02:00:00:00:00:01 actions=drop"),
    ("icmp6,icmp_type=136,nd_target=::ff:1/::ff:ff,nd_tll=18:00:00:00:00:e8/ff:ff:ff:00:00:00,actions=drop",
     "icmp6,icmp_type=136,nd_target=::0.255.0.1/::0.255.0.255,nd_tll=18:00:00:00:00:00/ff:ff:ff:00:00:00 "
     "actions=drop"),
    # The order dump-flows prints: addresses, label, nw_*, icmp, nd.
    ("nd_tll=00:00:00:00:00:01,icmp_type=136,nw_ttl=255,ipv6_label=1,ipv6_src=fe80::1,icmp6,actions=drop",
     "icmp6,ipv6_src=fe80::1,ipv6_label=0x00001,nw_ttl=255,icmp_type=136,nd_tll=00:00:00:00:00:01 actions=drop"),
    # Addresses as glibc's inet_ntop writes them (what ovs-ofctl prints):
    # IPv4-compatible and IPv4-mapped ones end in dotted quad, ::1 does not.
    ("icmp6,icmp_type=136,nd_target=::ff:1/::ff:ff,actions=drop",
     "icmp6,icmp_type=136,nd_target=::0.255.0.1/::0.255.0.255 actions=drop"),
    ("ipv6,ipv6_src=::ffff:1.2.3.4,ipv6_dst=::1,actions=drop", "ipv6,ipv6_src=::ffff:1.2.3.4,ipv6_dst=::1 actions=drop"),
    ("ipv6,ipv6_src=::1:0:0,ipv6_dst=::0.0.0.2,actions=drop", "ipv6,ipv6_src=::1:0:0,ipv6_dst=::2 actions=drop"),
    ("ipv6,ipv6_src=0:0:0:0:ffff:0:1:2,actions=drop", "ipv6,ipv6_src=::ffff:0:1:2 actions=drop"),
    ("icmp6,icmp_type=135,actions=set_field:fe80::9->nd_target,set_field:0x5->ipv6_label,NORMAL",
     "icmp6,icmp_type=135 actions=set_field:fe80::9->nd_target,set_field:0x5->ipv6_label,NORMAL"),
])
def test_ipv6_fields_print_like_dump_flows_and_round_trip(text, printed):
    flow = parse_flow(text)
    assert flow.to_ofctl() == printed
    assert parse_flow(printed) == flow


@pytest.mark.parametrize("text,field,words", [
    ("ip,ipv6_label=1,actions=drop", "ipv6_label", "add 'ipv6'"),
    ("ipv6_label=1,actions=drop", "ipv6_label", "dl_type=0x86dd"),
    ("icmp6,nd_target=fe80::1,actions=drop", "nd_target", "icmp_type=135 or icmp_type=136"),
    ("ipv6,nd_target=fe80::1,actions=drop", "nd_target", "add 'icmp6,icmp_type=135'"),
    ("icmp6,icmp_type=128,nd_target=fe80::1,actions=drop", "nd_target", "icmp_type=135"),
    ("icmp6,icmp_type=135,icmp_code=1,nd_target=fe80::1,actions=drop", "nd_target", "icmp_code=0"),
    ("icmp6,icmp_type=136,nd_sll=00:00:00:00:00:01,actions=drop", "nd_sll", "add 'icmp6,icmp_type=135'"),
    ("icmp6,icmp_type=135,nd_tll=00:00:00:00:00:01,actions=drop", "nd_tll", "add 'icmp6,icmp_type=136'"),
    ("ip,nw_proto=58,icmp_type=1,actions=drop", "icmp_type", "dl_type=0x86dd and nw_proto=58"),
    ("ipv6,nw_proto=1,icmp_code=1,actions=drop", "icmp_code", "add 'icmp' (or 'icmp6')"),
    ("icmp,icmpv6_type=1,actions=drop", "icmpv6_type", "add 'icmp6'"),
    ("icmp6,icmpv4_code=1,actions=drop", "icmpv4_code", "add 'icmp'"),
])
def test_a_missing_prerequisite_names_the_field_and_the_fix(text, field, words):
    with pytest.raises(FlowSyntaxError) as e:
        parse_flow(text)
    assert e.value.message.startswith(f"{field} needs ")
    assert words in e.value.message
    assert e.value.column == text.index(field) + 1


@pytest.mark.parametrize("text,words", [
    ("icmp6,icmp_type=135/0xf0,actions=drop", "icmp_type does not take a mask"),
    ("ipv6,ipv6_label=0x100000,actions=drop", "out of range 0..1048575"),
    ("icmp6,icmp_type=135,nd_target=fe80::1/129,actions=drop", "prefix length /129"),
    ("icmp6,icmp_type=135,nd_sll=00:11,actions=drop", "not a MAC"),
    ("icmp6,icmp_type=135,nd_target=10.0.0.1,actions=drop", "not an IPv6 address"),
])
def test_bad_values_say_what_is_wrong(text, words):
    with pytest.raises(FlowSyntaxError, match=words):
        parse_flow(text)


def test_lint_refuses_a_file_with_an_nd_field_out_of_place(tmp_path):
    run = lambda fn, *a, stdin=None: fn(list(a), out=io.StringIO(), state_dir=tmp_path,  # noqa: E731
                                        **({"stdin": io.StringIO(stdin)} if stdin else {}))
    run(cli.run_vsctl, "add-br", "br0")
    with pytest.raises(cli.CliError) as e:
        run(cli.run_ofctl, "lint", "br0", "-",
            stdin="priority=5,icmp6,actions=NORMAL\npriority=9,icmp6,icmp_type=136,nd_sll=00:00:00:00:00:01,actions=drop\n")
    assert "-:line 2, column 32: nd_sll needs" in str(e.value)


def test_lint_sees_nd_target_masks_shadow_and_overlap():
    flows = parse_flows(
        "priority=20,icmp6,icmp_type=135,nd_target=2001:db8:1::/64,actions=drop\n"
        "priority=10,icmp6,icmp_type=135,nd_target=2001:db8:1::5,actions=NORMAL\n"
        "priority=20,icmp6,icmp_type=135,nd_target=::5/::ffff,actions=output:1\n"
        "priority=20,icmp6,icmp_type=136,nd_target=2001:db8:1::/64,actions=output:1\n")
    codes = {(f.code, f.flow.line, f.other.line if f.other else None) for f in lint(flows)}
    assert ("shadowed", 2, 1) in codes
    assert ("overlap", 1, 3) in codes
    assert not any(line == 4 or other == 4 for _, line, other in codes)


# -- packets -------------------------------------------------------------------

CLIENT = 0x020000000001
MODEM = 0x1800000000E8
TARGET = "2001:db8:1::1"


def ns_frame(options: bytes, code: int = 0, target: str = TARGET, label: int = 0) -> bytes:
    """A neighbour solicitation as Linux writes it (checksum left 0: OVS does not check it)."""
    icmp = struct.pack("!BBHI", 135, code, 0, 0) + IPv6Address(target).packed + options
    ip6 = struct.pack("!IHBB", 6 << 28 | label, len(icmp), 58, 255) + \
        IPv6Address("fe80::1").packed + IPv6Address("ff02::1:ff00:1").packed
    return bytes.fromhex("3333ff000001" "020000000001" "86dd") + ip6 + icmp


def sll(mac: int, kind: int = 1) -> bytes:
    return struct.pack("!BB", kind, 1) + mac.to_bytes(6, "big")


def test_a_solicitation_reads_its_target_source_address_and_flow_label():
    p = Packet.from_bytes(ns_frame(sll(CLIENT), label=0xABCDE), in_port=2)
    assert (p["icmp_type"], p["icmp_code"], p["nd_target"], p["nd_sll"], p["nd_tll"], p["ipv6_label"]) == \
        (135, 0, a6(TARGET), CLIENT, 0, 0xABCDE)


@pytest.mark.parametrize("options,code,expect", [
    # Other options are stepped over; a target option on a solicitation is read too.
    (struct.pack("!BB6x", 14, 1) + sll(CLIENT) + sll(MODEM, 2), 0, (a6(TARGET), CLIENT, MODEM)),
    # A second source link-layer option: OVS takes the message as invalid.
    (sll(CLIENT) + sll(MODEM), 0, (0, 0, 0)),
    # A zero-length option ends the walk, keeping what came before.
    (sll(CLIENT) + struct.pack("!BB6x", 2, 0) + sll(MODEM, 2), 0, (a6(TARGET), CLIENT, 0)),
    # An option running past the end ends it too.
    (sll(CLIENT) + struct.pack("!BB6x", 2, 2), 0, (a6(TARGET), CLIENT, 0)),
    # A link-layer option longer than one unit is not an Ethernet address.
    (struct.pack("!BB", 1, 2) + bytes(14), 0, (a6(TARGET), 0, 0)),
    # Code 1 is not neighbour discovery: nothing is read.
    (sll(CLIENT), 1, (0, 0, 0)),
])
def test_nd_options_are_read_as_ovs_reads_them(options, code, expect):
    p = Packet.from_bytes(ns_frame(options, code=code), in_port=2)
    assert (p["nd_target"], p["nd_sll"], p["nd_tll"]) == expect
    assert p["icmp_code"] == code


def test_a_truncated_nd_or_icmpv6_header_reads_zero():
    frame = ns_frame(sll(CLIENT))
    cut_target = Packet.from_bytes(frame[:14 + 40 + 8 + 10])
    assert (cut_target["icmp_type"], cut_target["nd_target"], cut_target["nd_sll"]) == (135, 0, 0)
    cut_header = Packet.from_bytes(frame[:14 + 40 + 6])
    assert cut_header["icmp_type"] == 0  # OVS wants the whole 8-byte ICMPv6 header


@pytest.mark.parametrize("fields", [
    dict(icmp_type=135, nd_target=a6(TARGET), nd_sll=CLIENT),
    dict(icmp_type=136, nd_target=a6(TARGET), nd_tll=MODEM, ipv6_label=0x12345),
    dict(icmp_type=136, nd_target=a6(TARGET)),
    dict(icmp_type=128, icmp_code=0, ipv6_label=0xFFFFF),
])
def test_nd_and_label_round_trip_through_bytes(fields):
    p = Packet(in_port=1, dl_src=CLIENT, dl_dst=MODEM, dl_type=0x86DD, nw_proto=58,
               ipv6_src=a6("fe80::1"), ipv6_dst=a6("fe80::2"), nw_ttl=255, **fields)
    q = Packet.from_bytes(p.to_bytes(), in_port=1)
    assert q == p
    assert q.to_bytes() == p.to_bytes()


def test_trace_text_names_nd_fields_only_where_ovs_takes_them():
    na = Packet(in_port=1, dl_type=0x86DD, nw_proto=58, icmp_type=136, nd_target=a6(TARGET), nd_tll=MODEM,
                nw_ttl=255, ipv6_label=7)
    text = na.to_ofctl()
    assert "ipv6_label=0x00007" in text
    assert text.endswith(f"icmpv6_type=136,icmpv6_code=0,nd_target={TARGET},nd_tll=18:00:00:00:00:e8")
    assert packet_from_text(text) == na
    echo = Packet(in_port=1, dl_type=0x86DD, nw_proto=58, icmp_type=128, nw_ttl=64)
    assert "nd_" not in echo.to_ofctl()


def test_datapath_flow_syntax_carries_nd_and_label():
    f = odp_fields("in_port(1),eth(src=02:00:00:00:00:01,dst=33:33:ff:00:00:01),eth_type(0x86dd),"
                   "ipv6(src=fe80::1,dst=ff02::1:ff00:1,label=0x12345,proto=58,tclass=0,hlimit=255,frag=no),"
                   "icmpv6(type=135,code=0),nd(target=2001:db8:1::1,sll=02:00:00:00:00:01,tll=00:00:00:00:00:00)")
    assert (f["ipv6_label"], f["icmp_type"], f["nd_target"], f["nd_sll"]) == (0x12345, 135, a6(TARGET), CLIENT)


ND_TABLE = """\
priority=30,icmp6,icmp_type=135,nd_target=2001:db8:1::1,nd_sll=02:00:00:00:00:01,actions=output:1
priority=20,icmp6,icmp_type=135,nd_target=2001:db8:1::/64,actions=output:2
priority=20,icmp6,icmp_type=136,nd_tll=18:00:00:00:00:00/ff:ff:ff:00:00:00,actions=output:3
priority=10,ipv6,ipv6_label=0x00005/0x0000f,actions=output:4
priority=0,actions=drop
"""


@pytest.mark.parametrize("fields,port", [
    (dict(icmp_type=135, nd_target=a6(TARGET), nd_sll=CLIENT), 1),
    (dict(icmp_type=135, nd_target=a6(TARGET), nd_sll=MODEM), 2),
    (dict(icmp_type=135, icmp_code=1, nd_target=a6(TARGET), nd_sll=CLIENT, ipv6_label=0x15), 4),
    (dict(icmp_type=136, nd_target=a6("fe80::9"), nd_tll=MODEM), 3),
    (dict(icmp_type=136, nd_target=a6("fe80::9"), nd_tll=CLIENT), None),
])
def test_the_classifier_matches_nd_fields(fields, port):
    table = FlowTable(parse_flows(ND_TABLE))
    pkt = Packet.from_bytes(Packet(in_port=5, dl_type=0x86DD, nw_proto=58, nw_ttl=255, **fields).to_bytes(), 5)
    res = classify(table, pkt, Bridge("br0", {f"p{n}": n for n in range(1, 6)}))
    assert [o.port for o in res.outputs] == ([port] if port else [])


@pytest.mark.parametrize("strategy", ["linear", "hashed"])
def test_the_compiler_reads_nd_fields_and_the_label_from_the_key(strategy):
    prog = compile_table(FlowTable(parse_flows(ND_TABLE)), strategy=strategy)
    if strategy == "linear":
        assert "k->nd_target[0] == 0x20010db800010000ULL && k->nd_target[1] == 0x1ULL" in prog.source
        assert "(k->nd_tll & 0xffffff000000ULL) == 0x180000000000ULL" in prog.source
        assert "(k->ipv6_label & 0xf) == 0x5" in prog.source
    else:
        assert "*(__u64 *)&tk->fields[0] = k->nd_target[0];" in prog.source
        assert "k->ipv6_label & 0xf;" in prog.source


def test_lint_names_a_field_without_its_prerequisite_in_flows_built_as_data():
    from appliance.switch.flows import Flow, Match
    from appliance.switch import flows as FL
    bare = Flow(Match({"dl_type": 0x86DD, "nw_proto": 58, "nd_target": a6(TARGET)}), (FL.Normal(),), priority=5)
    wrong = Flow(Match({"dl_type": 0x86DD, "nw_proto": 58, "icmp_type": 136, "nd_sll": CLIENT}), (FL.Normal(),))
    fine = Flow(Match({"dl_type": 0x86DD, "nw_proto": 58, "icmp_type": 135, "nd_sll": CLIENT}), (FL.Normal(),))
    found = [(f.flow, f.message) for f in lint([bare, wrong, fine]) if f.code == "prerequisite"]
    assert [flow for flow, _ in found] == [bare, wrong]
    assert found[0][1].startswith("nd_target needs dl_type=0x86dd and nw_proto=58 and icmp_type=135 or icmp_type=136")
    assert "prerequisites not met" in found[1][1] and "add 'icmp6,icmp_type=135'" in found[1][1]
