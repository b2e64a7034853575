"""IPv6 through the invisible box (issue 15), end to end in the dual-stack lab with real clients.

The modem's RAs reach the home unchanged (SLAAC, the modem's link-local as
router), DNS over IPv6 to the modem is answered by the box, fake-ip names
get fake IPv6 addresses the relay serves, and the box itself says nothing
in IPv6 towards the modem.
"""
import ipaddress
import sys
import time

import pytest

from appliance.box.settings import parse_settings
from appliance.lab import topology
from tests.e2e.test_box import _capture
from tests.support.boxlab import box_in_lab, settings_data

MODEM6 = topology.MODEM_LAN6_IP
FAKE6 = ipaddress.ip_network("2001:2::/48")  # vproxy.fake_range6's default
DNS = {
    "upstreams": [{"url": "udp://192.168.1.1"}],
    "rules": [
        {"match": "suffix", "value": "blocked.test", "then": {"action": "block"}},
        {"match": "suffix", "value": "proxied.test", "then": {"action": "fake-ip", "route": "direct"}},
        {"match": "suffix", "value": "rejected.test", "then": {"action": "fake-ip", "route": "reject"}},
    ],
}


def router_and_address(lab, client):
    """The client's SLAAC address and its default route's next hop and neighbour entry."""
    address = lab.slaac(client)
    route = lab.run(client, ["ip", "-6", "route", "show", "default"]).stdout.split()
    via = route[route.index("via") + 1]
    lab.run(client, ["ping", "-6", "-c1", "-W2", f"{via}%eth0"])
    neigh = lab.run(client, ["ip", "-6", "neigh", "show", via, "dev", "eth0"]).stdout
    return address, via, neigh


def state6(lab, client) -> str:
    """The client's IPv6 view (addresses, routes, neighbours), for a failure's message: a
    connection that fails at once in the whole suite but not alone (seen once) must say why."""
    return " | ".join(lab.run(client, ["ip", "-6", *argv]).stdout.strip().replace("\n", "; ")
                      for argv in (["-o", "addr", "show", "dev", "eth0"], ["route"], ["neigh"]))


def dig6(lab, client, name, server=MODEM6, qtype="AAAA"):
    return lab.run(client, ["dig", "+time=2", "+tries=2", f"@{server}", qtype, name]).stdout


def answers(out: str) -> list[str]:
    lines = out.split(";; ANSWER SECTION:")[1].split("\n\n")[0] if ";; ANSWER SECTION:" in out else ""
    return [l.split()[-1] for l in lines.strip().splitlines()]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with box_in_lab(tmp_path_factory.mktemp("box"), "s", clients=2) as (lab, box):
        c = lab.spec.client(1)
        before = router_and_address(lab, c)
        res = box.apply(parse_settings(settings_data(dns=DNS)))
        assert res.ok, res.error
        deadline = time.monotonic() + 20
        while "status: NOERROR" not in dig6(lab, c, "www.example.test"):
            assert time.monotonic() < deadline, "nobody answered DNS over IPv6 after the apply"
            time.sleep(0.3)
        yield lab, box, before


def test_slaac_and_the_modem_as_router_before_and_after_the_apply(home):
    lab, _, before = home
    c = lab.spec.client(1)
    address, via, neigh = before
    assert address == topology.slaac_address(topology.client_mac(1))
    assert via == topology.MODEM_LINK_LOCAL and topology.MODEM_LAN_MAC in neigh
    # The modem's RAs keep coming through the box: the same address and router after it applied.
    lab.run(c, ["ip", "-6", "neigh", "flush", "dev", "eth0"])
    assert router_and_address(lab, c)[:2] == (address, via)
    assert topology.MODEM_LAN_MAC in router_and_address(lab, c)[2]


def test_a_client_checking_its_router_is_there_keeps_its_default_route(home):
    """Neighbour unreachability detection: a client whose entry for the modem has gone stale
    sends it a unicast neighbour solicitation before using it again. Only the modem answers, as a
    router: gw0 (which holds the modem's link-local address for its DHCPv6 replies) answered too,
    without the router flag, and the client dropped its default route until the next RA."""
    lab, _, _ = home
    c = lab.spec.client(1)
    lab.slaac(c)
    ll, mac = topology.MODEM_LINK_LOCAL, topology.MODEM_LAN_MAC
    lab.run(c, ["ip", "-6", "neigh", "replace", ll, "lladdr", mac, "dev", "eth0", "nud", "stale", "router"])
    # Traffic through the router: STALE -> DELAY -> (5 s) PROBE -> the answers -> REACHABLE.
    lab.run(c, ["ping", "-6", "-c1", "-W2", topology.SITES6["www.example.test"]])
    deadline = time.monotonic() + 15
    while "REACHABLE" not in (neigh := lab.run(c, ["ip", "-6", "neigh", "show", ll, "dev", "eth0"]).stdout):
        assert time.monotonic() < deadline, f"the probe of the router was never answered: {neigh}"
        time.sleep(0.2)
    assert "router" in neigh, neigh
    assert f"via {ll}" in lab.run(c, ["ip", "-6", "route", "show", "default"]).stdout, state6(lab, c)


def test_dns_over_ipv6_to_the_modem_is_answered_by_the_box(home):
    lab, _, _ = home
    c = lab.spec.client(1)
    start = len((lab.rundir / "modem.log").read_text())
    for server in (MODEM6, f"{topology.MODEM_LINK_LOCAL}%eth0"):
        out = dig6(lab, c, "www.example.test", server)
        assert answers(out) == [topology.SITES6["www.example.test"]], out
        # The answer comes from the address asked, as the modem's own would.
        assert f"SERVER: {server.split('%')[0]}" in out, out
    log = (lab.rundir / "modem.log").read_text()[start:]
    client6 = topology.slaac_address(topology.client_mac(1))
    assert f"from {client6}" not in log and "from fe80::ff:fe00:1001" not in log, \
        "the modem saw a query of the home"


def test_blocked_names_are_blocked_over_ipv6(home):
    lab, _, _ = home
    assert "status: NXDOMAIN" in dig6(lab, lab.spec.client(1), "www.blocked.test")


def test_a_proxied_name_gets_a_fake_ipv6_address_and_curl_reaches_the_page(home):
    lab, _, _ = home
    c = lab.spec.client(1)
    fake = answers(dig6(lab, c, "www.proxied.test"))
    assert len(fake) == 1 and ipaddress.ip_address(fake[0]) in FAKE6, fake
    frames = []

    def fetch():
        res = lab.run(c, ["curl", "-6", "-sS", "-m", "10", "--resolve", f"www.proxied.test:80:[{fake[0]}]",
                          "http://www.proxied.test/"])
        frames.append(res.stdout or res.stderr)

    captured = _capture(lab, lab.spec.modem, "lan0", 0.5, fetch)
    assert "internet page for www.proxied.test" in frames[0], f"{frames[0]} ({state6(lab, c)})"
    assert not [f for f in captured if "2001:2:" in f], "a frame to the fake range reached the modem"


def test_later_ipv6_connections_to_a_direct_name_are_carried_by_the_kernel_translated(home):
    from appliance.services.relay.control import query

    lab, box, _ = home
    c = lab.spec.client(1)
    sock = f"{box.layout.run_dir}/relay.sock"
    assert query(sock, "stats")["fast_path"]["ipv6_translator"].startswith("on ")
    fake = answers(dig6(lab, c, "www.proxied.test"))
    assert len(fake) == 1 and ipaddress.ip_address(fake[0]) in FAKE6, fake
    url = ["--resolve", f"www.proxied.test:80:[{fake[0]}]", "http://www.proxied.test"]
    # The relay's connection (the name resolved) maps the address for the kernel.
    res = lab.run(c, ["curl", "-6", "-sS", "-m", "10", "-o", "/dev/null", *url[:2], url[2] + "/"])
    assert res.returncode == 0, f"curl exited {res.returncode}: {res.stderr.strip()} ({state6(lab, c)})"
    deadline = time.monotonic() + 10
    while query(sock, "stats")["fast_path"]["entries"] < 1:
        assert time.monotonic() < deadline, "the relay never handed the name to the kernel"
        time.sleep(0.1)
    relayed = query(sock, "stats")["totals"]["accepted"]
    # 40 MB at 10 MB/s: open across several of the relay's conntrack reads (every 2 s).
    res = lab.run(c, ["curl", "-6", "-sS", "-m", "30", "--limit-rate", "10M", "-o", "/dev/null",
                      "-w", "%{size_download}", *url[:2], url[2] + "/bytes/40000000"])
    assert res.stdout == "40000000", f"{res.stdout} {res.stderr.strip()} ({state6(lab, c)})"
    deadline = time.monotonic() + 10
    while not (rows := [r for r in query(sock, "history")
                        if r["path"] == "kernel" and r["bytes_down"] >= 40000000]):
        assert time.monotonic() < deadline, "the kernel's connection never reached the table"
        time.sleep(0.3)
    assert query(sock, "stats")["totals"]["accepted"] == relayed  # the relay never saw it
    # The row names the client's IPv6 address and the fake IPv6 address it used, not the stand-ins.
    client = rows[-1]["client"].rsplit(":", 1)[0]
    assert ipaddress.ip_address(client).version == 6, rows[-1]
    assert rows[-1]["fake_ip"] == fake[0] and rows[-1]["domain"] == "www.proxied.test", rows[-1]
    # The per-client counters come from the kernel's counter sets, read just after the rows.
    deadline = time.monotonic() + 10
    while (got := query(sock, "counters")["clients"].get(client, {}).get("bytes_down", 0)) < 40000000:
        assert time.monotonic() < deadline, f"{client} counted {got} bytes down, not the 40 MB"
        time.sleep(0.3)
    assert query(sock, "stats")["fast_path"]["ipv6_translated"]["to4"] > 0


def _udp6(lab, client, address: str, port: int) -> str:
    """One datagram from the client to [address]:port: the reply, "refused" (ICMPv6) or "timeout"."""
    code = ("import socket,sys; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.settimeout(5); "
            f"s.connect(({address!r}, {port}));\n"
            "try:\n s.send(b'hello'); print(s.recv(2048).decode())\n"
            "except ConnectionRefusedError: print('refused')\n"
            "except socket.timeout: print('timeout')\n"
            "except OSError as e: print(e)")
    return lab.run(client, [sys.executable, "-c", code]).stdout.strip()


def test_udp_to_a_fake_ipv6_address_is_relayed_and_a_route_without_udp_refused_at_once(home):
    lab, box, _ = home
    c = lab.spec.client(1)
    fake = answers(dig6(lab, c, "www.proxied.test"))
    assert len(fake) == 1 and ipaddress.ip_address(fake[0]) in FAKE6, fake
    replies = []
    captured = _capture(lab, lab.spec.modem, "lan0", 0.5,
                        lambda: replies.append(_udp6(lab, c, fake[0], topology.UDP_ECHO_PORT)))
    # From the fake address the client sent to (connected socket).
    assert replies == ["echo:hello"], f"{replies} ({state6(lab, c)})"
    assert not [f for f in captured if "2001:2:" in f], "a frame to the fake range reached the modem"
    rejected = answers(dig6(lab, c, "www.rejected.test"))
    assert len(rejected) == 1 and ipaddress.ip_address(rejected[0]) in FAKE6, rejected
    started = time.monotonic()
    assert _udp6(lab, c, rejected[0], topology.UDP_ECHO_PORT) == "refused"  # ICMPv6 port unreachable
    assert time.monotonic() - started < 3, "the refusal came by timeout, not at once"


def test_curl_over_ipv6_goes_through_the_modem(home):
    lab, _, _ = home
    c = lab.spec.client(1)
    lab.run(c, ["sh", "-c", f"echo nameserver {MODEM6} > /etc/resolv.conf"])
    res = lab.run(c, ["curl", "-6", "-sS", "-m", "10", "http://www.example.test/whoami"])
    assert res.returncode == 0, f"curl exited {res.returncode}: {res.stderr.strip()} ({state6(lab, c)})"
    # Routed, not NATed: the internet sees the client's own address.
    assert res.stdout.strip() == topology.slaac_address(topology.client_mac(1))


def test_no_frame_with_the_modems_mac_reaches_the_modem_nor_ipv6_of_the_box(home):
    lab, box, _ = home
    c = lab.spec.client(2)
    box_macs = {"d6:00:00:00:00:bf", topology.UPLINK_MAC, topology.MODEM_LAN_MAC}

    def traffic():
        lab.slaac(c)
        dig6(lab, c, "www.example.test")
        dig6(lab, c, "www.proxied.test")
        lab.run(c, ["curl", "-6", "-s", "-m", "5", f"http://[{topology.SITES6['www.example.test']}]/"])
        lab.run(c, ["ping", "-6", "-c2", "-i0.2", "-W1", f"{topology.MODEM_LINK_LOCAL}%eth0"])

    frames = _capture(lab, lab.spec.modem, "lan0", 1.0, traffic)
    assert [f for f in frames if "IPv6" in f], "the capture saw no IPv6 from the home"
    for f in frames:
        assert f.split()[1] != topology.MODEM_LAN_MAC, f"a frame with the modem's MAC came back to it: {f}"
        if "IPv6" in f:
            assert f.split()[1] not in box_macs, f"IPv6 from the box itself: {f}"
