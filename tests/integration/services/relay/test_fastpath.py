"""The relay's kernel fast path in namespaces (`appliance/services/relay/fastpath.py`).

The first connection to a `direct` name is relayed; once the relay has the
real address, the kernel NATs the name's later connections itself. These
tests check what a user would see: the later connections work and carry
their bytes intact, they never reach the relay yet show in its table,
proxied names never take the shortcut, the modem side gets nothing, and the
kernel's map forgets a name (and the DNS server may recycle its address)
only after `ttl`.
"""

from __future__ import annotations

import contextlib
import json
import signal
import textwrap
import time

import pytest

from appliance.kernel.base import Route
from appliance.lab import relaylab
from appliance.lab.relaylab import TEST_PORT, UP_IP, WAN_IP, RelayLab
from appliance.services.relay.fastpath import CLOSING_WAIT



FAST = {"interfaces": ["home"], "poll": 0.25}


@pytest.fixture(scope="module")
def lab():
    # The relay reads conntrack every `poll` seconds and sees only connections
    # open at a read: the tests' transfers are paced to last longer than that.
    with RelayLab(relay_overrides={"fast_path": FAST}) as lab:
        yield lab


def curl(lab, url, *opts, ns="client"):
    return lab.sh(ns, ["curl", "-sS", "--connect-timeout", "5", "-m", "30", *opts, url], check=False)


def wait_for(predicate, what, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


def rows(lab, domain, path=None):
    return [r for r in lab.query("history") + lab.query("connections")
            if r["domain"] == domain and (path is None or r["path"] == path)]


def mapped(lab) -> str:
    """The fast-path map as nft lists it ("" while the relay has no table)."""
    res = lab.sh("vproxy", ["nft", "list", "map", "ip", "appliance_relay", "fast"], check=False)
    return res.stdout if res.returncode == 0 else ""


def dns_pins(lab, fake):
    from appliance.services.dns.control import DnsControl

    with DnsControl(lab.dns_control) as dns:
        return (dns.lookup_fake_ip(fake) or {}).get("pins", 0)


def warm(lab, domain):
    """One relayed connection, then wait until the kernel maps the name."""
    fake = lab.resolve(domain)

    for _ in range(5):  # again if a reload by the previous test dropped the entry meanwhile
        assert curl(lab, f"http://{domain}/whoami").stdout.strip() == WAN_IP
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            if fake in mapped(lab):
                return fake
            time.sleep(0.1)
    raise AssertionError(f"{fake} never reached the fast-path map")


def test_later_connections_bypass_the_relay_and_show_in_its_table(lab):
    fake = warm(lab, "direct.test")
    relayed = len(rows(lab, "direct.test", "relay"))
    assert relayed >= 1
    # 30 MB read at 30 MB/s: open for about a second, so a conntrack read sees it.
    res = curl(lab, "http://direct.test/bytes/30000000", "--limit-rate", "30M", "-o", "/dev/null",
               "-w", "%{size_download}")
    assert res.stdout == "30000000"
    # The relay never saw it...
    assert len(rows(lab, "direct.test", "relay")) == relayed
    # ...but its table does, from conntrack, with the bytes (IP headers included).
    row = wait_for(lambda: [r for r in rows(lab, "direct.test", "kernel")
                            if r["bytes_down"] >= 30000000], "the kernel row with 30 MB")[-1]
    assert row["fake_ip"] == fake and row["real"] == f"{relaylab.WEB_IP}:80"
    assert row["client"].startswith(relaylab.CLIENT_IP + ":") and row["route"] == "direct"
    # The kernel's counters are read just after its connections.
    wait_for(lambda: lab.query("counters")["domains"]["direct.test"]["bytes_down"] >= 30000000,
             "30 MB in the per-domain counters")


def settled_counters(lab):
    """The counters once they have caught up with earlier connections (read every 0.25 s)."""
    last = lab.query("counters")
    for _ in range(50):
        time.sleep(0.6)
        now = lab.query("counters")
        if now == last:
            return now
        last = now
    raise AssertionError("the counters never settled")


def test_short_kernel_connections_are_counted_per_domain_and_client(lab):
    warm(lab, "direct.test")
    before = settled_counters(lab)
    for _ in range(5):  # each over in milliseconds: between two conntrack reads
        assert curl(lab, "http://direct.test/bytes/100000", "-o", "/dev/null",
                    "-w", "%{size_download}").stdout == "100000"

    def counted():
        now = lab.query("counters")
        d = now["domains"]["direct.test"]["connections"] - before["domains"]["direct.test"]["connections"]
        c = (now["clients"][relaylab.CLIENT_IP]["connections"]
             - before["clients"][relaylab.CLIENT_IP]["connections"])
        return (d, c, now) if d >= 5 and c >= 5 else None
    d, c, now = wait_for(counted, "5 more connections counted")
    assert (d, c) == (5, 5)  # the kernel's, none counted twice
    grown = now["domains"]["direct.test"]["bytes_down"] - before["domains"]["direct.test"]["bytes_down"]
    assert 500000 <= grown < 600000  # the bodies plus IP and TCP headers


def test_fast_path_carries_an_upload_and_a_half_close_intact(lab):
    warm(lab, "direct.test")
    fake = lab.resolve("direct.test")
    script = textwrap.dedent(f"""
        import hashlib, json, os, socket, time
        data = os.urandom(8 << 20)
        s = socket.create_connection(({fake!r}, {TEST_PORT}))
        s.sendall(b"sink\\n")
        for i in range(0, len(data), 1 << 20):  # paced over ~1 s: longer than a conntrack read
            s.sendall(data[i:i + (1 << 20)])
            time.sleep(0.12)
        s.shutdown(socket.SHUT_WR)  # half-close: the server answers after EOF
        buf = b""
        while chunk := s.recv(1 << 16):
            buf += chunk
        line, _, rest = buf.partition(b"\\n")
        count, digest = line.decode().split()
        print(json.dumps({{"count": int(count), "ok": digest == hashlib.sha256(data).hexdigest(),
                           "rest": len(rest)}}))
    """)
    res = lab.sh("client", [relaylab.PYTHON, "-c", script], timeout=60)
    assert json.loads(res.stdout) == {"count": 8 << 20, "ok": True, "rest": 1 << 20}
    wait_for(lambda: [r for r in rows(lab, "direct.test", "kernel") if r["port"] == TEST_PORT
                      and r["bytes_up"] >= 8 << 20], "the upload's kernel row")


def test_proxied_names_are_always_relayed(lab):
    for _ in range(3):
        assert curl(lab, "http://socks.test/whoami").returncode == 0
    fake = lab.resolve("socks.test")
    assert fake not in mapped(lab)
    assert len(rows(lab, "socks.test", "relay")) >= 3 and not rows(lab, "socks.test", "kernel")


def test_the_modem_side_gets_no_fast_path(lab):
    fake = warm(lab, "direct.test")
    lab.kernel.add_route(lab.ns["modem"], Route(relaylab.FAKE_RANGE, via=UP_IP))
    try:
        res = curl(lab, f"http://{fake}/", "-H", "Host: direct.test", ns="modem")
        assert res.returncode == 7, res.stdout  # refused: neither NATed nor relayed
    finally:
        lab.kernel.del_route(lab.ns["modem"], Route(relaylab.FAKE_RANGE, via=UP_IP))
    assert relaylab.MODEM_IP not in json.dumps(lab.query("history"))


def test_a_mapped_address_stays_pinned(lab):
    fake = warm(lab, "pin.test")
    assert dns_pins(lab, fake) >= 1
    # The pool holds 16: 40 new names recycle every address that is not pinned,
    # but not one the kernel still sends to pin.test's site.
    for i in range(40):
        lab.resolve(f"f{i}.fill.test")
    from appliance.services.dns.control import DnsControl

    with DnsControl(lab.dns_control) as dns:
        assert dns.stats()["fake_ip_recycled"] >= 24
        assert dns.lookup_fake_ip(fake)["domain"] == "pin.test"
    assert fake in mapped(lab)


@contextlib.contextmanager
def short_ttl(lab, seconds=3):
    """The relay reloaded with a `seconds` ttl (and an empty map) for the block."""
    lab.write_config(fast_path={**FAST, "ttl": seconds})
    lab.signal("relay", signal.SIGHUP)
    wait_for(lambda: lab.query("stats")["fast_path"]["entries"] == 0
             and "type ipv4_addr" in (m := mapped(lab)) and "elements" not in m,
             "the reloaded relay starts with an empty map")
    try:
        yield
    finally:
        lab.write_config()
        lab.signal("relay", signal.SIGHUP)


def test_after_ttl_the_address_is_unmapped_unpinned_and_the_relay_takes_over_again(lab):
    with short_ttl(lab):
        fake = warm(lab, "ttl.fill.test")
        assert dns_pins(lab, fake) >= 1
        wait_for(lambda: fake not in mapped(lab), "the entry removed after ttl", seconds=8)
        wait_for(lambda: dns_pins(lab, fake) == 0, "unpinned after ttl")
        relayed = len(rows(lab, "ttl.fill.test", "relay"))
        assert curl(lab, "http://ttl.fill.test/whoami").stdout.strip() == WAN_IP
        # Resolved again by the relay. Polled: `rows` asks for the history, then the live
        # connections, and a connection that ends between the two asks is in neither answer.
        wait_for(lambda: len(rows(lab, "ttl.fill.test", "relay")) == relayed + 1,
                 "the relay's row of the new connection")


def closed_kernel_connections(lab, fake):
    """conntrack's TIME_WAIT entries of NATed connections to `fake` (in vproxy)."""
    code = textwrap.dedent(f"""
        import asyncio
        from pyroute2.netlink.nfnetlink.nfctsocket import AsyncNFCTSocket, NFCTAttrTuple
        async def main():
            ct, n = AsyncNFCTSocket(), 0
            async for m in await ct.dump(mark=0x7e1b, tuple_orig=NFCTAttrTuple(daddr={fake!r})):
                n += 1
            print(n)
        asyncio.run(main())
    """)
    return int(lab.sh("vproxy", [relaylab.PYTHON, "-c", code]).stdout)


def test_an_unmapped_address_keeps_no_closed_connection_that_a_new_one_could_take_up(lab):
    """Conntrack would hand a new connection that reuses a closed one's ports the
    old NAT binding: after ttl the address must lead nowhere but to the relay."""
    with short_ttl(lab):
        fake = warm(lab, "udp.test")  # a direct name no other test connects to
        for _ in range(3):
            curl(lab, "http://udp.test/whoami")
        assert closed_kernel_connections(lab, fake) >= 3
        wait_for(lambda: fake not in mapped(lab), "the entry removed after ttl", seconds=8)
        wait_for(lambda: dns_pins(lab, fake) == 0, "unpinned after ttl")
        # One still closing at the retire (its last ACK on the way) is forgotten once closed: the
        # relay looks for CLOSING_WAIT seconds. Under the full suite's load a close took longer
        # than the 5 s this waited before (twice in about six runs).
        wait_for(lambda: closed_kernel_connections(lab, fake) == 0, "no ended connection left",
                 seconds=CLOSING_WAIT + 2)


def test_a_restarted_relay_starts_with_an_empty_map(lab):
    warm(lab, "direct.test")
    lab.stop("relay", signal.SIGKILL)
    assert "elements" in mapped(lab)  # a dead relay's entries outlive it...
    lab.start_relay()
    assert "elements" not in mapped(lab)  # ...until its successor starts
    assert lab.query("stats")["fast_path"] == {"enabled": True, "entries": 0, "connections": 0,
                                               "nft_failures": 0, "ipv6_translator": "off"}
    assert curl(lab, "http://direct.test/whoami").stdout.strip() == WAN_IP


def test_a_relay_started_with_the_fast_path_off_removes_its_predecessors_table(lab):
    warm(lab, "direct.test")
    lab.stop("relay", signal.SIGKILL)
    lab.write_config(fast_path={**FAST, "enabled": False})
    try:
        lab.start_relay()
        assert mapped(lab) == ""  # no table: the kernel NATs nothing any more
        assert curl(lab, "http://direct.test/whoami").stdout.strip() == WAN_IP
        assert lab.query("stats")["totals"]["accepted"] == 1  # that was the relay
    finally:
        lab.stop("relay")
        lab.write_config()
        lab.start_relay()


# -- IPv6: the same fast path in the ip6 table -------------------------------------------

def mapped6(lab) -> str:
    res = lab.sh("vproxy", ["nft", "list", "map", "ip6", "appliance_relay", "fast"], check=False)
    return res.stdout if res.returncode == 0 else ""


def warm6(lab, domain):
    """One relayed IPv6 connection (the relay connects over IPv6: `direct6`), then
    wait until the kernel maps the fake IPv6 address."""
    out = lab.sh("client", ["dig", "+short", "+time=2", "+tries=2", "AAAA", domain]).stdout.split()
    fake = out[-1]
    for _ in range(5):
        assert curl(lab, f"http://{domain}/whoami", "-6").stdout.strip() == relaylab.WAN_IP6
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            if fake in mapped6(lab):
                return fake
            time.sleep(0.1)
    raise AssertionError(f"{fake} never reached the ip6 fast-path map")


def test_ipv6_later_connections_bypass_the_relay_intact_and_show_in_its_table(lab):
    import hashlib

    from appliance.lab.web import CHUNK

    fake = warm6(lab, "direct.test")
    assert relaylab.WEB_IP6 in mapped6(lab)  # a fake IPv6 address maps to a real IPv6 one
    before = settled_counters(lab)["domains"]["direct.test"]
    accepted = lab.query("stats")["totals"]["accepted"]
    size = 30000000
    # 30 MB at 30 MB/s: open for about a second, so a conntrack read sees it.
    res = lab.sh("client", ["sh", "-c", "curl -6 -sS -m 30 --limit-rate 30M "
                            "http://direct.test/bytes/30000000 | sha256sum"])
    expected = hashlib.sha256((CHUNK * (size // len(CHUNK) + 1))[:size]).hexdigest()
    assert res.stdout.split()[0] == expected
    assert lab.query("stats")["totals"]["accepted"] == accepted  # the relay never saw it
    row = wait_for(lambda: [r for r in rows(lab, "direct.test", "kernel")
                            if r["fake_ip"] == fake and r["bytes_down"] >= size], "the IPv6 kernel row")[-1]
    assert row["real"] == f"[{relaylab.WEB_IP6}]:80" and row["route"] == "direct"
    assert row["client"].startswith(relaylab.CLIENT_IP6 + ":")
    after = wait_for(lambda: (d := lab.query("counters")["domains"]["direct.test"])["bytes_down"]
                     - before["bytes_down"] >= size and d, "30 MB more in the per-domain counters")
    assert after["connections"] - before["connections"] == 1
    # Masqueraded to vproxy's own IPv6 address, as IPv4 to its IPv4 one.
    assert curl(lab, "http://direct.test/whoami", "-6").stdout.strip() == relaylab.WAN_IP6
    assert lab.query("stats")["totals"]["accepted"] == accepted


def closed_kernel_connections6(lab, fake):
    """conntrack's closed (ENDED mark) IPv6 entries of NATed connections to `fake` (in vproxy)."""
    code = textwrap.dedent(f"""
        import asyncio, socket
        from pyroute2.netlink.nfnetlink.nfctsocket import AsyncNFCTSocket
        async def main():
            ct, n = AsyncNFCTSocket(nfgen_family=socket.AF_INET6), 0
            async for m in await ct.dump(mark=0x7e1b):
                n += m.get_attr("CTA_TUPLE_ORIG").get_attr("CTA_TUPLE_IP").get_attr("CTA_IP_V6_DST") == {fake!r}
            print(n)
        asyncio.run(main())
    """)
    return int(lab.sh("vproxy", [relaylab.PYTHON, "-c", code]).stdout)


def test_an_ipv6_entry_goes_after_ttl_with_its_closed_connections_and_both_tables_go_with_the_relay(lab):
    with short_ttl(lab):
        fake = warm6(lab, "pin.test")
        for _ in range(3):
            assert curl(lab, "http://pin.test/whoami", "-6").stdout.strip() == relaylab.WAN_IP6
        assert closed_kernel_connections6(lab, fake) >= 3
        wait_for(lambda: fake not in mapped6(lab), "the IPv6 entry removed after ttl", seconds=8)
        twin = lab.resolve("pin.test")
        wait_for(lambda: dns_pins(lab, twin) == 0, "its IPv4 twin unpinned after ttl")
        assert closed_kernel_connections6(lab, fake) == 0
    lab.stop("relay")
    try:
        assert mapped(lab) == "" and mapped6(lab) == ""  # a relay that stops takes both tables
    finally:
        lab.start_relay()
