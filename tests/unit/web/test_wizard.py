"""The setup wizard's proposal (pure): which NIC faces the modem."""
from appliance.kernel.fake import FakeKernel
from appliance.web.network import wizard

MODEM_MAC = "18:00:00:00:00:e8"


def test_a_bridged_box_proposes_the_port_the_gateways_mac_was_learnt_on():
    # The factory bridge holds the DHCP address and the default route; the modem sits on enp5s0,
    # which sorts after enp1s0: the first NIC would be the wrong guess.
    k = FakeKernel()
    k.add_netns("wire")
    for i, nic in enumerate(("enp1s0", "enp5s0")):
        k.add_veth(None, nic, "wire", f"far{i}")
    k.add_bridge(None, "br-factory")
    k.add_address(None, "br-factory", "192.168.1.20/24")
    from appliance.kernel.base import Route
    k.add_route(None, Route("default", via="192.168.1.1", dev="br-factory"))
    k.neighbours = {(None, "192.168.1.1"): MODEM_MAC}
    k.fdb = {(None, MODEM_MAC): "enp5s0"}
    found = wizard.detect(k, None)
    assert found.nics == ["enp1s0", "enp5s0"]
    assert found.gateway_port == "enp5s0"
    doc = wizard.propose(found)
    assert doc["ports"] == {"uplink": "enp5s0", "downlink": "enp1s0"}
    assert doc["lan"]["prefix"] == "192.168.1.0/24" and doc["gateway"]["ip"] == "192.168.1.1"


def test_the_applied_ports_win_and_a_routed_nic_comes_next():
    d = wizard.Detected(nics=["enp1s0", "enp5s0"], gateway="192.168.1.1", gateway_dev="enp1s0",
                        addresses={"enp1s0": ["192.168.1.20/24"]})
    assert wizard.propose(d)["ports"] == {"uplink": "enp1s0", "downlink": "enp5s0"}
    d.applied_ports = ("enp5s0", "enp1s0")
    assert wizard.propose(d)["ports"] == {"uplink": "enp5s0", "downlink": "enp1s0"}
    d.applied_ports = ("eth7", "enp1s0")  # a NIC that is gone: not proposed
    assert wizard.propose(d)["ports"]["uplink"] == "enp1s0"
