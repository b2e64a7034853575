"""The flow language: parse, print, round-trip, prerequisites, located errors."""
import pytest

from appliance.switch import flows as FL
from appliance.switch.bridge import seed_bridge
from appliance.switch.flows import FlowTable
from appliance.switch.parser import FlowSyntaxError, parse_flow, parse_flows

PM = {"uplink": 1, "downlink": 2, "admin": 3, "vgw": 4, "vproxy": 5}
NAMES = {v: k for k, v in PM.items()}


@pytest.mark.parametrize("text,printed", [
    ("table=0,priority=1000,in_port=uplink,udp,tp_src=67,tp_dst=68,action=drop",
     "priority=1000,udp,in_port=uplink,tp_src=67,tp_dst=68 actions=drop"),
    ("priority=999,arp,nw_dst=192.168.1.1,action=output:uplink",
     "priority=999,arp,arp_tpa=192.168.1.1 actions=output:uplink"),
    ("arp,nw_src=10.0.0.1,nw_proto=2,actions=drop", "arp,arp_spa=10.0.0.1,arp_op=2 actions=drop"),
    ("nw_src=10.0.0.1,arp,actions=drop", "arp,arp_spa=10.0.0.1 actions=drop"),
    ("udp,nw_dst=192.168.1.1,udp_dst=53,actions=set_field:d6:00:00:00:00:bf->dl_dst,output:vproxy",
     "udp,nw_dst=192.168.1.1,tp_dst=53 actions=mod_dl_dst:d6:00:00:00:00:bf,output:vproxy"),
    ("tcp,tcp_dst=80,actions=mod_dl_src:00:11:22:33:44:55,NORMAL",
     "tcp,tp_dst=80 actions=mod_dl_src:00:11:22:33:44:55,NORMAL"),
    ("ip,nw_dst=100.96.0.0/11,actions=3", "ip,nw_dst=100.96.0.0/11 actions=output:admin"),
    ("ip,nw_src=1.2.3.4/255.0.255.0,actions=drop", "ip,nw_src=1.0.3.0/255.0.255.0 actions=drop"),
    ("dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,actions=FLOOD",
     "dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=FLOOD"),
    ("dl_vlan=5,dl_vlan_pcp=3,actions=mod_vlan_vid:4,strip_vlan,resubmit(,1),goto_table:2",
     "dl_vlan=5,dl_vlan_pcp=3 actions=mod_vlan_vid:4,strip_vlan,resubmit(,1),goto_table:2"),
    ("dl_vlan=0xffff,actions=ALL", "vlan_tci=0x0000 actions=ALL"),
    ("vlan_tci=0x1000/0x1000,actions=in_port", "vlan_tci=0x1000/0x1000 actions=IN_PORT"),
    ("cookie=0x5,idle_timeout=10,hard_timeout=20,tcp6,actions=controller",
     "cookie=0x5, idle_timeout=10, hard_timeout=20, tcp6 actions=CONTROLLER:65535"),
    ("table=2,priority=7,in_port=LOCAL,actions=local,resubmit(uplink,3)",
     "table=2, priority=7,in_port=LOCAL actions=LOCAL,resubmit(uplink,3)"),
    ("ipv6,ipv6_src=fe80::1/64,actions=drop", "ipv6,ipv6_src=fe80::/64 actions=drop"),
    ("udp,tp_dst=0x3500/0xff00,actions=drop", "udp,tp_dst=0x3500/0xff00 actions=drop"),
    ("icmp,icmp_type=3,icmp_code=1,actions=drop", "icmp,icmp_type=3,icmp_code=1 actions=drop"),
    ("ip,nw_proto=47 actions=drop", "ip,nw_proto=47 actions=drop"),
    ("dl_type=0x88cc,actions=drop", "dl_type=0x88cc actions=drop"),
    ("priority=0,actions=NORMAL", "priority=0 actions=NORMAL"),
])
def test_parse_prints_like_dump_flows_and_round_trips(text, printed):
    flow = parse_flow(text, PM)
    assert flow.to_ofctl(NAMES) == printed
    assert parse_flow(printed, PM) == flow
    # Without names, ports print as numbers and still round-trip.
    assert parse_flow(flow.to_ofctl(), PM) == flow


def test_dump_flows_with_stats_reads_back():
    flow = parse_flow("table=1,priority=5,udp,actions=drop", PM)
    line = flow.to_ofctl(NAMES, FL.FlowStats(n_packets=3, n_bytes=180, duration=1.5))
    assert line == "cookie=0x0, duration=1.500s, table=1, n_packets=3, n_bytes=180, priority=5,udp actions=drop"
    assert parse_flow(line, PM) == flow


def test_seed_file_round_trips_through_dump_flows():
    br = seed_bridge()
    with open("tests/data/seed-flows.txt") as fh:
        flows = parse_flows(fh.read(), br.port_map)
    assert len(flows) == 15
    dumped = FlowTable(flows).to_ofctl(br.port_names)
    again = parse_flows(dumped, br.port_map)
    assert FlowTable(again).to_ofctl(br.port_names) == dumped
    assert sorted(map(str, again)) == sorted(map(str, flows))


@pytest.mark.parametrize("text,fix", [
    ("nw_src=10.0.0.1,actions=drop", "add 'ip'"),
    ("nw_dst=10.0.0.0/8,actions=drop", "'arp'"),
    ("tp_dst=53,actions=drop", "add 'tcp' or 'udp'"),
    ("ip,tp_dst=53,actions=drop", "add 'tcp' or 'udp'"),
    ("tcp,udp_dst=53,actions=drop", "add 'udp'"),
    ("arp_op=1,actions=drop", "add 'arp'"),
    ("ipv6_src=::1,actions=drop", "add 'ipv6'"),
    ("icmp_type=8,actions=drop", "add 'icmp'"),
    ("nw_proto=6,actions=drop", "add 'ip' or 'ipv6'"),
])
def test_missing_prerequisite_is_an_error_with_the_fix(text, fix):
    with pytest.raises(FlowSyntaxError) as e:
        parse_flow(text)
    assert fix in e.value.message
    assert "needs dl_type=" in e.value.message
    field = text.split(",")[-2].split("=")[0]
    assert e.value.column == text.index(field) + 1  # points at the field


@pytest.mark.parametrize("text,column,words", [
    ("udp,nw_proto=6,actions=drop", 5, "conflicts"),
    ("ip,arp,actions=drop", 4, "contradicts"),
    ("priority=70000,actions=drop", 10, "out of range"),
    ("in_port=nowhere,actions=drop", 9, "unknown port 'nowhere'"),
    ("ip,nw_src=1.2.3.4/33,actions=drop", 11, "prefix length"),
    ("dl_src=00:11:22,actions=drop", 8, "not a MAC"),
    ("frobnicate=1,actions=drop", 1, "unknown field"),
    ("udp actions=drop,output:1", 13, "'drop' must not"),
    ("actions=output:1,goto_table:2,output:3", 18, "goto_table must be the last"),
    ("table=3,actions=goto_table:2", 28, "later table"),
    ("actions=mod_vlan_vid:4096", 22, "out of range"),
    ("actions=set_field:1.2.3.4->nw_dst", 19, "needs dl_type=0x0800"),
    ("actions=set_field:4196->vlan_vid", 19, "needs a VLAN tag"),
    ("actions=frob(1)", 9, "unknown action"),
    ("actions=push_vlan:0x0800", 19, "not a VLAN ethertype"),
    ("ip,nw_src=1.2.3.4", 18, "missing 'actions='"),
    ("ip,actions=", 12, "no actions"),
    ("NORMAL,actions=drop", 1, "looks like an action"),
])
def test_errors_name_column_and_problem(text, column, words):
    with pytest.raises(FlowSyntaxError) as e:
        parse_flow(text, PM)
    assert words in e.value.message
    assert (e.value.line, e.value.column) == (1, column)
    assert str(e.value).startswith(f"line 1, column {column}: ")


def test_file_errors_give_the_physical_line_and_nothing_partial():
    text = ("# comment\n"
            "\n"
            "priority=10,udp,actions=drop\n"
            "priority=20,\\\n"
            "   ip,tp_dst=53,\\\n"
            "   actions=drop\n")
    with pytest.raises(FlowSyntaxError) as e:
        parse_flows(text)
    assert (e.value.line, e.value.column) == (5, 7)
    assert "tp_dst needs" in e.value.message


def test_file_comments_blank_lines_and_continuations():
    text = ("  # indented comment\n"
            "priority=10,\\\n"
            "  udp,tp_dst=53 \\\n"
            "  actions=output:1\n"
            "\n"
            "priority=5,actions=NORMAL\n")
    flows = parse_flows(text)
    assert [str(f) for f in flows] == ["priority=10,udp,tp_dst=53 actions=output:1",
                                       "priority=5 actions=NORMAL"]
    assert [f.line for f in flows] == [2, 6]


def test_normalisations_are_noted_for_lint():
    f = parse_flow("udp,nw_proto=17,nw_src=10.1.2.3/8,tp_dst=0/0,actions=drop")
    assert str(f) == "udp,nw_src=10.0.0.0/8 actions=drop"
    notes = " | ".join(f.notes)
    assert "bits outside its mask" in notes
    assert "zero mask" in notes
    assert "repeats" in notes


def test_reserved_port_names_win_and_are_case_insensitive():
    f = parse_flow("in_port=local,actions=output:in_port,Normal", {"local": 9})
    assert f.match.values["in_port"] == FL.OFPP_LOCAL
    assert f.actions == (FL.InPort(), FL.Normal())
