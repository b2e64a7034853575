"""The box's DHCPv6 flows (gw0 answers DHCPv6 as the modem) against Open vSwitch and the compiled datapath.

The same check as the health register's (test_health_register.py) for the DHCPv6 guards,
which match bit 3: for every value of the four service bits, on DHCPv6 both ways, gw0's
own IPv6 and the ND answers to the modem's MAC, OVS (given the register in the trace flow)
and the compiled test build (skb->cb[1]) decide as the reference classifier.
"""
from dataclasses import replace
from ipaddress import IPv6Address

import pytest

from appliance.box.plan import Observed, plan
from appliance.box.settings import Ipv6, default_settings
from appliance.box.switchload import DatapathLoader
from appliance.switch.classifier import classify
from appliance.switch.datapath.testrun import TestDatapath
from appliance.switch.packet import Packet
from tests.support.ovs import OvsOracle, expected_from_classifier, ovs_available

GW_MAC, CLIENT, OTHER = 0x1800000000E8, 0x021122334455, 0x029900000001
GW_LL, CLIENT_LL = int(IPv6Address("fe80::1a00:ff:fe00:e8")), int(IPv6Address("fe80::11:22ff:fe33:4455"))
ALL_DHCP = int(IPv6Address("ff02::1:2"))


def box_bridge():
    s = default_settings("enp5s0", "enp1s0", gateway={"ip": "192.168.1.1", "mac": "18:00:00:00:00:e8"})
    s = s.model_copy(update={"ipv6": Ipv6.model_construct(policy="invisible")})
    p = plan(s, Observed.of({"enp5s0": "5c:00:00:00:00:7d", "enp1s0": "5c:00:00:00:00:7c"}))
    return DatapathLoader.bridge_of(p.switch)


def packets():
    out = []
    for reg in range(16):
        v6 = dict(reg15=reg, dl_type=0x86DD, nw_ttl=64)
        udp = dict(v6, nw_proto=17)
        out += [
            Packet(udp, in_port=2, dl_src=CLIENT, dl_dst=0x333300010002, ipv6_src=CLIENT_LL, ipv6_dst=ALL_DHCP,
                   tp_src=546, tp_dst=547),  # a client's Solicit / Information-request
            Packet(udp, in_port=4, dl_src=GW_MAC, dl_dst=CLIENT, ipv6_src=GW_LL, ipv6_dst=CLIENT_LL,
                   tp_src=547, tp_dst=546),  # gw0's Reply
            Packet(udp, in_port=1, dl_src=GW_MAC, dl_dst=CLIENT, ipv6_src=GW_LL, ipv6_dst=CLIENT_LL,
                   tp_src=547, tp_dst=546),  # the modem's Reply
            Packet(udp, in_port=1, dl_src=OTHER, dl_dst=0x333300010002, ipv6_src=GW_LL + 1, ipv6_dst=ALL_DHCP,
                   tp_src=546, tp_dst=547),  # a request from the modem side
            Packet(v6, in_port=4, nw_proto=58, dl_src=GW_MAC, dl_dst=0x3333FF334455, ipv6_src=GW_LL,
                   ipv6_dst=int(IPv6Address("ff02::1:ff33:4455"))),  # gw0's neighbour solicitation
            Packet(v6, in_port=2, nw_proto=58, dl_src=CLIENT, dl_dst=GW_MAC, ipv6_src=CLIENT_LL,
                   ipv6_dst=GW_LL),  # the client's answer
        ]
    return out


@pytest.mark.skipif(not ovs_available(), reason="Open vSwitch is not installed")
def test_open_vswitch_reads_the_dhcp6_flows_and_decides_the_same():
    br = box_bridge()
    assert any("reg15" in f.match.masks and f.match.masks["reg15"] == 0x8 for f in br.flows)
    oracle = OvsOracle(br.ports)
    oracle.start()
    try:
        oracle.load_flows(br.flows)
        ours = {replace(f, cookie=i + 1).to_ofctl() for i, f in enumerate(oracle.flows)}
        theirs = {ln.strip() for ln in oracle.dump_flows().splitlines() if ln.strip() and "NXST" not in ln}
        assert ours == theirs
        for p in packets():
            result = classify(br.flows, p, br)
            tr = oracle.trace(p)
            assert not tr.unparsed, tr.text
            index = {id(f): i + 1 for i, f in enumerate(oracle.flows)}
            assert [(lk.table, index[id(lk.flow)] if lk.flow else None) for lk in result.lookups] == tr.lookups, tr.text
            assert expected_from_classifier(result, p.in_port, br.ports.values(), tr) == tr.outputs, tr.text
    finally:
        oracle.stop()


def test_the_compiled_datapath_decides_the_dhcp6_flows_as_the_classifier():
    br = box_bridge()
    with TestDatapath(br.flows, br.ports.values(), br.port_names) as dp:
        for p in packets():
            got, _ = dp.run(p)
            want = classify(br.flows, p, br)
            assert list(got.flows) == [lk.flow for lk in want.lookups], p
            assert got.output_ports == [o.port for o in want.outputs], p
