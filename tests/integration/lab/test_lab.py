"""The lab, up for real: a home network whose clients get DHCP, DNS and the web from the modem."""
import ipaddress
import os
import secrets
import subprocess

import pytest

from appliance.kernel import LinuxKernel
from appliance.lab import cli, topology
from appliance.lab.lab import Lab, parse_dig_answers
from appliance.lab.topology import LabSpec


def _root_links() -> set[str]:
    return {l.name for l in LinuxKernel().links(None)}


@pytest.fixture(scope="module")
def lab():
    spec = LabSpec(prefix="t" + secrets.token_hex(3), clients=2)
    before = _root_links()
    lab = Lab(spec)
    try:
        lab.up(progress=None)
        yield lab
    finally:
        lab.down(progress=None)
    assert not [n for n in LinuxKernel().list_netns() if n.startswith(spec.prefix + "-")]
    assert _root_links() == before


def test_second_up_is_a_no_op(lab):
    assert lab.up(progress=None) == []
    assert lab.status()["up"]


def test_client_gets_a_lease_from_the_modem(lab):
    lease = lab.dhcp(lab.spec.client(1))
    assert lease.server_identifier == "192.168.1.1"
    lo, hi = map(ipaddress.ip_address, topology.MODEM_DHCP_RANGE)
    assert lo <= ipaddress.ip_address(lease.address) <= hi
    assert lease.routers == ["192.168.1.1"] and lease.dns == ["192.168.1.1"]
    assert lab.kernel.addresses(lab.spec.client(1), "eth0") == [f"{lease.address}/24"]
    # The modem's dnsmasq handed it out and wrote it down.
    leases = (lab.rundir / "modem.leases").read_text()
    assert lease.address in leases and topology.client_mac(1) in leases


def test_dig_at_the_modem_answers_from_the_internet_zone(lab):
    lab.dhcp(lab.spec.client(1))
    res = lab.run(lab.spec.client(1), ["dig", "+short", "+time=2", "+tries=2", "@192.168.1.1", "www.example.test"])
    assert parse_dig_answers(res.stdout) == [topology.SITES["www.example.test"]]
    res = lab.run(lab.spec.client(1), ["dig", "+time=2", "@192.168.1.1", "nothing.example.test"])
    assert "status: NXDOMAIN" in res.stdout


def test_client_takes_a_slaac_address_and_the_modem_as_its_ipv6_router(lab):
    c = lab.spec.client(1)
    want = topology.slaac_address(topology.client_mac(1))
    assert lab.slaac(c) == want  # the modem answered the client's RS; DAD done
    assert f"{want}/64" in lab.kernel.addresses(c, "eth0", family=6)
    route = lab.run(c, ["ip", "-6", "route", "show", "default"]).stdout
    assert f"via {topology.MODEM_LINK_LOCAL} " in route
    # No NAT66: the internet sees the client's own address.
    res = lab.run(c, ["curl", "-6", "-s", "-m", "5", "http://www.example.test/whoami"], check=True)
    assert res.stdout.strip() == want
    res = lab.run(c, ["dig", "+short", "+time=2", "AAAA", f"@{topology.MODEM_LAN6_IP}", "www.proxied.test"])
    assert res.stdout.split() == [topology.SITES6["www.proxied.test"]]


def test_stateless_dhcpv6_gives_the_modem_as_dns(lab):
    c = lab.spec.client(2)
    lab.dhcp(c)
    lease = lab.dhcp6(c)
    assert lease.dns == [topology.MODEM_LAN6_IP]
    assert open(f"/etc/netns/{c}/resolv.conf").read() == "nameserver 192.168.1.1\nnameserver 2001:db8:1::1\n"


def test_client_resolv_conf_is_its_own(lab):
    host_resolv = open("/etc/resolv.conf").read()
    lab.dhcp(lab.spec.client(2))
    assert open(f"/etc/netns/{lab.spec.client(2)}/resolv.conf").read() == "nameserver 192.168.1.1\n"
    assert open("/etc/resolv.conf").read() == host_resolv


def test_curl_reaches_the_internet_page_through_the_modems_nat(lab):
    c = lab.spec.client(1)
    lab.dhcp(c)
    res = lab.run(c, ["curl", "-s", "-m", "5", "http://www.example.test/"])
    assert "internet page for www.example.test" in res.stdout
    res = lab.run(c, ["curl", "-4", "-s", "-m", "5", "http://www.example.test/whoami"])
    assert res.stdout.strip() == topology.MODEM_WAN_IP


def test_box_is_a_plain_bridge_before_the_appliance_applies(lab):
    links = {l.name: l for l in lab.kernel.links(lab.spec.box)}
    assert links["enp5s0"].master == "br0" and links["enp1s0"].master == "br0"
    assert links["enp5s0"].mac == topology.UPLINK_MAC
    # The factory bridge says nothing (no IPv6 link-local chatter) and
    # bridged frames skip iptables; the namespace itself keeps IPv6 on, as
    # real hardware does, so the appliance must quiet its own links.
    keys = [f"net.ipv6.conf.{d}.disable_ipv6" for d in ("br0", "enp5s0", "enp1s0")]
    got = lab.kernel.get_sysctls(lab.spec.box, keys + ["net.ipv6.conf.default.disable_ipv6",
                                                      "net.bridge.bridge-nf-call-iptables"])
    assert [got[k] for k in keys] == ["1", "1", "1"]
    assert got["net.ipv6.conf.default.disable_ipv6"] == "0"
    assert got["net.bridge.bridge-nf-call-iptables"] in ("0", None)


def test_lab_processes_are_tracked_by_pid(lab):
    st = lab.status()
    assert set(st["processes"]) == {"web", "dns", "modem"}
    for p in st["processes"].values():
        assert p["alive"] and p["pid"] in lab.kernel.netns_pids(p["ns"])


@pytest.mark.parametrize("opts,field", [
    ({"prefix": "Bad_Prefix", "clients": 3}, "prefix"),
    ({"prefix": "ok", "clients": 0}, "clients"),
    ({"prefix": "ok", "clients": 99}, "clients"),
])
def test_bad_input_creates_nothing(opts, field):
    before = set(LinuxKernel().list_netns())
    out = []
    code = cli.run({"action": "up", "client": None, "json": False, **opts}, out=out.append)
    assert code == 2
    assert out[0].startswith(f"lab: {field}: ")
    assert set(LinuxKernel().list_netns()) == before


def test_down_leaves_nothing_behind():
    spec = LabSpec(prefix="d" + secrets.token_hex(3), clients=1)
    before_links = _root_links()
    lab = Lab(spec)
    try:
        lab.up(progress=None)
        lab.dhcp(spec.client(1))
        pids = [p["pid"] for p in lab.status()["processes"].values()]
    finally:
        lab.down(progress=None)
    assert not [n for n in LinuxKernel().list_netns() if n.startswith(spec.prefix + "-")]
    assert _root_links() == before_links
    assert not any(LinuxKernel().alive(p) for p in pids)
    assert not os.path.exists(f"/etc/netns/{spec.client(1)}")
    ps = subprocess.run(["pgrep", "-f", f"{lab.rundir}"], capture_output=True, text=True)
    assert ps.stdout.strip() == ""
