"""The box's DNS for IPv6 clients (issue 15 item 2), end to end in the dual-stack lab.

Real clients ask over IPv6 (dig AAAA @2001:db8:1::1): a client in a group,
known by its MAC, by an IPv6 prefix or by an address that carries no MAC
(a privacy address), gets its group's policy; a client's DHCP name answers
AAAA with its SLAAC address; the home's prefix from the modem's RA is a
rebinding network of the box's DNS.
"""
import contextlib
import time

import pytest

from appliance.box.settings import parse_settings
from appliance.lab import topology
from tests.e2e.test_box_ipv6 import answers, dig6
from tests.support.boxlab import box_in_lab, settings_data

BLOCK_EXAMPLE = [{"match": "exact", "value": "www.example.test", "then": {"action": "block"}}]
GUESTS = "2001:db8:1:0:ffff::/80"
GUEST_ADDRESS = "2001:db8:1:0:ffff::7"
PRIVACY = "2001:db8:1:0:9c1d:42ab:77e0:1b2f"  # no MAC inside, as Windows, macOS, iOS and Android choose
DNS = {
    "upstreams": [{"url": "udp://192.168.1.1"}],
    "local_names": {"refresh": 1},
    "groups": [
        {"name": "kids", "clients": [topology.client_mac(2)], "rules": BLOCK_EXAMPLE},
        {"name": "guests", "clients": [GUESTS], "rules": BLOCK_EXAMPLE},
    ],
}
SITE6 = topology.SITES6["www.example.test"]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with box_in_lab(tmp_path_factory.mktemp("box"), "v", clients=3) as (lab, box):
        for i in (1, 2, 3):
            lab.slaac(lab.spec.client(i))
        res = box.apply(parse_settings(settings_data(dns=DNS)))
        assert res.ok, res.error
        c = lab.spec.client(1)
        deadline = time.monotonic() + 20
        while "status: NOERROR" not in dig6(lab, c, "www.example.test"):
            assert time.monotonic() < deadline, "nobody answered DNS over IPv6 after the apply"
            time.sleep(0.3)
        yield lab, box


@contextlib.contextmanager
def extra_address(lab, client, address):
    """`address` on the client's eth0 (no DAD: usable at once) while the block runs."""
    lab.run(client, ["ip", "-6", "addr", "add", f"{address}/64", "dev", "eth0", "nodad"], check=True)
    try:
        yield
    finally:
        lab.run(client, ["ip", "-6", "addr", "del", f"{address}/64", "dev", "eth0"])


def dig_from(lab, client, source, name, qtype="AAAA"):
    return lab.run(client, ["dig", "+time=2", "+tries=1", "-b", source, f"@{topology.MODEM_LAN6_IP}",
                            qtype, name]).stdout


def test_a_client_in_a_mac_group_gets_its_policy_over_ipv6_from_its_first_query(home):
    lab, _ = home
    # Client 2's SLAAC address is EUI-64: the box knows its MAC before it ever answered it.
    assert "status: NXDOMAIN" in dig6(lab, lab.spec.client(2), "www.example.test")
    assert answers(dig6(lab, lab.spec.client(1), "www.example.test")) == [SITE6]
    assert "status: NXDOMAIN" in dig6(lab, lab.spec.client(2), "www.example.test", qtype="A")


def test_a_privacy_address_is_matched_to_its_devices_mac_by_the_neighbour_table(home):
    lab, _ = home
    c = lab.spec.client(2)
    with extra_address(lab, c, PRIVACY):
        # The box's answer teaches its neighbour table the MAC; from then on the kids' policy.
        deadline = time.monotonic() + 10
        while "status: NXDOMAIN" not in (out := dig_from(lab, c, PRIVACY, "www.example.test")):
            assert time.monotonic() < deadline, f"a privacy address of a kids' device never got their policy: {out}"
            time.sleep(0.3)


def test_a_client_in_an_ipv6_prefix_group_gets_its_policy(home):
    lab, _ = home
    c = lab.spec.client(1)
    with extra_address(lab, c, GUEST_ADDRESS):
        assert "status: NXDOMAIN" in dig_from(lab, c, GUEST_ADDRESS, "www.example.test")
        slaac = topology.slaac_address(topology.client_mac(1))
        assert answers(dig_from(lab, c, slaac, "www.example.test")) == [SITE6]  # from its SLAAC address: no guest


def test_a_clients_name_answers_aaaa_with_its_slaac_address(home):
    lab, _ = home
    printer = lab.spec.client(3)  # the static lease "printer" (tests/support/boxlab.py)
    slaac = topology.slaac_address(topology.client_mac(3))
    # Once the printer has asked the box anything over IPv6, its address is a neighbour of the box.
    assert answers(dig6(lab, printer, "www.example.test")) == [SITE6]
    c = lab.spec.client(1)
    deadline = time.monotonic() + 10
    while answers(out := dig6(lab, c, "printer.lan")) != [slaac]:
        assert time.monotonic() < deadline, f"printer.lan never answered AAAA {slaac}: {out}"
        time.sleep(0.3)
    assert answers(dig6(lab, c, "printer.lan", qtype="A")) == ["192.168.1.10"]
    # The reverse name may hash to another of the server's processes, which reads the
    # neighbour table on its own refresh (local_names.refresh, 1 s here).
    while (ptr := lab.run(c, ["dig", "+short", f"@{topology.MODEM_LAN6_IP}", "-x", slaac]).stdout.split()) \
            != ["printer.lan."]:
        assert time.monotonic() < deadline + 5, f"no PTR for {slaac}: {ptr}"
        time.sleep(0.3)


def test_the_homes_ipv6_prefix_from_the_modems_ra_is_a_rebinding_network(home):
    from appliance.services.dns.control import DnsControl
    _, box = home
    deadline = time.monotonic() + 15
    while True:
        with DnsControl(f"{box.layout.run_dir}/dns.sock") as dns:
            prefixes = dns.call("stats")["rebind_lan_prefixes"]
        if prefixes == [topology.LAN6]:
            break
        assert time.monotonic() < deadline, f"the box's DNS never learned the modem's prefix: {prefixes}"
        time.sleep(0.5)


def test_the_query_log_records_an_ipv6_client_by_its_address_and_its_groups_rule(home):
    from appliance.services.dns.control import DnsControl
    lab, box = home
    kid = topology.slaac_address(topology.client_mac(2))
    assert "status: NXDOMAIN" in dig6(lab, lab.spec.client(2), "www.example.test")
    deadline = time.monotonic() + 10
    while True:
        with DnsControl(f"{box.layout.run_dir}/dns.sock") as dns:
            entries = dns.call("query_log", client=kid, domain="www.example.test")
            top = dict((c, n) for c, n in dns.call("stats")["top_clients"])
        if entries:
            break
        assert time.monotonic() < deadline, "the query log never showed the IPv6 client"
        time.sleep(0.3)
    assert {(e["client"], e["action"], e["origin"]) for e in entries} == {(kid, "block", "groups.0.rules.0")}
    assert top.get(kid, 0) >= 1


def test_a_name_asked_again_over_ipv6_is_answered_by_the_kernel_as_the_modem(home):
    """The kernel cache (dns.kernel_cache) answers IPv6 clients too: the same answer, from the
    modem's address, counted for the client's IPv6 address."""
    from appliance.services.dns.control import DnsControl
    lab, box = home
    c = lab.spec.client(1)
    me = topology.slaac_address(topology.client_mac(1))
    deadline = time.monotonic() + 15
    while True:
        # Without dig's cookie option: the kernel reads a bare OPT record only, as stub
        # resolvers send (glibc, systemd-resolved); the server answers the rest.
        out = lab.run(c, ["dig", "+time=2", "+tries=2", "+nocookie", f"@{topology.MODEM_LAN6_IP}",
                          "AAAA", "www.example.test"]).stdout
        assert answers(out) == [SITE6] and f"SERVER: {topology.MODEM_LAN6_IP}" in out, out
        with DnsControl(f"{box.layout.run_dir}/dns.sock") as dns:
            kernel = dns.call("stats")["kernel_cache"]
        if dict((client, n) for client, n in kernel.get("top_clients", ())).get(me, 0) >= 1:
            break
        assert time.monotonic() < deadline, f"the kernel never answered {me}: {kernel}"
        time.sleep(0.2)
