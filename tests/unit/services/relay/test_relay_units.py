"""Relay pieces that need no root: settings, packets, bookkeeping, pumps on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct

import pytest

from appliance.services.relay import nft
from appliance.services.relay.directory import PoolDirectory
from appliance.services.relay.pump import Pump
from appliance.services.relay.settings import SettingsError, parse_settings
from appliance.services.relay.table import ConnectionTable
from appliance.services.relay.udp import checksum, parse_socks_udp, port_unreachable

PROXY = {"name": "p1", "type": "socks5", "address": "192.0.2.5", "port": 1080}


# -- settings -------------------------------------------------------------------------

def test_defaults_are_valid_and_name_the_builtin_routes():
    s = parse_settings({})
    assert s.route_names() == ["direct", "reject"]
    assert s.listen_address() == ("127.0.0.1", 7893)


@pytest.mark.parametrize("doc, field, words", [
    ({"proxies": [{**PROXY, "port": 70000}]}, "proxies.0.port", "less than or equal"),
    ({"proxies": [{**PROXY, "address": "proxy.example"}]}, "proxies.0.address", "not an IPv4"),
    ({"proxies": [{**PROXY, "name": "direct"}]}, "proxies.0.name", "built-in route"),
    ({"proxies": [{**PROXY, "username": "u"}]}, "proxies.0.password", "both username and password"),
    ({"proxies": [{**PROXY, "type": "http", "udp": True}]}, "proxies.0.udp", "only a socks5"),
    ({"proxies": [PROXY, PROXY]}, "proxies.1.name", "duplicate proxy name"),
    ({"proxies": [{**PROXY, "colour": "red"}]}, "proxies.0.colour", "Extra inputs"),
    ({"listen": "127.0.0.1"}, "listen", "address:port"),
    ({"fake_range": "100.96.0.1/11"}, "fake_range", "host bits"),
    ({"allow_clients": ["home"]}, "allow_clients", "not an IPv4"),
    ({"resolvers": ["192.0.2.1:99999"]}, "resolvers", "not 1-65535"),
    ({"fast_path": {"ttl": 0}}, "fast_path.ttl", "greater than or equal to 1"),
    ({"fast_path": {"interfaces": ["eth0; drop"]}}, "fast_path.interfaces", "not an interface name"),
    ({"fast_path": {"shadow_range": "100.96.0.0/16"}}, "fast_path.shadow_range", "overlaps fake_range"),
    ({"fast_path": {"shadow_range": "100.95.0.1/16"}}, "fast_path.shadow_range", "host bits"),
    ({"fast_path": {"shadow_range": "100.95.0.0/31"}}, "fast_path.shadow_range", "no room"),
])
def test_errors_name_the_field(doc, field, words):
    with pytest.raises(SettingsError) as err:
        parse_settings(doc)
    assert field in err.value.errors, err.value.errors
    assert words in err.value.errors[field]


def test_unknown_routes_for_the_box_document():
    s = parse_settings({"proxies": [PROXY]})
    assert s.unknown_routes([("dns.rules.0.then.route", "p1"), ("dns.rules.1.then.route", "p2")]) \
        == {"dns.rules.1.then.route": "unknown route 'p2'; known: direct, p1, reject"}


def test_nft_rule_matches_only_home_interfaces():
    s = parse_settings({"listen": "127.0.0.1:7000"})
    assert nft.tproxy_rules(s, ["home", "lan1"]) == [
        'iifname { "home", "lan1" } ip daddr 100.96.0.0/11 meta l4proto { tcp, udp } '
        "tproxy to 127.0.0.1:7000 accept"]


def test_fast_path_serves_only_served_clients_and_keeps_clear_of_the_relays_ports():
    s = parse_settings({"allow_clients": ["192.168.1.0/24"], "deny_clients": ["192.168.1.1/32"],
                        "fast_path": {"interfaces": ["vproxy0"], "table": "fp"}})
    text = nft.fast_path_table(s)
    assert text.startswith("add table ip fp\ndelete table ip fp\n")  # replaces a dead relay's
    assert ('iifname { "vproxy0" } ip saddr { 192.168.1.0/24 } ip saddr != { 192.168.1.1/32 } '
            "meta l4proto tcp ip daddr @fast_keys ct mark set 0x7e1a dnat ip to ip daddr map @fast") in text
    # NAT source ports apart from vproxy's own: no clash with the relay's sockets.
    assert "masquerade to :1024-60999" in text and nft.LOCAL_PORTS[0] > 60999
    assert nft.add_entry(s, "100.96.0.9", "203.0.113.10", 360) == \
        "add element ip fp fast { 100.96.0.9 timeout 360s : 203.0.113.10 }\n" \
        "add element ip fp fast_keys { 100.96.0.9 timeout 360s }\n"


def test_ipv6_clients_translated_by_the_fast_path_are_served_by_their_shadow_range():
    base = {"allow_clients": ["192.168.1.0/24"], "fake_range6": "2001:2::/48",
            "fast_path": {"interfaces": ["vproxy0"], "table": "fp"}}
    served = "ip saddr { 192.168.1.0/24, 100.95.0.0/16 } "
    s = parse_settings(base)
    assert s.translates6() and served in nft.fast_path_table(s)
    # Not translating: IPv6 clients connected over IPv6 (direct6), no shadow range, no single
    # interface to attach to, no IPv6 fake range.
    for doc in ({**base, "direct6": True},
                {**base, "fast_path": {**base["fast_path"], "shadow_range": None}},
                {**base, "fast_path": {**base["fast_path"], "interfaces": []}},
                {**base, "fake_range6": None}):
        s = parse_settings(doc)
        assert not s.translates6() and "100.95.0.0/16" not in nft.fast_path_table(s), doc


# -- packets --------------------------------------------------------------------------

def test_icmp_port_unreachable_quotes_the_datagram():
    pkt = port_unreachable(("10.0.0.2", 40000), ("100.96.0.9", 443), b"quic-initial")
    assert checksum(pkt[:20]) == 0 and checksum(pkt[20:]) == 0  # IP and ICMP checksums hold
    assert socket.inet_ntoa(pkt[12:16]) == "100.96.0.9" and socket.inet_ntoa(pkt[16:20]) == "10.0.0.2"
    assert pkt[9] == 1 and pkt[20:22] == b"\x03\x03"  # ICMP, port unreachable
    quoted = pkt[28:]
    assert socket.inet_ntoa(quoted[12:16]) == "10.0.0.2" and quoted[9] == 17
    assert struct.unpack("!HH", quoted[20:24]) == (40000, 443)


@pytest.mark.parametrize("header, payload", [
    (b"\0\0\0\x01" + bytes([198, 51, 100, 1]) + b"\x00\x35", b"data"),
    (b"\0\0\0\x03\x08example.\x00\x35", b""),
])
def test_socks_udp_reply_payload(header, payload):
    assert parse_socks_udp(header + payload) == payload


def test_socks_udp_fragment_is_dropped():
    assert parse_socks_udp(b"\0\0\x01\x01" + bytes(6) + b"x") is None


# -- bookkeeping ----------------------------------------------------------------------

def test_table_counts_bytes_per_domain_and_client_and_bounds_history():
    now = [1000.0]
    table = ConnectionTable(history_size=2, clock=lambda: now[0])
    for i in range(3):
        conn = table.open("tcp", ("10.0.0.2", 5000 + i), ("100.96.0.1", 443), "a.test", "direct")
        conn.bytes_fn = lambda: (10, 100)
        assert table.counters()["domains"]["a.test"]["bytes_down"] == 100 * (i + 1)
        now[0] += 1
        table.close(conn)
    assert [h["client"] for h in table.history()] == ["10.0.0.2:5001", "10.0.0.2:5002"]
    counters = table.counters()
    assert counters["domains"]["a.test"] == {"bytes_up": 30, "bytes_down": 300, "connections": 3}
    assert counters["clients"]["10.0.0.2"]["connections"] == 3 and counters["live"] == 0


def test_pool_directory_uses_the_dns_pool_pins():
    from appliance.services.dns.fakeip import FakeIpPool

    pool = FakeIpPool("100.96.0.0/29", max_entries=2)
    ip = pool.allocate("kept.test", "p1")
    directory = PoolDirectory(pool)
    target = asyncio.run(directory.lookup(ip))
    assert (target.domain, target.route) == ("kept.test", "p1")
    directory.pin(ip)
    pool.allocate("b.test")
    pool.allocate("c.test")  # the pool is full: recycles b.test, not the pinned one
    assert pool.lookup_ip(ip).domain == "kept.test"
    directory.unpin(ip)
    assert pool.pins(ip) == 0


# -- pumps over loopback --------------------------------------------------------------

def _pair(listener):
    a = socket.create_connection(listener.getsockname())
    b, _ = listener.accept()
    for s in (a, b):
        s.setblocking(False)
    return a, b


@pytest.mark.parametrize("use_splice", [True, False])
def test_pump_relays_half_closes_and_keeps_the_other_direction(use_splice):
    async def run():
        loop = asyncio.get_running_loop()
        with socket.create_server(("127.0.0.1", 0)) as listener:
            client, relay_in = _pair(listener)
            relay_out, server = _pair(listener)
        ended = []
        up = Pump(loop, relay_in, relay_out, lambda p, e: ended.append(("up", e)), lambda: None,
                  65536, use_splice)
        down = Pump(loop, relay_out, relay_in, lambda p, e: ended.append(("down", e)), lambda: None,
                    65536, use_splice)
        up.start()
        down.start()
        body = os.urandom(5 << 20)
        await loop.sock_sendall(client, body)
        client.shutdown(socket.SHUT_WR)
        got = bytearray()
        while chunk := await loop.sock_recv(server, 1 << 16):  # EOF arrives after all bytes
            got += chunk
        assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
        assert ended == [("up", None)] and up.bytes == len(body)
        await loop.sock_sendall(server, b"late answer")  # the other half still works
        server.shutdown(socket.SHUT_WR)
        reply = bytearray()
        while chunk := await loop.sock_recv(client, 1024):
            reply += chunk
        assert bytes(reply) == b"late answer" and ended[-1] == ("down", None)
        for s in (client, relay_in, relay_out, server):
            s.close()
    asyncio.run(run())


def test_pump_stops_reading_while_the_destination_is_full():
    async def run():
        loop = asyncio.get_running_loop()
        with socket.create_server(("127.0.0.1", 0)) as listener:
            client, relay_in = _pair(listener)
            relay_out, server = _pair(listener)
        up = Pump(loop, relay_in, relay_out, lambda p, e: None, lambda: None, 65536, True)
        up.start()
        sent = 0
        chunk = b"x" * 65536
        # The server never reads: the client can only push what the buffers on the way hold.
        for _ in range(2000):
            try:
                sent += client.send(chunk)
            except BlockingIOError:
                await asyncio.sleep(0.01)
                try:
                    sent += client.send(chunk)
                except BlockingIOError:
                    break
        assert sent < 2000 * 65536  # backpressure reached the sender
        assert up._writing and not up._reading
        up.stop()
        for s in (client, relay_in, relay_out, server):
            s.close()
    asyncio.run(run())


def test_ipv6_sources_are_served_only_when_the_relay_has_an_ipv6_fake_range():
    from appliance.services.relay.relay import ClientFilter
    v4_only = ClientFilter(["192.168.0.0/16"], ["192.168.1.1/32"])
    both = ClientFilter(["192.168.0.0/16"], ["192.168.1.1/32"], ipv6=True)
    assert not v4_only("2001:db8:1::5") and both("2001:db8:1::5") and both("fe80::1")
    assert not both("::ffff:192.168.1.1") and not both("192.168.1.1") and both("192.168.1.5")


def test_the_relay_settings_take_an_ipv6_fake_range_or_name_it():
    from appliance.services.relay.nft import chain6
    from appliance.services.relay.settings import RelaySettings
    s = RelaySettings.model_validate({"fake_range6": "2001:2::/48"})
    assert "ip6 daddr 2001:2::/48 meta l4proto { tcp, udp } tproxy to :7893" in chain6(s, ["vproxy0"], s.fake_range6)
    with pytest.raises(ValueError, match="not an IPv6 network"):
        RelaySettings.model_validate({"fake_range6": "100.96.0.0/11"})


def test_fast_path_for_ipv6_is_an_ip6_table_of_the_same_shape():
    s = parse_settings({"fake_range6": "2001:2::/48", "direct6": True,
                        "fast_path": {"interfaces": ["vproxy0"], "table": "fp"}})
    text = nft.fast_path_table(s)
    four, six = text.split("add table ip6 fp\n")
    assert four.startswith("add table ip fp\ndelete table ip fp\n")
    assert six.startswith("delete table ip6 fp\ntable ip6 fp {\n")
    # The home-side interface is the IPv6 filter (the modem's prefix changes); a fake
    # IPv6 address maps to a real IPv6 one, masqueraded to vproxy's own IPv6 address.
    assert ('iifname { "vproxy0" } meta l4proto tcp ip6 daddr @fast_keys '
            "ct mark set 0x7e1a dnat ip6 to ip6 daddr map @fast") in six
    assert "map fast { type ipv6_addr : ipv6_addr; flags timeout; }" in six
    assert "masquerade to :1024-60999" in six
    assert "set conns { type ipv6_addr . ipv6_addr;" in six
    assert "update @down { ct original ip6 saddr . ct original ip6 daddr }" in six
    assert nft.add_entry(s, "2001:2::9", "2001:db8::10", 360) == \
        "add element ip6 fp fast { 2001:2::9 timeout 360s : 2001:db8::10 }\n" \
        "add element ip6 fp fast_keys { 2001:2::9 timeout 360s }\n"
    assert nft.remove_entry(s, "2001:2::9") == \
        "delete element ip6 fp fast { 2001:2::9 }\ndelete element ip6 fp fast_keys { 2001:2::9 }\n"
    with pytest.raises(ValueError):
        nft.add_entry(s, "2001:2::9", "203.0.113.10", 360)
    assert nft.delete_table(s) == "add table ip fp\ndelete table ip fp\nadd table ip6 fp\ndelete table ip6 fp\n"


def test_without_direct6_the_fast_path_removes_any_ip6_table():
    # IPv6 clients then go out over IPv4: nothing for an ip6 table to map.
    s = parse_settings({"fake_range6": "2001:2::/48", "fast_path": {"table": "fp"}})
    assert nft.families(s) == (nft.IPV4,)
    assert nft.fast_path_table(s).endswith("}\nadd table ip6 fp\ndelete table ip6 fp\n")
