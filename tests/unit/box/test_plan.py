"""The pure plan: deterministic, stable MACs, the seed's topology, and a
flow table that does each step of `init-flow.sh` without relying on
equal-priority overlaps (checked with the flow language's parser, lint and
reference classifier)."""
import pytest

from appliance.box.plan import (
    ADMIN_DEV, BRIDGE, GW_NS, VPROXY_NS, BridgePort, Observed, PlanError, derived_mac, diff, plan, render,
)
from appliance.box.settings import default_settings, parse_settings, to_data
from appliance.kernel.desired import Address, Bridge, Namespace, NftTable, RouteEntry, Sysctls, Veth
from appliance.switch.classifier import classify
from appliance.switch.flows import Flow, FlowTable
from appliance.switch.parser import parse_flows

GW_MAC = "18:00:00:00:00:e8"
UP_MAC = "5c:00:00:00:00:7d"
VP_MAC = "d6:00:00:00:00:bf"
CLIENT = "02:11:22:33:44:55"
OBSERVED = Observed.of({"enp5s0": UP_MAC, "enp1s0": "5c:00:00:00:00:7c"})


def settings(**changes):
    data = to_data(default_settings("enp5s0", "enp1s0", gateway={"ip": "192.168.1.1", "mac": GW_MAC}))
    data.update(changes)
    return parse_settings(data)


@pytest.fixture(scope="module")
def the_plan():
    return plan(settings(), OBSERVED)


@pytest.fixture(scope="module")
def table(the_plan):
    return FlowTable(parse_flows(the_plan.switch.flow_text(), the_plan.switch.port_map))


def test_plan_is_deterministic_and_comparable(the_plan):
    again = plan(settings(), Observed.of({"enp1s0": "5c:00:00:00:00:7c", "enp5s0": UP_MAC}))
    assert again == the_plan
    assert render(again) == render(the_plan)
    assert diff(the_plan, again) == ""
    assert hash(the_plan.switch) == hash(again.switch)


def test_derived_macs_are_stable_local_unicast():
    assert derived_mac("vgw") == derived_mac("vgw") != derived_mac("vproxy")
    # Fixed values: a change here renames the box's ports to every neighbour.
    assert derived_mac("vgw") == "9a:83:78:64:fc:d1"
    for name in ("admin", "vgw", "vproxy", BRIDGE):
        first = int(derived_mac(name)[:2], 16)
        assert first & 0x02 and not first & 0x01


def test_topology(the_plan):
    k = the_plan.kernel
    assert [o for o in k if isinstance(o, Namespace)] == [Namespace(GW_NS), Namespace(VPROXY_NS)]
    assert Bridge(None, BRIDGE, derived_mac(BRIDGE)) in k
    assert BridgePort(None, "enp5s0", BRIDGE, mac=derived_mac("nic:enp5s0"), original_mac=UP_MAC) in k
    assert BridgePort(None, "enp1s0", BRIDGE) in k
    veths = {v.name: v for v in k if isinstance(v, Veth)}
    # gw0 carries the modem's IP and MAC; admin0 the uplink NIC's MAC.
    assert (veths["gw0"].ns, veths["gw0"].mac, veths["gw0"].peer) == (GW_NS, GW_MAC, "vgw")
    assert (veths[ADMIN_DEV].ns, veths[ADMIN_DEV].mac, veths[ADMIN_DEV].peer) == (None, UP_MAC, "admin")
    assert (veths["vproxy0"].ns, veths["vproxy0"].mac) == (VPROXY_NS, VP_MAC)
    for v in veths.values():
        assert v.peer_master == BRIDGE and v.peer_ns is None and v.peer_mac == derived_mac(v.peer)
    assert {(a.ns, a.dev, a.cidr) for a in k if isinstance(a, Address)} == {
        (None, ADMIN_DEV, "192.168.1.8/24"), (GW_NS, "gw0", "192.168.1.1/24"), (VPROXY_NS, "vproxy0", "192.168.1.9/24"),
        # IPv6 (invisible): the DNS server's address inside vproxy, vproxy0's EUI-64 link-local,
        # gw0 the modem's (EUI-64 of GW_MAC: the U/L bit flipped).
        (VPROXY_NS, "lo", "fdff:7e1a::53/128"), (VPROXY_NS, "vproxy0", "fe80::d400:ff:fe00:bf/64"),
        (GW_NS, "gw0", "fe80::1a00:ff:fe00:e8/64")}
    routes = {(r.ns, r.route.dst, r.route.via, r.route.type) for r in k if isinstance(r, RouteEntry)}
    assert routes == {(None, "default", "192.168.1.1", "unicast"),
                      (VPROXY_NS, "100.96.0.0/11", None, "local"),
                      (VPROXY_NS, "default", "192.168.1.1", "unicast"),
                      (VPROXY_NS, "2001:2::/48", None, "local"),
                      (VPROXY_NS, "::/0", None, "unicast")}


def test_ipv6_drop_gives_vproxy_no_ipv6_at_all():
    k = plan(settings(ipv6={"policy": "drop"}), OBSERVED).kernel
    assert not [a for a in k if isinstance(a, Address) and ":" in a.cidr]
    values = {(s.ns, k): v for s in k if isinstance(s, Sysctls) for k, v in s.values}
    assert values[(VPROXY_NS, "net.ipv6.conf.all.disable_ipv6")] == "1"


def test_sysctls(the_plan):
    values = {(s.ns, k): v for s in the_plan.kernel if isinstance(s, Sysctls) for k, v in s.values}
    assert values[(VPROXY_NS, "net.ipv4.conf.all.arp_announce")] == "2"
    assert values[(VPROXY_NS, "net.ipv4.conf.all.arp_ignore")] == "1"
    for dev in ("enp5s0", "enp1s0", BRIDGE, "admin", "vgw", "vproxy", ADMIN_DEV):
        assert values[(None, f"net.ipv6.conf.{dev}.disable_ipv6")] == "1"
    assert values[(GW_NS, "net.ipv6.conf.default.disable_ipv6")] == "1"
    # vproxy speaks IPv6 (DNS, the relay) but makes no address, DAD or RS of its own.
    for dev in ("default", "vproxy0"):
        assert values[(VPROXY_NS, f"net.ipv6.conf.{dev}.addr_gen_mode")] == "1"
        assert values[(VPROXY_NS, f"net.ipv6.conf.{dev}.accept_dad")] == "0"
        assert values[(VPROXY_NS, f"net.ipv6.conf.{dev}.router_solicitations")] == "0"
    assert values[(GW_NS, "net.ipv4.ip_forward")] == "0"
    # vproxy forwards the relay's fast path (its forward chain drops the rest).
    assert values[(VPROXY_NS, "net.ipv4.ip_forward")] == "1"
    assert values[(VPROXY_NS, "net.ipv4.conf.vproxy0.send_redirects")] == "0"
    # The relay's own sockets keep clear of the ports the fast path NATs to.
    assert values[(VPROXY_NS, "net.ipv4.ip_local_port_range")] == "61000 65535"
    assert values[(None, f"net.ipv4.conf.{BRIDGE}.arp_ignore")] == "8"
    for key in ("iptables", "ip6tables", "arptables"):
        assert values[(None, f"net.bridge.bridge-nf-call-{key}")] == "0"


def test_nftables(the_plan):
    tables = {(t.ns, t.family, t.name): t for t in the_plan.kernel if isinstance(t, NftTable)}
    vp = tables[(VPROXY_NS, "ip", "appliance")].body
    assert "ip daddr 192.168.1.1 udp dport 53 redirect to :53" in vp
    assert "ip daddr 192.168.1.1 tcp dport 53 redirect to :53" in vp
    assert ('iifname { "vproxy0" } ip daddr 100.96.0.0/11 meta l4proto { tcp, udp } '
            'tproxy to 127.0.0.1:7893 accept') in vp
    # After dstnat, so the fast path's NATed connections are forwarded, not taken.
    assert "type filter hook prerouting priority dstnat + 10;" in vp
    forward = vp[vp.index("chain forward"):]
    assert "policy drop;" in forward and "ct mark & 0xfffffffe == 0x7e1a accept" in forward
    host = tables[(None, "inet", "appliance")].body
    assert f'iifname "{BRIDGE}" drop' in host
    assert f'iifname "admin0" ether saddr {GW_MAC} tcp dport {{ 22, 80, 443, 6443 }} drop' in host


def test_service_and_files(the_plan):
    svc, dhcp6, dns, relay = the_plan.services
    conf, dns_conf, relay_conf, dhcp6_conf = the_plan.files
    assert dhcp6.netns == GW_NS and dhcp6.argv[-2:] == ("--config", dhcp6_conf.path)
    assert relay.netns == VPROXY_NS and relay.argv[-2:] == ("--config", relay_conf.path)
    assert svc.netns == GW_NS and svc.argv == ("kea-dhcp4", "-c", conf.path)
    assert dns.netns == VPROXY_NS and dns.argv[-2:] == ("--config", dns_conf.path)
    assert dns.revision == dns_conf.digest
    changed = plan(settings(dhcp={"pools": [{"start": "192.168.1.100", "end": "192.168.1.120"}]}), OBSERVED)
    assert changed.services[0].revision != svc.revision  # a new config restarts Kea
    # ...and so does a new gateway MAC: Kea's raw sockets send with the MAC gw0 had at its start.
    moved = plan(settings(gateway={"ip": "192.168.1.1", "mac": "02:00:00:00:00:aa"}), OBSERVED)
    assert moved.services[0].revision != svc.revision and moved.files[0] == conf
    assert "+file /var/lib/appliance/dhcp/kea-dhcp4.conf |" in diff(the_plan, changed)


def test_dns_without_a_section_forwards_to_the_modem_and_follows_the_document():
    from appliance.box.plan import Layout, dns_settings
    s = settings(dhcp={"pools": [{"start": "192.168.1.100", "end": "192.168.1.120"}],
                       "static_leases": [{"mac": CLIENT, "ip": "192.168.1.30", "hostname": "printer"}],
                       "options": {"domain": "home.arpa"}})
    d = dns_settings(s, Layout(state_dir="/s", run_dir="/r"))
    assert [u.url for u in d.upstreams] == ["udp://192.168.1.1"]
    assert d.fake_ip.network == "100.96.0.0/11" and d.fake_ip.db_path == "/s/dns/fakeip.sqlite3"
    assert d.local_names.domain == "home.arpa" and d.local_names.leases_file == "/s/dhcp/dhcp4.leases"
    assert [(h.hostname, h.ip) for h in d.local_names.static] == [("printer", "192.168.1.30")]
    assert d.control_socket == "/r/dns.sock"
    # Rebinding: the LAN and both fake ranges are never an upstream's answer for a public name.
    assert {"192.168.1.0/24", "100.96.0.0/11", "2001:2::/48"} <= set(d.rebind.networks)
    assert d.fake_ip.network6 == "2001:2::/48"
    # ...nor the home's IPv6 prefix, read from the modem's RA that the DHCPv6 service keeps.
    assert d.rebind.prefixes_file == "/s/dhcp6/modem-ra.json"


def test_dns_local_names_take_a_static_lease_ipv6_address_only_when_ipv6_passes():
    from appliance.box.plan import Layout, dns_settings
    lease = {"mac": CLIENT, "ip": "192.168.1.30", "hostname": "printer", "ip6": "2001:db8:1::30"}
    s = settings(dhcp={"pools": [{"start": "192.168.1.100", "end": "192.168.1.120"}],
                       "static_leases": [lease]})
    d = dns_settings(s, Layout(state_dir="/s", run_dir="/r"))
    assert [(h.hostname, h.ip, h.mac) for h in d.local_names.static] == [
        ("printer", "192.168.1.30", CLIENT), ("printer", "2001:db8:1::30", CLIENT)]
    dropped = dns_settings(settings(dhcp=s.dhcp.model_dump(mode="json"), ipv6={"policy": "drop"}),
                           Layout(state_dir="/s", run_dir="/r"))
    assert [h.ip for h in dropped.local_names.static] == ["192.168.1.30"]
    assert dropped.rebind.prefixes_file is None


def test_plan_needs_the_observations():
    with pytest.raises(PlanError) as e:
        plan(settings(), Observed.of({"enp1s0": "5c:00:00:00:00:7c"}))
    assert e.value.field == "ports.uplink"
    no_mac = parse_settings(to_data(default_settings("enp5s0", "enp1s0")))
    with pytest.raises(PlanError) as e:
        plan(no_mac, OBSERVED)
    assert e.value.field == "gateway.mac"
    found = plan(no_mac, Observed.of(dict(OBSERVED.nic_macs), gateway_mac=GW_MAC))
    assert found.kernel == plan(settings(), OBSERVED).kernel


def test_generated_flows_have_no_equal_priority_overlap_and_no_shadowed_flow(table):
    from appliance.switch.lint import lint
    findings = [f for f in lint(table) if f.code in ("overlap", "overlap-same", "shadowed")]
    assert findings == [], "\n".join(f.format() for f in findings)


def test_uplink_dhcp_drops_are_strictly_above_the_dhcp_rules(table):
    prio = {f.to_ofctl(): f.priority for f in table}
    drops = [f.priority for f in table if "in_port" in f.match and not f.actions]
    generic = [f.priority for f in table if f.actions and "tp_src" in f.match and f.match.values["tp_src"] in (67, 68)]
    assert prio and min(p for p in drops if p > 900) > max(generic)


# -- each step of the seed's init-flow.sh, by the reference classifier

P = {"uplink": 1, "downlink": 2, "admin": 3, "vgw": 4, "vproxy": 5}


HEALTHY = "reg15=0x7,"  # the watchdog's heartbeat is fresh for DNS, Kea and the relay


def run(table, text, health=HEALTHY):
    from appliance.switch.packet import packet_from_text
    return classify(table, packet_from_text(health + text, P))


def outs(result):
    return sorted(result.output_ports)


@pytest.mark.parametrize("text,expect", [
    # IPv6 passes to the modem (ipv6.policy: invisible).
    (f"in_port=downlink,ipv6,dl_src={CLIENT},dl_dst={GW_MAC}", ["uplink"]),
    # Frames with the gateway MAC on both sides go nowhere.
    (f"in_port=vgw,ip,dl_src={GW_MAC},dl_dst={GW_MAC}", []),
    # DHCP client -> server: to the virtual gateway only (broadcast and unicast).
    (f"in_port=downlink,udp,dl_src={CLIENT},dl_dst=ff:ff:ff:ff:ff:ff,nw_src=0.0.0.0,nw_dst=255.255.255.255,"
     "tp_src=68,tp_dst=67", ["vgw"]),
    (f"in_port=downlink,udp,dl_src={CLIENT},dl_dst={GW_MAC},nw_src=192.168.1.70,nw_dst=192.168.1.1,"
     "tp_src=68,tp_dst=67", ["vgw"]),
    # DHCP server -> client: downlink only, even broadcast from the gateway MAC.
    (f"in_port=vgw,udp,dl_src={GW_MAC},dl_dst=ff:ff:ff:ff:ff:ff,nw_src=192.168.1.1,nw_dst=255.255.255.255,"
     "tp_src=67,tp_dst=68", ["downlink"]),
    # DHCP from the modem side is dropped, both directions (the known trap).
    (f"in_port=uplink,udp,dl_src={GW_MAC},dl_dst=ff:ff:ff:ff:ff:ff,nw_src=192.168.1.1,nw_dst=255.255.255.255,"
     "tp_src=67,tp_dst=68", []),
    ("in_port=uplink,udp,dl_src=02:99:00:00:00:01,dl_dst=ff:ff:ff:ff:ff:ff,nw_src=0.0.0.0,"
     "nw_dst=255.255.255.255,tp_src=68,tp_dst=67", []),
    # Broadcast with the gateway MAC (the modem's or gw0's ARP) never goes to uplink/vgw.
    (f"in_port=vgw,arp,dl_src={GW_MAC},dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1,arp_spa=192.168.1.1,"
     "arp_tpa=192.168.1.70", ["admin", "downlink", "vproxy"]),
    (f"in_port=uplink,arp,dl_src={GW_MAC},dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1,arp_spa=192.168.1.1,"
     "arp_tpa=192.168.1.70", ["admin", "downlink", "vproxy"]),
    # ARP replies to the gateway MAC go to both the modem and vgw.
    (f"in_port=downlink,arp,dl_src={CLIENT},dl_dst={GW_MAC},arp_op=2,arp_spa=192.168.1.70,"
     "arp_tpa=192.168.1.1", ["uplink", "vgw"]),
    # ARP for the gateway IP is for the modem.
    (f"in_port=downlink,arp,dl_src={CLIENT},dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1,arp_spa=192.168.1.70,"
     "arp_tpa=192.168.1.1", ["uplink"]),
    # vproxy may not ARP as the gateway.
    (f"in_port=vproxy,arp,dl_src={VP_MAC},dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1,arp_spa=192.168.1.1,"
     "arp_tpa=192.168.1.70", []),
    # DNS to the gateway goes to vproxy (UDP and TCP) ...
    (f"in_port=downlink,udp,dl_src={CLIENT},dl_dst={GW_MAC},nw_src=192.168.1.70,nw_dst=192.168.1.1,"
     "tp_src=5353,tp_dst=53", ["vproxy"]),
    (f"in_port=admin,tcp,dl_src={UP_MAC},dl_dst={GW_MAC},nw_src=192.168.1.8,nw_dst=192.168.1.1,"
     "tp_src=40000,tp_dst=53", ["vproxy"]),
    # ... except vproxy's own, which goes to the modem.
    (f"in_port=vproxy,udp,dl_src={VP_MAC},dl_dst={GW_MAC},nw_src=192.168.1.9,nw_dst=192.168.1.1,"
     "tp_src=5353,tp_dst=53", ["uplink"]),
    # The fake range goes to vproxy.
    (f"in_port=downlink,tcp,dl_src={CLIENT},dl_dst={GW_MAC},nw_src=192.168.1.70,nw_dst=100.100.1.2,"
     "tp_src=40000,tp_dst=443", ["vproxy"]),
    # Other traffic to the gateway MAC goes to the modem.
    (f"in_port=downlink,tcp,dl_src={CLIENT},dl_dst={GW_MAC},nw_src=192.168.1.70,nw_dst=93.184.216.34,"
     "tp_src=40000,tp_dst=443", ["uplink"]),
    # Console/SSH guard: nothing from the modem side opens a connection to the box.
    (f"in_port=uplink,tcp,dl_src={GW_MAC},dl_dst={UP_MAC},nw_src=192.168.1.1,nw_dst=192.168.1.8,"
     "tp_src=40000,tp_dst=22", []),
    (f"in_port=uplink,tcp,dl_src={GW_MAC},dl_dst={UP_MAC},nw_src=192.168.1.1,nw_dst=192.168.1.8,"
     "tp_src=40000,tp_dst=443", []),
    # DNS guard: the modem side's DNS never reaches the box's server, to vproxy or to the gateway.
    (f"in_port=uplink,udp,dl_src=02:99:00:00:00:01,dl_dst={VP_MAC},nw_src=192.168.1.150,"
     "nw_dst=192.168.1.9,tp_src=5353,tp_dst=53", []),
    (f"in_port=uplink,tcp,dl_src=02:99:00:00:00:01,dl_dst={VP_MAC},nw_src=192.168.1.150,"
     "nw_dst=192.168.1.9,tp_src=40000,tp_dst=53", []),
    (f"in_port=uplink,udp,dl_src=02:99:00:00:00:01,dl_dst={GW_MAC},nw_src=192.168.1.150,"
     "nw_dst=192.168.1.1,tp_src=5353,tp_dst=53", []),
])
def test_seed_steps(table, text, expect):
    assert outs(run(table, text)) == sorted(P[p] for p in expect)


C6 = "2001:db8:1::ff:fe11:2233"


@pytest.mark.parametrize("text,expect", [
    # The modem's RA reaches the home (and the box's own ports, which ignore it) unchanged.
    (f"in_port=uplink,icmp6,dl_src={GW_MAC},dl_dst=33:33:00:00:00:01,ipv6_src=fe80::1a00:ff:fe00:e8,"
     "ipv6_dst=ff02::1", ["NORMAL"]),
    # DNS over IPv6 to any of the modem's addresses (by its MAC) goes to vproxy ...
    (f"in_port=downlink,udp6,dl_src={CLIENT},dl_dst={GW_MAC},ipv6_src={C6},ipv6_dst=2001:db8:1::1,"
     "tp_src=5353,tp_dst=53", ["vproxy"]),
    (f"in_port=downlink,tcp6,dl_src={CLIENT},dl_dst={GW_MAC},ipv6_src=fe80::1,ipv6_dst=fe80::1a00:ff:fe00:e8,"
     "tp_src=40000,tp_dst=53", ["vproxy"]),
    # ... other IPv6 to the modem goes to it.
    (f"in_port=downlink,tcp6,dl_src={CLIENT},dl_dst={GW_MAC},ipv6_src={C6},ipv6_dst=2001:db8:ffff::10,"
     "tp_src=40000,tp_dst=80", ["uplink"]),
    # The IPv6 fake range goes to vproxy, and never from the modem side.
    (f"in_port=downlink,tcp6,dl_src={CLIENT},dl_dst={GW_MAC},ipv6_src={C6},ipv6_dst=2001:2::1:2,"
     "tp_src=40000,tp_dst=443", ["vproxy"]),
    (f"in_port=uplink,tcp6,dl_src={GW_MAC},dl_dst={VP_MAC},ipv6_src=2001:db8:1::1,ipv6_dst=2001:2::1:2,"
     "tp_src=40000,tp_dst=443", []),
    # vproxy's own IPv6 (neighbour discovery, answers) reaches the home side only.
    (f"in_port=vproxy,icmp6,dl_src={VP_MAC},dl_dst=33:33:ff:11:22:33,ipv6_src=fe80::d400:ff:fe00:bf,"
     "ipv6_dst=ff02::1:ff11:2233", ["downlink"]),
    # The console/SSH guard holds for IPv6.
    (f"in_port=uplink,tcp6,dl_src={GW_MAC},dl_dst={UP_MAC},ipv6_src=2001:db8:1::1,ipv6_dst={C6},"
     "tp_src=40000,tp_dst=22", []),
])
def test_ipv6_invisible_steps(table, text, expect):
    result = run(table, text)
    if expect == ["NORMAL"]:
        assert result.normal and not result.output_ports
    else:
        assert outs(result) == sorted(P[p] for p in expect)


DNS_QUERY = (f"in_port=downlink,udp,dl_src={CLIENT},dl_dst={GW_MAC},nw_src=192.168.1.70,nw_dst=192.168.1.1,"
             "tp_src=5353,tp_dst=53")
DNS_TCP = (f"in_port=downlink,tcp,dl_src={CLIENT},dl_dst={GW_MAC},nw_src=192.168.1.70,nw_dst=192.168.1.1,"
           "tp_src=40000,tp_dst=53")
DISCOVER = (f"in_port=downlink,udp,dl_src={CLIENT},dl_dst=ff:ff:ff:ff:ff:ff,nw_src=0.0.0.0,"
            "nw_dst=255.255.255.255,tp_src=68,tp_dst=67")
RENEW = (f"in_port=downlink,udp,dl_src={CLIENT},dl_dst={GW_MAC},nw_src=192.168.1.70,nw_dst=192.168.1.1,"
         "tp_src=68,tp_dst=67")
MODEM_OFFER = (f"in_port=uplink,udp,dl_src={GW_MAC},dl_dst=ff:ff:ff:ff:ff:ff,nw_src=192.168.1.1,"
               "nw_dst=255.255.255.255,tp_src=67,tp_dst=68")


@pytest.mark.parametrize("health,text,expect", [
    # DNS unhealthy (bit 0 clear): the modem answers the home's DNS, UDP and TCP.
    ("reg15=0x6,", DNS_QUERY, ["uplink"]),
    ("reg15=0x6,", DNS_TCP, ["uplink"]),
    ("", DNS_QUERY, ["uplink"]),  # no heartbeat at all
    # Kea unhealthy (bit 1 clear): the home's DHCP reaches the modem, the modem's reaches the home.
    ("reg15=0x5,", DISCOVER, ["uplink"]),
    ("reg15=0x5,", RENEW, ["uplink"]),
    ("reg15=0x5,", MODEM_OFFER, ["downlink"]),
    ("", MODEM_OFFER, ["downlink"]),
    # One service's fault leaves the other steered.
    ("reg15=0x5,", DNS_QUERY, ["vproxy"]),
    ("reg15=0x6,", DISCOVER, ["vgw"]),
    ("reg15=0x6,", MODEM_OFFER, []),
    # Whatever the health, DHCP requests from the modem side are never served.
    ("", "in_port=uplink,udp,dl_src=02:99:00:00:00:01,dl_dst=ff:ff:ff:ff:ff:ff,nw_src=0.0.0.0,"
         "nw_dst=255.255.255.255,tp_src=68,tp_dst=67", []),
    # Nor does the console open to the modem side.
    ("", f"in_port=uplink,tcp,dl_src={GW_MAC},dl_dst={UP_MAC},nw_src=192.168.1.1,nw_dst=192.168.1.8,"
         "tp_src=40000,tp_dst=22", []),
])
def test_failsafe_open_hands_the_home_to_the_modem_while_a_service_is_unhealthy(table, health, text, expect):
    assert outs(run(table, text, health)) == sorted(P[p] for p in expect)


def test_failsafe_closed_has_no_health_match_and_no_way_around_the_box():
    p = plan(settings(failsafe="closed"), OBSERVED)
    closed = FlowTable(parse_flows(p.switch.flow_text(), p.switch.port_map))
    assert "reg15" not in p.switch.flow_text()
    assert outs(run(closed, DNS_QUERY, "")) == [P["vproxy"]]
    assert outs(run(closed, DISCOVER, "")) == [P["vgw"]]
    assert outs(run(closed, MODEM_OFFER, "")) == []


def test_the_health_matches_are_visible_in_the_flow_text(the_plan):
    text = the_plan.switch.flow_text(comments=False)
    assert "priority=891,udp,reg15=0x1/0x1,nw_dst=192.168.1.1,tp_dst=53" in text
    assert "priority=940,udp,reg15=0x2/0x2,tp_src=68,tp_dst=67,actions=output:vgw" in text
    assert "priority=935,udp,tp_src=68,tp_dst=67,actions=output:uplink" in text


@pytest.mark.parametrize("text", [
    # From the home side the console answers: straight to the admin port
    # (the Linux bridge would take the uplink NIC's MAC for its own).
    f"in_port=downlink,tcp,dl_src={CLIENT},dl_dst={UP_MAC},nw_src=192.168.1.70,nw_dst=192.168.1.8,"
    "tp_src=40000,tp_dst=22",
    # A reply from the modem to a connection the box opened is let through.
    f"in_port=uplink,tcp,dl_src={GW_MAC},dl_dst={UP_MAC},nw_src=192.168.1.1,nw_dst=192.168.1.8,"
    "tp_src=80,tp_dst=40000",
    f"in_port=downlink,arp,dl_src={CLIENT},dl_dst={UP_MAC},arp_op=2,arp_spa=192.168.1.70,arp_tpa=192.168.1.8",
])
def test_frames_for_the_box_go_to_the_admin_port(table, text):
    assert outs(run(table, text)) == [P["admin"]]


@pytest.mark.parametrize("text", [
    # Ordinary traffic between home devices.
    f"in_port=downlink,ip,dl_src={CLIENT},dl_dst=02:11:22:33:44:66,nw_src=192.168.1.70,nw_dst=192.168.1.71",
    # The modem's DNS answers to vproxy's own queries (the DNS guard is for queries only).
    f"in_port=uplink,udp,dl_src={GW_MAC},dl_dst={VP_MAC},nw_src=192.168.1.1,nw_dst=192.168.1.9,"
    "tp_src=53,tp_dst=40000",
])
def test_everything_else_is_normal(table, text):
    r = run(table, text)
    assert r.normal and r.output_ports == []


def test_custom_flows_follow_the_boxs_own(the_plan):
    custom = "priority=100,udp,in_port=downlink,tp_dst=123,actions=output:uplink\n"
    p = plan(settings(flows={"custom": custom}), OBSERVED)
    text = p.switch.flow_text()
    assert text.rstrip().endswith(custom.strip())
    t = FlowTable(parse_flows(text, p.switch.port_map))
    assert len(t) == len(the_plan.switch.flows) + 1
    r = run(t, f"in_port=downlink,udp,dl_src={CLIENT},dl_dst=02:11:22:33:44:66,nw_src=192.168.1.70,"
               "nw_dst=192.168.1.71,tp_src=123,tp_dst=123")
    assert outs(r) == [P["uplink"]]


def test_ipv6_drop_follows_the_policy(the_plan):
    assert "ipv6,actions=drop" not in the_plan.switch.flow_text()
    dropping = plan(settings(ipv6={"policy": "drop"}), OBSERVED)
    assert dropping.switch.flows[0].text == "priority=1000,ipv6,actions=drop"


def test_relay_is_bound_to_the_box_and_refuses_the_modem():
    from appliance.box.plan import Layout, relay_settings
    r = relay_settings(settings(), Layout(state_dir="/s", run_dir="/r"))
    assert r.fake_range == "100.96.0.0/11" and r.resolvers == ["192.168.1.1"]
    assert "192.168.1.1/32" in r.deny_clients
    assert r.dns_control == "/r/dns.sock" and r.fakeip_db == "/s/dns/fakeip.sqlite3"


def test_fake_range_from_the_modem_side_is_dropped_before_it_reaches_vproxy(table):
    modem = run(table, f"in_port=uplink,tcp,dl_src={GW_MAC},dl_dst={UP_MAC},nw_src=192.168.1.1,"
                       "nw_dst=100.96.0.7,tcp_dst=80")
    assert modem.output_ports == [] and not modem.normal
    home = run(table, f"in_port=downlink,tcp,dl_src={CLIENT},dl_dst={GW_MAC},nw_src=192.168.1.70,"
                      "nw_dst=100.96.0.7,tcp_dst=80")
    assert home.output_ports == [5]


def test_fake_ip_rules_must_name_a_known_route():
    from appliance.box.settings import SettingsError
    dns = {"upstreams": [{"url": "udp://192.168.1.1"}],
           "rules": [{"match": "suffix", "value": "x.test", "then": {"action": "fake-ip", "route": "tor"}}]}
    with pytest.raises(SettingsError) as e:
        settings(dns=dns)
    assert "dns.rules[0].then.route" in e.value.errors
    ok = settings(dns=dns, relay={"proxies": [{"name": "tor", "type": "socks5", "address": "192.168.1.5",
                                               "port": 9050}]})
    assert ok.relay.proxies[0].name == "tor"


def test_relay_fast_path_serves_the_home_port_only_and_can_be_turned_off(the_plan):
    from appliance.box.plan import Layout, relay_settings

    assert relay_settings(settings(), Layout()).fast_path.interfaces == ["vproxy0"]
    off = plan(settings(relay={"fast_path": {"enabled": False}}), OBSERVED)
    values = {(s.ns, k): v for s in off.kernel if isinstance(s, Sysctls) for k, v in s.values}
    assert values[(VPROXY_NS, "net.ipv4.ip_forward")] == "0"


def test_the_flows_are_objects_printed_as_add_flows_text_that_reads_back_the_same():
    custom = "priority=100,udp,in_port=downlink,udp_dst=123,actions=output:2\n"
    p = plan(settings(flows={"custom": custom}), OBSERVED)
    assert all(isinstance(e.flow, Flow) for e in p.switch.flows)
    assert FlowTable(parse_flows(p.switch.flow_text(), p.switch.port_map)) == p.switch.table()
    # Custom flows are read once, into objects, and printed as dump-flows names them.
    assert p.switch.flow_text().rstrip().endswith("priority=100,udp,in_port=downlink,tp_dst=123,actions=output:downlink")


def test_services_get_their_own_users_and_secrets_their_owners_alone():
    from appliance.services.identity import DNS, KEA, RELAY

    p = plan(settings(), OBSERVED)
    by_name = {s.name: s for s in p.services}
    assert (by_name["dns"].identity, by_name["relay"].identity, by_name["dhcp4"].identity) == (DNS, RELAY, KEA)
    files = {f.path.rsplit("/", 1)[-1]: f for f in p.files}
    assert (files["relay.json"].mode, files["relay.json"].owner) == (0o600, (RELAY.uid, RELAY.gid))
    assert files["dns.json"].mode == 0o640
    owners = {path: (uid, mode) for path, uid, gid, mode in p.owners}
    assert owners[p.run_dir] == (0, 0o1775)



def test_the_dns_server_writes_its_series_and_disk_log_where_its_user_may_and_the_console_reads():
    import json

    from appliance.box.layout import Layout
    from appliance.services.identity import DNS, VPROXY_GID

    layout = Layout(state_dir="/var/lib/appliance", run_dir="/run/appliance")
    p = plan(settings(dns={"upstreams": [{"url": "udp://192.168.1.1"}], "query_log": {"max_mb": 10, "max_days": 3}}),
             OBSERVED, layout)
    dns = json.loads(next(f for f in p.files if f.path == layout.dns_config).content)
    assert dns["series_file"] == "/var/lib/appliance/series/dns.sqlite"
    assert dns["query_log"] == {**dns["query_log"], "dir": "/var/lib/appliance/dns/querylog", "max_mb": 10, "max_days": 3}
    owners = {path: (uid, gid, mode) for path, uid, gid, mode in p.owners}
    # The DNS user makes its own file in the series directory; no writer removes another's.
    assert owners[layout.series_dir] == (0, VPROXY_GID, 0o1775)
    assert owners[layout.dns_dir][0] == DNS.uid  # the log's directory is made inside its own
    assert layout.series_dir in next(s for s in p.services if s.name == "dns").writable


# -- dns.intercept: all (issue 17 item 3)

def _intercepting(**dns):
    p = plan(settings(dns={"upstreams": [{"url": "udp://192.168.1.1"}], "intercept": "all", **dns}), OBSERVED)
    return p, FlowTable(parse_flows(p.switch.flow_text(), p.switch.port_map))


def _to(dst, port, proto="udp", in_port="downlink"):
    if ":" in dst:
        return (f"in_port={in_port},{proto}6,dl_src={CLIENT},dl_dst={GW_MAC},ipv6_src=2001:db8:1::70,"
                f"ipv6_dst={dst},tp_src=40000,tp_dst={port}")
    return (f"in_port={in_port},{proto},dl_src={CLIENT},dl_dst={GW_MAC},nw_src=192.168.1.70,nw_dst={dst},"
            f"tp_src=40000,tp_dst={port}")


@pytest.mark.parametrize("text,gateway_mode,all_mode", [
    # A device that hard-codes a public resolver: the modem forwards it by default, the box answers with all.
    (_to("8.8.8.8", 53), ["uplink"], ["vproxy"]),
    (_to("8.8.8.8", 53, "tcp"), ["uplink"], ["vproxy"]),
    # DNS over TLS / QUIC: to the modem by default, to vproxy (which refuses it) with all.
    (_to("1.1.1.1", 853, "tcp"), ["uplink"], ["vproxy"]),
    (_to("1.1.1.1", 853, "udp"), ["uplink"], ["vproxy"]),
    (_to("2606:4700:4700::1111", 853, "tcp"), ["uplink"], ["vproxy"]),
    # DNS to the gateway goes to vproxy either way; HTTPS to a resolver is not DNS.
    (_to("192.168.1.1", 53), ["vproxy"], ["vproxy"]),
    (_to("8.8.8.8", 443, "tcp"), ["uplink"], ["uplink"]),
    # The box's own DNS (the admin port) is not the home's: never intercepted.
    (_to("8.8.8.8", 53, in_port="admin"), ["uplink"], ["uplink"]),
])
def test_intercept_all_steers_dns_to_any_address_past_the_modem(table, text, gateway_mode, all_mode):
    _, intercepting = _intercepting()
    assert outs(run(table, text)) == sorted(P[p] for p in gateway_mode)
    assert outs(run(intercepting, text)) == sorted(P[p] for p in all_mode)


def test_intercept_all_falls_open_with_the_dns_health_bit():
    _, intercepting = _intercepting()
    for text in (_to("8.8.8.8", 53), _to("1.1.1.1", 853, "tcp")):
        assert outs(run(intercepting, text, "reg15=0x6,")) == [P["uplink"]]
        assert outs(run(intercepting, text, "")) == [P["uplink"]]


def test_intercept_all_has_no_overlap_and_vproxy_answers_as_the_address_asked():
    from appliance.switch.lint import lint
    p, intercepting = _intercepting()
    findings = [f for f in lint(intercepting) if f.code in ("overlap", "overlap-same", "shadowed")]
    assert findings == [], "\n".join(f.format() for f in findings)
    vp = next(o.body for o in p.kernel if isinstance(o, NftTable) and o.ns == "vproxy" and o.family == "ip")
    # Any address but the fake range (the relay's): the reply leaves as the address asked.
    assert "ip daddr != 100.96.0.0/11 udp dport 53 redirect to :53" in vp
    assert "ip daddr 192.168.1.1 udp dport 53" not in vp
    assert "tcp dport 853 redirect to :853" in vp
    vp6 = next(o.body for o in p.kernel if isinstance(o, NftTable) and o.ns == "vproxy" and o.family == "ip6")
    assert "tcp dport 853 dnat to" in vp6


def test_alerts_run_the_notifier_as_its_own_user_with_the_urls_in_its_file_alone():
    assert "notify" not in [svc.name for svc in plan(settings(), OBSERVED).services]  # no URL, no notifier
    p = plan(settings(alerts={"urls": ["ntfy://ntfy.example/home-box", "mailto://u:secret@example.com"]}), OBSERVED)
    svc = next(svc for svc in p.services if svc.name == "notify")
    assert svc.identity.user == "appliance-notify" and svc.identity.capabilities == ()
    conf = next(f for f in p.files if f.path == svc.argv[-1])
    assert conf.mode == 0o600 and conf.owner == (svc.identity.uid, svc.identity.gid)
    assert "u:secret@example.com" in conf.content and '"service"' in conf.content


def test_a_notification_url_apprise_does_not_know_is_refused_naming_it():
    from appliance.box.settings import SettingsError
    with pytest.raises(SettingsError) as e:
        settings(alerts={"urls": ["ntfy://ntfy.example/t", "bogus-scheme://x"]})
    assert list(e.value.errors) == ["alerts.urls[1]"]


def test_the_kernel_cache_answers_on_vproxy0_as_the_gateway_or_any_address_with_intercept_all():
    from appliance.box.plan import Layout, dns_settings
    from appliance.services.dns.settings import SettingsError, parse_settings as parse_dns

    layout = Layout(state_dir="/s", run_dir="/r")
    d = dns_settings(settings(), layout)
    # Over IPv6 every query vproxy gets is the server's (its dnat sends them all there).
    assert (d.kernel_cache, d.kernel_cache_device, d.kernel_cache_answer_as) == (
        "on", "vproxy0", ["192.168.1.1/32", "::/0"])
    assert dns_settings(settings(ipv6={"policy": "drop"}), layout).kernel_cache_answer_as == ["192.168.1.1/32"]
    everywhere = dns_settings(settings(dns={"upstreams": [{"url": "udp://192.168.1.1"}], "intercept": "all",
                                            "kernel_cache": "off"}), layout)
    assert everywhere.kernel_cache == "off" and everywhere.kernel_cache_answer_as == ["0.0.0.0/0", "::/0"]
    with pytest.raises(SettingsError) as refused:
        parse_dns({"upstreams": [{"url": "udp://192.168.1.1"}],
                   "kernel_cache_answer_as": ["2001:db8::/64", "2001:db8:1::/64", "::/0"]})
    assert "kernel_cache_answer_as" in refused.value.errors
    with pytest.raises(SettingsError) as refused:
        parse_dns({"upstreams": [{"url": "udp://192.168.1.1"}], "kernel_cache": "maybe"})
    assert "kernel_cache" in refused.value.errors
