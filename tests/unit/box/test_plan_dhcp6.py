"""DHCPv6 from the virtual gateway in the plan: the service in gw, gw0's IPv6 as the modem's,
and the flows that keep the modem's DHCPv6 and the home's apart (by the reference classifier).

The box serves DHCPv6 with `ipv6.policy: invisible` (the default), never with `drop`.
"""
import json

import pytest

from appliance.box.plan import GW_NS, Observed, plan
from appliance.box.settings import default_settings, parse_settings, to_data
from appliance.kernel.desired import Address, Sysctls
from appliance.services.identity import DHCP6
from appliance.services.dhcp.dhcpkit_config import Dhcp6Settings
from appliance.switch.classifier import classify
from appliance.switch.flows import FlowTable
from appliance.switch.lint import lint
from appliance.switch.packet import packet_from_text
from appliance.switch.parser import parse_flows

GW_MAC = "18:00:00:00:00:e8"
GW_LL = "fe80::1a00:ff:fe00:e8"
CLIENT = "02:11:22:33:44:55"
CLIENT_LL = "fe80::11:22ff:fe33:4455"
OBSERVED = Observed.of({"enp5s0": "5c:00:00:00:00:7d", "enp1s0": "5c:00:00:00:00:7c"})
P = {"uplink": 1, "downlink": 2, "admin": 3, "vgw": 4, "vproxy": 5}


def settings(ipv6=True, **dhcp):
    data = to_data(default_settings("enp5s0", "enp1s0", gateway={"ip": "192.168.1.1", "mac": GW_MAC}))
    data["dhcp"].update(dhcp)
    data["ipv6"] = {"policy": "invisible" if ipv6 else "drop"}
    return parse_settings(data)


@pytest.fixture(scope="module")
def the_plan():
    return plan(settings(static_leases=[{"mac": CLIENT, "ip": "192.168.1.20", "ip6": "2001:db8:1::20"},
                                        {"mac": "02:00:00:00:00:02", "ip": "192.168.1.21"}],
                         options={"domain": "home.arpa"}), OBSERVED)


@pytest.fixture(scope="module")
def table(the_plan):
    return FlowTable(parse_flows(the_plan.switch.flow_text(), the_plan.switch.port_map))


def test_no_dhcp6_while_ipv6_is_dropped():
    p = plan(settings(ipv6=False), OBSERVED)
    assert "dhcp6" not in [svc.name for svc in p.services]
    assert "udp6" not in p.switch.flow_text()
    gw = next(o for o in p.kernel if isinstance(o, Sysctls) and o.ns == GW_NS)
    assert ("net.ipv6.conf.all.disable_ipv6", "1") in gw.values


def test_the_service_runs_in_gw_as_the_modem(the_plan):
    names = [svc.name for svc in the_plan.services]
    assert names.index("dhcp6") == names.index("dhcp4") + 1
    svc = next(svc for svc in the_plan.services if svc.name == "dhcp6")
    assert svc.netns == GW_NS and svc.argv[1:] == ("-m", "appliance.services.dhcp.dhcp6", "--config",
                                                   "/var/lib/appliance/dhcp/dhcp6.json")
    assert svc.probe.kind == "dhcp6" and svc.probe.bit == 3 and svc.probe.target == "[::1]:547"
    assert svc.probe.name == "/run/appliance/dhcp6/dhcp6-status.json"
    # As its own user, in its own directories (nothing of Kea's to touch).
    assert svc.identity == DHCP6 and svc.cwd == "/var/lib/appliance/dhcp6"
    assert svc.writable == ("/var/lib/appliance/dhcp6", "/run/appliance/dhcp6")  # on the image: all it may write
    assert ("/var/lib/appliance/dhcp6", DHCP6.uid, DHCP6.gid, 0o755) in the_plan.owners
    assert ("/run/appliance/dhcp6", DHCP6.uid, DHCP6.gid, 0o755) in the_plan.owners
    config = next(f for f in the_plan.files if f.path == "/var/lib/appliance/dhcp/dhcp6.json")
    assert svc.revision == config.digest
    d6 = Dhcp6Settings.from_json(json.loads(config.content))
    assert (d6.server_mac, d6.reply_from, d6.domain, d6.interface) == (GW_MAC, GW_LL, "home.arpa", "gw0")
    assert [(x.mac, x.ip) for x in d6.static_leases] == [(CLIENT, "2001:db8:1::20")]
    assert d6.dns_servers == () and d6.stateful is False, "both follow the modem's RA"


def test_gw0_is_the_modem_on_ipv6_and_never_announces_itself(the_plan):
    gw = dict(next(o for o in the_plan.kernel if isinstance(o, Sysctls) and o.ns == GW_NS).values)
    for key in ("accept_dad", "dad_transmits", "accept_ra", "autoconf", "router_solicitations"):
        assert gw[f"net.ipv6.conf.gw0.{key}"] == "0"
    assert gw["net.ipv6.conf.gw0.addr_gen_mode"] == "1", "the kernel makes no link-local of its own"
    lls = [o.cidr for o in the_plan.kernel if isinstance(o, Address) and o.ns == GW_NS and o.cidr.startswith("fe80")]
    assert lls == [f"{GW_LL}/64"], "the modem's EUI-64 link-local, planned so it follows a new modem's MAC"
    assert gw["net.ipv6.conf.gw0.disable_ipv6"] == "0" and gw["net.ipv6.conf.lo.disable_ipv6"] == "0"
    keys = [k for k, _ in next(o for o in the_plan.kernel if isinstance(o, Sysctls) and o.ns == GW_NS).values]
    assert keys.index("net.ipv6.conf.gw0.disable_ipv6") > keys.index("net.ipv6.conf.gw0.accept_dad")


def test_generated_flows_have_no_equal_priority_overlap(table):
    findings = [f for f in lint(table) if f.code in ("overlap", "overlap-same", "shadowed")]
    assert not findings, [f.format() for f in findings]


SOLICIT = (f"in_port=downlink,udp6,dl_src={CLIENT},dl_dst=33:33:00:01:00:02,ipv6_src={CLIENT_LL},"
           "ipv6_dst=ff02::1:2,tp_src=546,tp_dst=547")
REPLY = (f"in_port=vgw,udp6,dl_src={GW_MAC},dl_dst={CLIENT},ipv6_src={GW_LL},ipv6_dst={CLIENT_LL},"
         "tp_src=547,tp_dst=546")
MODEM_REPLY = (f"in_port=uplink,udp6,dl_src={GW_MAC},dl_dst={CLIENT},ipv6_src={GW_LL},ipv6_dst={CLIENT_LL},"
               "tp_src=547,tp_dst=546")
MODEM_SIDE_SOLICIT = ("in_port=uplink,udp6,dl_src=02:99:00:00:00:01,dl_dst=33:33:00:01:00:02,"
                      "ipv6_src=fe80::99,ipv6_dst=ff02::1:2,tp_src=546,tp_dst=547")
GW0_ND = (f"in_port=vgw,icmp6,dl_src={GW_MAC},dl_dst=33:33:ff:33:44:55,ipv6_src={GW_LL},"
          "ipv6_dst=ff02::1:ff33:4455")
GW0_NA = (f"in_port=vgw,icmp6,icmp_type=136,icmp_code=0,dl_src={GW_MAC},dl_dst={CLIENT},ipv6_src={GW_LL},"
          f"ipv6_dst={CLIENT_LL},nd_target={GW_LL}")
CLIENT_NA = (f"in_port=downlink,icmp6,dl_src={CLIENT},dl_dst={GW_MAC},ipv6_src={CLIENT_LL},ipv6_dst={GW_LL}")


@pytest.mark.parametrize("health,text,expect", [
    # Serving (bit 3 set): the home's DHCPv6 reaches gw0 only, gw0's replies the home only,
    # the modem's replies and the modem side's requests nobody.
    ("reg15=0xf,", SOLICIT, ["vgw"]),
    ("reg15=0xf,", REPLY, ["downlink"]),
    ("reg15=0xf,", MODEM_REPLY, []),
    ("reg15=0xf,", MODEM_SIDE_SOLICIT, []),
    # gw0's own neighbour discovery never reaches the modem; the answers reach gw0 (and the modem).
    ("reg15=0xf,", GW0_ND, ["downlink"]),
    # gw0 never answers for the modem's address (the modem does, with the router flag).
    ("reg15=0xf,", GW0_NA, []),
    ("reg15=0xf,", CLIENT_NA, ["uplink", "vgw"]),
    # Unhealthy or standing aside (bit 3 clear): the modem's DHCPv6 serves the home.
    ("reg15=0x7,", SOLICIT, ["uplink"]),
    ("reg15=0x7,", MODEM_REPLY, ["downlink"]),
    ("reg15=0x7,", MODEM_SIDE_SOLICIT, []),
])
def test_dhcp6_is_kept_apart_like_dhcp4(table, health, text, expect):
    result = classify(table, packet_from_text(health + text, P))
    assert sorted(result.output_ports) == sorted(P[p] for p in expect)


@pytest.mark.parametrize("ip6,message", [
    ("fe80::1", "not a unicast address a client can hold"),
    ("ff02::1", "not a unicast address a client can hold"),
    ("2001:db8:1::20", "already reserved by dhcp.static_leases[0]"),
    ("192.168.1.30", "valid IPv6"),
])
def test_a_static_leases_ipv6_address_is_checked_naming_the_field(ip6, message):
    from appliance.box.settings import SettingsError

    leases = [{"mac": CLIENT, "ip": "192.168.1.20", "ip6": "2001:db8:1::20"},
              {"mac": "02:00:00:00:00:02", "ip": "192.168.1.21", "ip6": ip6}]
    with pytest.raises(SettingsError) as e:
        settings(ipv6=False, static_leases=leases)
    assert list(e.value.errors) == ["dhcp.static_leases[1].ip6"]
    assert message in e.value.errors["dhcp.static_leases[1].ip6"][0]
