"""The box's flow table with the health register, against Open vSwitch and the compiled datapath.

With `failsafe: open` the box's DNS steering and DHCP guards match reg15.
OVS reads the same flows (its dump is ours, line for line) and, given the
register's value in the trace flow as the datapath loads it at entry, makes
the same decisions as the reference classifier; the compiled test build,
given the register in skb->cb[1], too. Each is checked for every value of
the three service bits, on the packets that meet those flows.
"""
from dataclasses import replace

import pytest

from appliance.box.plan import Observed, plan
from appliance.box.settings import default_settings
from appliance.box.switchload import DatapathLoader
from appliance.switch.classifier import classify
from appliance.switch.datapath.testrun import TestDatapath
from appliance.switch.packet import Packet
from tests.support.ovs import OvsOracle, expected_from_classifier, ovs_available

GW, GW_MAC, UP_MAC, VP_MAC = 0xC0A80101, 0x1800000000E8, 0x5C000000007D, 0xD600000000BF
CLIENT = 0x021122334455


def box_bridge():
    s = default_settings("enp5s0", "enp1s0", gateway={"ip": "192.168.1.1", "mac": "18:00:00:00:00:e8"})
    p = plan(s, Observed.of({"enp5s0": "5c:00:00:00:00:7d", "enp1s0": "5c:00:00:00:00:7c"}))
    return DatapathLoader.bridge_of(p.switch)


def packets():
    out = []
    for reg in range(8):
        for in_port, src in ((2, CLIENT), (1, GW_MAC), (3, UP_MAC)):
            base = dict(reg15=reg, in_port=in_port, dl_src=src, nw_ttl=64, dl_type=0x0800)
            out += [
                Packet(base, dl_dst=GW_MAC, nw_proto=17, nw_src=0xC0A80146, nw_dst=GW, tp_src=40000, tp_dst=53),
                Packet(base, dl_dst=GW_MAC, nw_proto=6, nw_src=0xC0A80146, nw_dst=GW, tp_src=40000, tp_dst=53),
                Packet(base, dl_dst=0xFFFFFFFFFFFF, nw_proto=17, nw_src=0, nw_dst=0xFFFFFFFF, tp_src=68, tp_dst=67),
                Packet(base, dl_dst=GW_MAC, nw_proto=17, nw_src=0xC0A80146, nw_dst=GW, tp_src=68, tp_dst=67),
                Packet(base, dl_dst=0xFFFFFFFFFFFF, nw_proto=17, nw_src=GW, nw_dst=0xFFFFFFFF, tp_src=67, tp_dst=68),
            ]
    return out


@pytest.mark.skipif(not ovs_available(), reason="Open vSwitch is not installed")
def test_open_vswitch_reads_the_health_matches_and_decides_the_same():
    br = box_bridge()
    assert any("reg15" in f.match.masks for f in br.flows)
    oracle = OvsOracle(br.ports)
    oracle.start()
    try:
        oracle.load_flows(br.flows)
        ours = {replace(f, cookie=i + 1).to_ofctl() for i, f in enumerate(oracle.flows)}
        theirs = {ln.strip() for ln in oracle.dump_flows().splitlines() if ln.strip() and "NXST" not in ln}
        assert ours == theirs  # dump-flows, line for line, the register matches included
        assert [line for line in theirs if "reg15=0x1/0x1" in line]
        compared = 0
        for p in packets():
            result = classify(br.flows, p, br)
            tr = oracle.trace(p)
            assert not tr.unparsed, tr.text
            index = {id(f): i + 1 for i, f in enumerate(oracle.flows)}
            assert [(lk.table, index[id(lk.flow)] if lk.flow else None) for lk in result.lookups] == tr.lookups, tr.text
            assert expected_from_classifier(result, p.in_port, br.ports.values(), tr) == tr.outputs, tr.text
            compared += 1
        assert compared == len(packets())
    finally:
        oracle.stop()


def test_the_compiled_datapath_decides_as_the_classifier_for_every_health_value():
    br = box_bridge()
    with TestDatapath(br.flows, br.ports.values(), br.port_names) as dp:
        for p in packets():
            got, _ = dp.run(p)
            want = classify(br.flows, p, br)
            assert list(got.flows) == [lk.flow for lk in want.lookups], p
            assert got.output_ports == [o.port for o in want.outputs], p
