"""The flow language as ovs-ofctl 3.1 takes it: spellings, errors, the CLI's
OVS options and what a trace shows. (Agreement with OVS itself is in
tests/integration/switch/test_ovs_pipelines.py.)"""
import io

import pytest

from appliance.switch import cli
from appliance.switch import flows as FL
from appliance.switch.bridge import Bridge, BridgeStore
from appliance.switch.classifier import classify
from appliance.switch.flows import FlowTable
from appliance.switch.packet import Packet, packet_from_text
from appliance.switch.parser import FlowSyntaxError, parse_flow, parse_flows

PM = {f"p{n}": n for n in range(1, 6)}


@pytest.mark.parametrize("text,printed", [
    ("actions=output(2)", "actions=output:2"),
    ("actions=output(port=2,max_len=100)", "actions=output(port=2,max_len=100)"),
    ("table=0,actions=goto_table(1)", "actions=goto_table:1"),
    ("actions=mod_dl_dst(00:11:22:33:44:55)", "actions=mod_dl_dst:00:11:22:33:44:55"),
    ("actions=set_field:00:11:22:33:44:55->eth_dst", "actions=mod_dl_dst:00:11:22:33:44:55"),
    ("actions=push_vlan:0x8100,set_field:4196->vlan_vid,goto_table:1",
     "actions=push_vlan:0x8100,set_field:4196->vlan_vid,goto_table:1"),
    ("dl_vlan=5,actions=pop_vlan,strip_vlan", "dl_vlan=5 actions=pop_vlan,strip_vlan"),
    ("actions=load:5->NXM_NX_REG0[0..3],move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]",
     "actions=load:0x5->NXM_NX_REG0[0..3],move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]"),
    ("ip,actions=mod_nw_src:10.0.0.1,set_field:10.0.0.2->ip_dst,dec_ttl",
     "ip actions=mod_nw_src:10.0.0.1,set_field:10.0.0.2->nw_dst,dec_ttl"),
    ("tcp,actions=set_field:80->tp_dst", "tcp actions=set_field:80->tcp_dst"),
    ("actions=controller(max_len=96),CONTROLLER:64", "actions=CONTROLLER:96,CONTROLLER:64"),
    ("actions=resubmit(,2),resubmit(p1,3),resubmit:p2", "actions=resubmit(,2),resubmit(1,3),resubmit:2"),
    ("vlan_vid=4196,actions=drop", "dl_vlan=100 actions=drop"),
    ("vlan_vid=0,actions=drop", "vlan_tci=0x0000/0x1fff actions=drop"),
    ("vlan_pcp=3,actions=drop", "dl_vlan_pcp=3 actions=drop"),
    ("send_flow_rem,priority=5,actions=NORMAL", "priority=5 actions=NORMAL"),
    ("actions=output:NXM_NX_REG1[0..15],note:41.42,exit", "actions=output:NXM_NX_REG1[0..15],note:41.42,exit"),
    ("actions=learn(table=1,hard_timeout=60,NXM_OF_VLAN_TCI[0..11],NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],"
     "output:NXM_OF_IN_PORT[])",
     "actions=learn(table=1,hard_timeout=60,NXM_OF_VLAN_TCI[0..11],NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],"
     "output:NXM_OF_IN_PORT[])"),
])
def test_spellings_parse_and_print_back(text, printed):
    flow = parse_flow(text, PM)
    assert flow.to_ofctl() == printed
    assert parse_flow(flow.to_ofctl(), PM) == flow


@pytest.mark.parametrize("text,words", [
    ("actions=set_field:4196->vlan_vid", "needs a VLAN tag"),
    ("dl_vlan=5,actions=set_field:100->vlan_vid", "lacks the present bit"),
    ("udp,actions=set_field:80->tp_dst", "needs"),
    ("actions=push_vlan:0x0800", "not a VLAN ethertype"),
    ("actions=goto_table:1,output:2", "goto_table must be the last"),
    ("actions=output(port=2,frob=1)", "unknown argument"),
    ("actions=load:0x100->NXM_NX_REG0[0..7]", "does not fit in 8 bits"),
    ("actions=move:NXM_OF_ETH_SRC[]->NXM_NX_REG0[]", "source is 48 bits"),
])
def test_errors_say_what_ovs_would_accept(text, words):
    with pytest.raises(FlowSyntaxError) as e:
        parse_flow(text, PM)
    assert words in e.value.message


def test_openflow13_mod_vlan_vid_is_push_and_set_as_ovs_ofctl_sends_it():
    # Without a tag in the match, OpenFlow 1.3 has only push_vlan + set_field.
    flow = parse_flow("actions=mod_vlan_vid:5,output:2", PM, of11=True)
    assert flow.actions[:2] == (FL.PushVlan(0x8100), FL.SetField("vlan_vid", 0x1005))
    tagged = parse_flow("dl_vlan=7,actions=mod_vlan_vid:5", PM, of11=True)
    assert tagged.actions == (FL.SetField("vlan_vid", 0x1005),)


def bridge(flows: str) -> Bridge:
    br = Bridge("br0", dict(PM))
    br.flows = FlowTable(parse_flows(flows, br.port_map, of11=True))
    return br


def ports(res) -> list[int]:
    return sorted(e.port for e in res.outputs)


def test_normal_floods_then_forwards_once_learned():
    br = bridge("actions=NORMAL\n")
    a, b = 0x020000000001, 0x020000000002
    res = classify(br.flows, Packet(in_port=1, dl_src=a, dl_dst=b), br, generate=True)
    assert ports(res) == [2, 3, 4, 5, FL.OFPP_LOCAL]
    res = classify(br.flows, Packet(in_port=2, dl_src=b, dl_dst=a), br, generate=True)
    assert ports(res) == [1]
    # Reserved multicast (STP) is dropped; a trace without -generate learns nothing.
    assert ports(classify(br.flows, Packet(in_port=1, dl_dst=0x0180C2000000), br)) == []
    classify(br.flows, Packet(in_port=3, dl_src=0x020000000003, dl_dst=a), br)
    assert ports(classify(br.flows, Packet(in_port=1, dl_src=a, dl_dst=0x020000000003), br)) \
        == [2, 3, 4, 5, FL.OFPP_LOCAL]


def test_outputs_to_missing_ports_are_skipped_and_vlans_stack():
    br = bridge("in_port=1,actions=output:9,push_vlan:0x8100,set_field:4101->vlan_vid,output:2,"
                "pop_vlan,output:3\n")
    res = classify(br.flows, Packet(in_port=1, vlan_tci=0x1007), br)
    assert res.nonexistent == [9]
    assert [(e.port, e.packet["vlan_tci"], e.packet["vlan_tci1"]) for e in res.outputs] == \
        [(2, 0x1005, 0x1007), (3, 0x1007, 0)]


def test_learn_adds_its_flow_only_with_generate():
    br = bridge("actions=learn(table=1,priority=9,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],"
                "output:NXM_OF_IN_PORT[]),resubmit(,1)\n")
    p = Packet(in_port=3, dl_src=0x020000000003)
    classify(br.flows, p, br)
    assert len(br.flows) == 1
    classify(br.flows, p, br, generate=True)
    learned = br.flows.in_table(1)[0]
    assert learned.to_ofctl() == "table=1, priority=9,dl_dst=02:00:00:00:00:03 actions=output:3"


def test_datapath_flow_syntax_in_traces():
    p = packet_from_text("in_port(1),eth(src=50:54:00:00:00:05,dst=50:54:00:00:00:07),"
                         "eth_type(0x8100),vlan(vid=5,pcp=1),encap(eth_type(0x0800),ipv4(src=192.168.0.1,"
                         "dst=192.168.0.2,proto=1,tos=0,ttl=64,frag=no),icmp(type=8,code=0))")
    assert (p.in_port, p["vlan_tci"], p["dl_type"], p["icmp_type"]) == (1, 0x3005, 0x0800, 8)


def run(tool, *argv, state):
    out = io.StringIO()
    code = tool(list(argv), out=out, state_dir=state)
    return code, out.getvalue()


def test_cli_takes_ovs_options_and_chained_vsctl_commands(tmp_path):
    run(cli.run_vsctl, "add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=dummy",
        "protocols=OpenFlow10,OpenFlow13", "fail-mode=secure", state=tmp_path)
    for n in (1, 2):
        run(cli.run_vsctl, "--may-exist", "add-port", "br0", f"p{n}", "--", "set", "Interface", f"p{n}",
            "type=dummy", f"ofport_request={n}", state=tmp_path)
    flows = tmp_path / "f.txt"
    flows.write_text("in_port=p1,actions=mod_vlan_vid:5,output:p2\n")
    for opts in (["-O", "OpenFlow13"], ["-OOpenFlow13"], ["--protocols=OpenFlow10,OpenFlow13"]):
        run(cli.run_ofctl, *opts, "replace-flows", "br0", str(flows), state=tmp_path)
        assert BridgeStore(tmp_path).get("br0").flows.flows[0].actions[0] == FL.PushVlan()
    _, text = run(cli.run_appctl, "ofproto/trace", "br0", "in_port=p1", state=tmp_path)
    assert "OpenFlow outputs: p2(2)" in text
    with pytest.raises(cli.CliError, match="unknown protocol"):
        run(cli.run_ofctl, "-O", "OpenFlow99", "dump-flows", "br0", state=tmp_path)
    run(cli.run_ofctl, "add-flow", "br0", "cookie=0x12,priority=7,actions=NORMAL", state=tmp_path)
    run(cli.run_ofctl, "--strict", "del-flows", "br0", "priority=8", state=tmp_path)
    assert len(BridgeStore(tmp_path).get("br0").flows) == 2
    run(cli.run_ofctl, "del-flows", "br0", "cookie=0x2/0xf", state=tmp_path)
    assert [f.cookie for f in BridgeStore(tmp_path).get("br0").flows] == [0]
    with pytest.raises(cli.CliError, match="tag: not supported"):
        run(cli.run_vsctl, "set", "Port", "p1", "tag=10", state=tmp_path)
