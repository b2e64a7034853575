"""DNS through the invisible box (issue 6 in the lab): every query a client
sends to the gateway is answered by the box's DNS server in vproxy."""
import ipaddress
import time

import pytest

from appliance.lab import topology
from appliance.lab.lab import parse_dig_answers
from tests.support.boxlab import box_in_lab, settings_data

FAKE = ipaddress.ip_network("100.96.0.0/11")
FAKE6 = ipaddress.ip_network("2001:2::/48")
KIDS_MAC = topology.client_mac(2)

DNS = {
    "upstreams": [{"url": "udp://192.168.1.1"}],
    "rules": [
        {"match": "suffix", "value": "blocked.test", "then": {"action": "block"}},
        {"match": "suffix", "value": "proxied.test", "then": {"action": "fake-ip", "route": "direct"}},
    ],
    "groups": [{"name": "kids", "clients": [KIDS_MAC], "inherit": True,
                "rules": [{"match": "exact", "value": "www.example.test", "then": {"action": "block"}}]}],
}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with box_in_lab(tmp_path_factory.mktemp("box"), "n", apply=settings_data(dns=DNS)) as (lab, box):
        for c in lab.spec.client_names:
            lab.dhcp(c)
        deadline = time.monotonic() + 20
        while "status: NOERROR" not in dig(lab, lab.spec.client(1), "www.example.test"):
            assert time.monotonic() < deadline, "the box's DNS server never answered"
            time.sleep(0.3)
        yield lab, box


def dig(lab, client, name, *extra):
    res = lab.run(client, ["dig", "+time=2", "+tries=2", "@192.168.1.1", name, *extra])
    return res.stdout


def test_direct_domain_gets_the_internet_answer_and_the_page(home):
    lab, _ = home
    c = lab.spec.client(1)
    assert parse_dig_answers(dig(lab, c, "www.example.test", "+short")) == [topology.SITES["www.example.test"]]
    page = lab.run(c, ["curl", "-s", "-m", "5", "http://www.example.test/"]).stdout
    assert "internet page for www.example.test" in page


def test_blocked_domain_is_blocked(home):
    lab, _ = home
    assert "status: NXDOMAIN" in dig(lab, lab.spec.client(1), "www.blocked.test")


def test_fake_ip_domain_gets_a_stable_address_in_the_pool(home):
    lab, box = home
    c = lab.spec.client(1)
    first = parse_dig_answers(dig(lab, c, "www.proxied.test", "+short"))
    assert len(first) == 1 and ipaddress.ip_address(first[0]) in FAKE
    assert parse_dig_answers(dig(lab, lab.spec.client(3), "www.proxied.test", "+short")) == first
    # AAAA for a fake-ip name is the fake IPv4 address's twin in vproxy.fake_range6 (issue 15).
    aaaa = dig(lab, c, "www.proxied.test", "AAAA", "+short").split()
    offset = int(ipaddress.ip_address(first[0])) - int(FAKE.network_address)
    assert aaaa == [str(FAKE6.network_address + offset)]
    # The same address after the DNS server restarts.
    sup = box.applier.services
    sup.stop("dns")
    sup.start(next(s for s in box.applied_plan().services if s.name == "dns"))
    # While it was down the modem answered (failsafe); the box takes DNS back once the watchdog
    # has seen its server answer again.
    deadline = time.monotonic() + 10
    while (got := parse_dig_answers(dig(lab, c, "www.proxied.test", "+short"))) != first:
        assert time.monotonic() < deadline, f"{got}: the box never answered again with {first}"
        time.sleep(0.2)


def test_local_names_resolve_from_static_leases(home):
    lab, _ = home
    out = dig(lab, lab.spec.client(1), "printer.lan", "+short")
    assert parse_dig_answers(out) == ["192.168.1.10"]


def test_client_groups_get_different_answers(home):
    lab, _ = home
    assert "status: NXDOMAIN" in dig(lab, lab.spec.client(2), "www.example.test")
    assert parse_dig_answers(dig(lab, lab.spec.client(1), "www.example.test", "+short"))


def test_tcp_queries_work(home):
    lab, _ = home
    out = dig(lab, lab.spec.client(1), "www.example.test", "+tcp", "+short")
    assert parse_dig_answers(out) == [topology.SITES["www.example.test"]]


def test_the_modem_never_sees_a_client_query(home):
    lab, _ = home
    # While the box's DNS answers (a DNS restart in another test let the modem answer for a moment:
    # failsafe), the modem sees no query of the home: only what is logged from here on counts.
    start = len((lab.rundir / "modem.log").read_text())
    for c in lab.spec.client_names:
        dig(lab, c, "www.example.test")
    log = (lab.rundir / "modem.log").read_text()[start:]
    for c in lab.spec.client_names:
        addr = lab.kernel.addresses(c, "eth0")[0].split("/")[0]
        assert f"from {addr}" not in log, f"the modem saw a query from {c}"
    # The box's own upstream queries do go to the modem.
    assert "from 192.168.1.9" in (lab.rundir / "modem.log").read_text()


def test_fake_ip_domain_is_relayed_to_the_real_site(home):
    lab, box = home
    c = lab.spec.client(1)
    page = lab.run(c, ["curl", "-s", "-m", "10", "http://www.proxied.test/"]).stdout
    assert "internet page for www.proxied.test" in page
    # The relay went out through the modem, like any other traffic of the home.
    assert lab.run(c, ["curl", "-s", "-m", "10", "http://www.proxied.test/whoami"]).stdout.strip() \
        == topology.MODEM_WAN_IP


def test_later_connections_to_a_direct_name_take_the_kernel_fast_path(home):
    from appliance.services.relay.control import query

    lab, box = home
    c = lab.spec.client(1)
    sock = f"{box.layout.run_dir}/relay.sock"
    # IPv4: the kernel fast path NATs IPv4 only (IPv6 fake addresses always go through the relay).
    lab.run(c, ["curl", "-4", "-s", "-m", "10", "-o", "/dev/null", "http://www.proxied.test/"])
    deadline = time.monotonic() + 10
    while query(sock, "stats")["fast_path"]["entries"] < 1:
        assert time.monotonic() < deadline, "the relay never handed the name to the kernel"
        time.sleep(0.1)
    before = query(sock, "counters")["domains"]["www.proxied.test"]
    relayed = query(sock, "stats")["totals"]["accepted"]
    # 40 MB read at 10 MB/s: open for seconds (more than the client's socket
    # buffer), so one of the relay's conntrack reads (every 2 s) sees it.
    size = lab.run(c, ["curl", "-4", "-s", "-m", "30", "--limit-rate", "10M", "-o", "/dev/null",
                       "-w", "%{size_download}", "http://www.proxied.test/bytes/40000000"]).stdout
    assert size == "40000000"
    deadline = time.monotonic() + 10
    while not (rows := [r for r in query(sock, "history")
                        if r["path"] == "kernel" and r["bytes_down"] >= 40000000]):
        assert time.monotonic() < deadline, "the kernel's connection never reached the table"
        time.sleep(0.3)
    assert rows[-1]["domain"] == "www.proxied.test" and rows[-1]["route"] == "direct"
    assert query(sock, "stats")["totals"]["accepted"] == relayed  # the relay never saw it
    # The counters come from the kernel's counter sets, read just after the rows.
    deadline = time.monotonic() + 10
    while (after := query(sock, "counters")["domains"]["www.proxied.test"])["bytes_down"] \
            - before["bytes_down"] < 40000000:
        assert time.monotonic() < deadline, f"the domain counted {after} (before: {before})"
        time.sleep(0.3)
    assert after["connections"] > before["connections"]

def test_the_relay_cannot_be_reached_from_the_modem_side(home):
    lab, _ = home
    fake = parse_dig_answers(dig(lab, lab.spec.client(1), "www.proxied.test", "+short"))[0]
    lab.run(lab.spec.modem, ["ip", "route", "replace", "100.96.0.0/11", "via", "192.168.1.9"])
    try:
        res = lab.run(lab.spec.modem, ["curl", "-s", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}",
                                       f"http://{fake}/"])
        assert res.stdout in ("000", "")
    finally:
        lab.run(lab.spec.modem, ["ip", "route", "del", "100.96.0.0/11"])


def modem_queries(lab, name):
    """Queries for `name` the modem's dnsmasq logged from the box (vproxy)."""
    log = (lab.rundir / "modem.log").read_text()
    return sum(1 for line in log.splitlines() if f"] {name} from 192.168.1.9" in line)


def test_zone_ttls_let_the_box_cache_answers(home):
    """The lab's zones carry a TTL (300 s) as real ones do: the box answers a
    repeated question from its cache, with the TTL counting down, and the
    modem sees the question once."""
    lab, _ = home
    c = lab.spec.client(1)
    before = modem_queries(lab, "example.test")
    first = dig(lab, c, "example.test", "+noall", "+answer").split()
    assert first and 0 < int(first[1]) <= 300, first
    time.sleep(1.1)
    again = dig(lab, c, "example.test", "+noall", "+answer").split()
    assert again[4] == first[4] and int(again[1]) < int(first[1])  # aged in the box's cache
    assert modem_queries(lab, "example.test") == before + 1


def _http(lab, client, name, address):
    """HTTP status of http://name/ at `address`, without asking DNS (the client's own cache)."""
    return lab.run(client, ["curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
                            "--resolve", f"{name}:80:{address}", f"http://{name}/"]).stdout


def test_flushed_fake_ips_are_forgotten_until_asked_again(home):
    from appliance.services.dns.control import DnsControl

    lab, box = home
    c = lab.spec.client(1)
    # (No connection first: the relay would pin the address while it maps it in the kernel.)
    fake = parse_dig_answers(dig(lab, c, "proxied.test", "+short"))[0]
    with DnsControl(f"{box.layout.run_dir}/dns.sock") as dns:
        flushed = dns.flush_fake_ips()
        assert flushed["removed"] >= 1
        assert dns.lookup_fake_ip(fake) is None
    # A client that still holds the address cannot use it: the relay refuses it at once...
    started = time.monotonic()
    assert _http(lab, c, "proxied.test", fake) != "200"
    assert time.monotonic() - started < 3, "a flushed address should fail fast, not time out"
    # ...other names asked meanwhile never get it (it would lead the holder to their site)...
    others = [f"n{i}.proxied.test" for i in range(40)]
    given = {a for name in others for a in parse_dig_answers(dig(lab, c, name, "+short"))}
    assert given and fake not in given
    # ...and once its own name is asked again, it gets the same address and reaches its site.
    assert parse_dig_answers(dig(lab, c, "proxied.test", "+short")) == [fake]
    assert _http(lab, c, "proxied.test", fake) == "200"


def test_a_client_keeps_its_fake_ip_across_a_restart_of_the_box(home):
    """A client holds a fake address in its own cache; the box restarts (all it
    made torn down, then applied again, as at boot); a connection to the held
    address, without asking DNS again, still reaches the site: the mapping was
    on disk. (Runs last: the box is applied anew.)"""
    from appliance.services.dns.control import DnsControl

    lab, box = home
    c = lab.spec.client(3)
    fake = parse_dig_answers(dig(lab, c, "www.proxied.test", "+short"))[0]
    with DnsControl(f"{box.layout.run_dir}/dns.sock") as dns:
        deadline = time.monotonic() + 10
        while dns.stats()["fake_ip_unsaved"]:  # written behind within a tenth of a second
            assert time.monotonic() < deadline, "the fake-IP store never caught up"
            time.sleep(0.05)
    settings = box.applied_settings()
    box.teardown()
    result = box.apply(settings)
    assert result.ok, result.error
    assert _http(lab, c, "www.proxied.test", fake) == "200"
    assert parse_dig_answers(dig(lab, c, "www.proxied.test", "+short")) == [fake]


# -- dns.intercept: all (issue 17 item 3). Last in the file: it re-applies the box and puts it back.

_CONNECT_853 = (
    "import socket\n"
    "s = socket.socket(); s.settimeout(3)\n"
    "try:\n"
    f"    s.connect(('{topology.PUBLIC_RESOLVER}', 853)); print('connected')\n"
    "except ConnectionRefusedError:\n"
    "    print('refused')\n"
    "except OSError as e:\n"
    "    print('error', e)\n")
_LISTEN_853 = (
    "import socket\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', 853)); s.listen(16)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.close()\n")


def test_intercept_all_answers_a_hard_coded_resolver_as_itself_and_refuses_dot(home):
    import subprocess

    from appliance.box.settings import parse_settings
    from tests.e2e.test_box import _capture

    lab, box = home
    c = lab.spec.client(1)
    blocked_real = [topology.SITES["www.blocked.test"]]

    def public(name):
        return lab.run(c, ["dig", "+time=2", "+tries=1", f"@{topology.PUBLIC_RESOLVER}", name]).stdout

    def dot():
        return lab.run(c, ["python3", "-c", _CONNECT_853]).stdout.strip()

    # By default a device that hard-codes a resolver reaches it: the internet's own answer, and
    # its DNS-over-TLS port (a listener on the internet side) connects.
    assert parse_dig_answers(public("www.blocked.test")) == blocked_real
    listener = subprocess.Popen(["ip", "netns", "exec", lab.spec.internet, "python3", "-c", _LISTEN_853])
    try:
        deadline = time.monotonic() + 10
        while dot() != "connected":
            assert time.monotonic() < deadline, "the internet's port 853 never listened"
            time.sleep(0.2)
        res = box.apply(parse_settings(settings_data(dns={**DNS, "intercept": "all"})))
        assert res.ok, res.error
        # The box answers the query to the public resolver, as the public resolver: policy applies.
        deadline = time.monotonic() + 10
        while "status: NXDOMAIN" not in (out := public("www.blocked.test")):
            assert time.monotonic() < deadline, f"the box never answered for the public resolver:\n{out}"
            time.sleep(0.2)
        assert f"SERVER: {topology.PUBLIC_RESOLVER}#53" in out
        assert parse_dig_answers(public("www.example.test")) == [topology.SITES["www.example.test"]]
        # DNS over TLS: refused at once, as the address asked, and nothing of it reaches the modem.
        seen: list[str] = []
        def traffic():
            seen.append(dot())
            lab.run(c, ["curl", "-s", "-m", "3", f"http://{topology.SITES['www.example.test']}/"])  # does reach it

        frames = _capture(lab, lab.spec.modem, "lan0", 0.5, traffic)
        assert seen == ["refused"]
        assert frames, "the capture saw nothing, not even the page fetched through the modem"
        assert not [f for f in frames if ".853:" in f or ".853 " in f], "DoT reached the modem"
    finally:
        listener.kill()
        listener.wait()
        res = box.apply(parse_settings(settings_data(dns=DNS)))
        assert res.ok, res.error
    # Back to `gateway`: the public resolver is the internet's again.
    deadline = time.monotonic() + 10
    while parse_dig_answers(public("www.blocked.test")) != blocked_real:
        assert time.monotonic() < deadline, "the public resolver stayed intercepted after intercept went back"
        time.sleep(0.2)
