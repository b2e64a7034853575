"""Reference classifier semantics."""
from appliance.switch import flows as FL
from appliance.switch.bridge import Bridge, seed_bridge
from appliance.switch.classifier import classify
from appliance.switch.flows import FlowTable
from appliance.switch.packet import Packet, ipv4, mac
from appliance.switch.parser import parse_flows

PM = {"p1": 1, "p2": 2, "p3": 3}
BR = Bridge("br0", dict(PM))

GW, GW_MAC, VP_MAC = ipv4("192.168.1.1"), mac("18:00:00:00:00:e8"), mac("d6:00:00:00:00:bf")


def table(text):
    return FlowTable(parse_flows(text, PM))


def udp(in_port, dst=53, **kw):
    f = dict(in_port=in_port, dl_src=mac("02:00:00:00:00:01"), dl_dst=GW_MAC, dl_type=0x0800,
             nw_proto=17, nw_src=ipv4("192.168.1.70"), nw_dst=GW, tp_src=40000, tp_dst=dst, nw_ttl=64)
    f.update(kw)
    return Packet(f)


def test_highest_priority_wins_whatever_the_order():
    t = table("priority=1,udp,actions=output:1\npriority=9,udp,tp_dst=53,actions=output:2\n")
    assert classify(t, udp(3)).output_ports == [2]
    assert classify(t, udp(3, dst=54)).output_ports == [1]


def test_equal_priority_tie_goes_to_the_flow_added_first():
    a = "priority=5,udp,actions=output:1\n"
    b = "priority=5,udp,tp_dst=53,actions=output:2\n"
    assert classify(table(a + b), udp(3)).output_ports == [1]
    assert classify(table(b + a), udp(3)).output_ports == [2]


def test_add_flow_with_same_match_replaces_in_place():
    t = table("priority=5,udp,actions=output:1\npriority=5,ip,actions=output:2\n")
    t.extend(parse_flows("priority=5,udp,actions=output:3", PM))
    assert len(t) == 2
    assert classify(t, udp(1)).output_ports == [3]


def test_miss_drops():
    r = classify(table("priority=5,arp,actions=output:1"), udp(3))
    assert r.flows == [None] and r.dropped


def test_output_to_in_port_is_skipped_but_in_port_action_sends_back():
    r = classify(table("actions=output:1,output:2,IN_PORT"), udp(1))
    assert r.output_ports == [2, 1]
    assert r.skipped == [1]


def test_flood_and_all_expand_to_bridge_ports_except_input():
    t = table("actions=FLOOD")
    assert classify(t, udp(2), BR).output_ports == [1, 3, FL.OFPP_LOCAL]
    assert classify(t, udp(2)).output_ports == [FL.OFPP_FLOOD]  # no bridge: symbolic


def test_normal_and_controller_are_marked():
    r = classify(table("actions=CONTROLLER:100,NORMAL"), udp(2))
    assert r.normal and r.controller
    assert [e.port for e in r.outputs] == [FL.OFPP_CONTROLLER, FL.OFPP_NORMAL]
    assert r.output_ports == []


def test_rewrites_apply_in_order_and_each_output_keeps_its_packet():
    r = classify(table("actions=output:1,mod_dl_dst:d6:00:00:00:00:bf,output:2"), udp(3))
    assert [e.packet["dl_dst"] for e in r.outputs] == [GW_MAC, VP_MAC]
    assert r.packet["dl_dst"] == VP_MAC


def test_mod_vlan_vid_pushes_a_tag_or_keeps_pcp_and_strip_removes_it():
    t = table("actions=mod_vlan_vid:5,output:1,strip_vlan,output:2")
    r = classify(t, udp(3))
    assert [e.packet["vlan_tci"] for e in r.outputs] == [0x1005, 0]
    r = classify(t, udp(3, vlan_tci=0x1000 | (3 << 13) | 7))
    assert r.outputs[0].packet["vlan_tci"] == 0x1000 | (3 << 13) | 5


def test_resubmit_sees_rewrites_and_resubmit_port_is_for_the_lookup_only():
    t = table("priority=1,actions=mod_dl_dst:d6:00:00:00:00:bf,resubmit(2,1),output:3\n"
              f"table=1,in_port=2,dl_dst=d6:00:00:00:00:bf,actions=output:2,output:1,IN_PORT\n")
    r = classify(t, udp(1))
    assert [(lk.table, lk.flow is not None) for lk in r.lookups] == [(0, True), (1, True)]
    # OVS restores the real in_port after the lookup: output:2 goes out,
    # output:1 (the real input) is skipped, IN_PORT is port 1.
    assert r.output_ports == [2, 1, 3]
    assert r.skipped == [1]


def test_goto_table_continues_and_resubmit_loops_are_cut():
    r = classify(table("actions=goto_table:3\ntable=3,actions=output:2"), udp(1))
    assert r.output_ports == [2]
    r = classify(table("actions=output:2,resubmit(,0)"), udp(1))
    assert r.truncated and len(r.lookups) == 64


def test_seed_semantics():
    br = seed_bridge()
    with open("tests/data/seed-flows.txt") as fh:
        br.flows.extend(parse_flows(fh.read(), br.port_map))
    p = br.ports
    # DNS to the gateway from home goes to vproxy with vproxy's MAC.
    r = classify(br.flows, udp(p["downlink"]), br)
    assert r.output_ports == [p["vproxy"]] and r.packet["dl_dst"] == VP_MAC
    # ... but DNS from vproxy goes to the modem unchanged.
    r = classify(br.flows, udp(p["vproxy"]), br)
    assert r.output_ports == [p["uplink"]] and r.packet["dl_dst"] == GW_MAC
    # The fake range goes to vproxy.
    r = classify(br.flows, udp(p["downlink"], nw_dst=ipv4("100.100.1.1"), dl_dst=mac("02:00:00:00:00:09")), br)
    assert r.output_ports == [p["vproxy"]]
    # IPv6 is dropped, other traffic is NORMAL.
    assert classify(br.flows, Packet(in_port=2, dl_type=0x86DD), br).dropped
    r = classify(br.flows, udp(p["downlink"], nw_dst=ipv4("192.168.1.50"), dl_dst=mac("02:00:00:00:00:09")), br)
    assert r.normal
    # DHCP discover from the uplink: two equal-priority flows match; by
    # insertion order the first (to vgw) wins. Lint reports it.
    dhcp = udp(p["uplink"], dst=67, tp_src=68, nw_src=0, nw_dst=0xFFFFFFFF, dl_dst=0xFFFFFFFFFFFF)
    assert classify(br.flows, dhcp, br).output_ports == [p["vgw"]]
