"""The relay's kernel fast path on the kernel's fakes: what it maps, pins, reads and forgets.

The namespace tests (tests/integration/relay/test_fastpath.py) show the
fast path carrying real connections; these show its bookkeeping against
the state it leaves in nftables and reads from conntrack, without root.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time

from appliance.kernel.conntrack import TCP, TCP_ESTABLISHED, TCP_TIME_WAIT, CtEntry
from appliance.kernel.fake import FakeKernel
from appliance.kernel.fake_conntrack import FakeConntrack
from appliance.kernel.fake_nftables import FakeNftables
from appliance.services.relay import nft
from appliance.services.relay.fastpath import FastPath
from appliance.services.relay.settings import parse_settings
from appliance.services.relay.table import ConnectionTable

CLIENT = ("192.168.1.50", 40000)
FAKE, REAL = "100.96.0.7", "203.0.113.10"
TABLE = "appliance_relay"


class Pins:
    def __init__(self):
        self.count = collections.Counter()

    def pin(self, ip):
        self.count[ip] += 1

    def unpin(self, ip):
        self.count[ip] -= 1


class Relay:
    def __init__(self, loop, **fast_path):
        self.loop = loop
        self.settings = parse_settings({"fast_path": {"poll": 60, **fast_path}})
        self.directory = Pins()
        self.table = ConnectionTable()


class Kernel:
    def __init__(self, port_range="61000 65535"):
        self.kernel = FakeKernel()
        self.kernel.set_sysctls(None, {"net.ipv4.ip_local_port_range": port_range})
        self.nft = FakeNftables()
        self.ct = FakeConntrack()

    def fast_path(self, relay) -> FastPath:
        return FastPath(relay, kernel=self.kernel, nftables=self.nft, conntrack=self.ct)

    async def mapped(self) -> dict[str, str]:
        return await self.nft.map_elements("ip", TABLE, "fast")


def run(coro):
    return asyncio.run(coro)


def kernel_row(**kw) -> CtEntry:
    fields = dict(id=0, proto=TCP, src=CLIENT, dst=(FAKE, 80), reply_src=(REAL, 80),
                  mark=nft.FAST_PATH_CT_MARK, tcp_state=TCP_ESTABLISHED)
    return CtEntry(**{**fields, **kw})


def test_start_makes_the_table_and_turns_on_conntrack_accounting():
    k = Kernel()

    async def go():
        fp = k.fast_path(Relay(asyncio.get_running_loop()))
        await fp.start()
        try:
            assert fp.running
            table = k.nft.tables[("ip", TABLE)]
            assert set(table.maps) == {"fast"} and set(table.sets) == {"fast_keys", *nft.COUNTER_SETS}
            assert k.kernel.get_sysctls(None, ["net.netfilter.nf_conntrack_acct",
                                               "net.netfilter.nf_conntrack_timestamp"]) == \
                {"net.netfilter.nf_conntrack_acct": "1", "net.netfilter.nf_conntrack_timestamp": "1"}
        finally:
            await fp.stop()
        assert ("ip", TABLE) not in k.nft.tables and k.ct.closed
    run(go())


def test_a_port_range_that_overlaps_the_nat_ports_is_warned_about(caplog):
    k = Kernel(port_range="32768 60999")

    async def go():
        fp = k.fast_path(Relay(asyncio.get_running_loop()))
        with caplog.at_level(logging.WARNING, logger="appliance.relay"):
            await fp.start()
        await fp.stop()
    run(go())
    assert "ip_local_port_range is 32768-60999" in caplog.text


def test_a_relay_without_the_fast_path_removes_a_predecessors_table():
    k = Kernel()

    async def go():
        await k.fast_path(Relay(asyncio.get_running_loop())).start()  # then it died
        fp = k.fast_path(Relay(asyncio.get_running_loop(), enabled=False))
        await fp.start()
        assert not fp.running and ("ip", TABLE) not in k.nft.tables
    run(go())


def test_an_offer_maps_and_pins_the_address_then_forgets_it_after_ttl():
    k = Kernel()

    async def go():
        relay = Relay(asyncio.get_running_loop(), ttl=1)
        fp = k.fast_path(relay)
        await fp.start()
        try:
            await fp.offer(FAKE, REAL, "direct.test")
            assert await k.mapped() == {FAKE: REAL} and relay.directory.count[FAKE] == 1
            await fp.offer(FAKE, "203.0.113.11", "direct.test")  # the name moved
            assert await k.mapped() == {FAKE: "203.0.113.11"} and relay.directory.count[FAKE] == 1
            deadline = time.monotonic() + 5
            while relay.directory.count[FAKE] and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert relay.directory.count[FAKE] == 0 and await k.mapped() == {}
        finally:
            await fp.stop()
    run(go())


def test_an_offer_nft_refuses_leaves_no_pin_behind():
    k = Kernel()

    async def go():
        relay = Relay(asyncio.get_running_loop())
        fp = k.fast_path(relay)
        await fp.start()
        k.nft.fail_on.add("run")
        try:
            await fp.offer(FAKE, REAL, "direct.test")
            assert fp.entries == {} and relay.directory.count[FAKE] == 0
            assert fp.stats()["nft_failures"] == 1
        finally:
            k.nft.fail_on.clear()
            await fp.stop()
    run(go())


def test_kernel_connections_show_in_the_table_with_their_final_bytes():
    k = Kernel()

    async def go():
        relay = Relay(asyncio.get_running_loop())
        fp = k.fast_path(relay)
        await fp.start()
        try:
            await fp.offer(FAKE, REAL, "direct.test")
            k.ct.add(kernel_row(bytes_orig=500, bytes_reply=30000, start=1700000000.0))
            await fp.read_flows()
            [row] = relay.table.live()
            assert (row["path"], row["domain"], row["real"], row["client"]) == \
                ("kernel", "direct.test", f"{REAL}:80", f"{CLIENT[0]}:{CLIENT[1]}")
            assert (row["bytes_up"], row["bytes_down"], row["started"]) == (500, 30000, 1700000000.0)
            # A FIN: the connection takes the ENDED mark, with its last bytes.
            k.ct.add(kernel_row(mark=nft.FAST_PATH_CT_MARK_ENDED, bytes_orig=600,
                                bytes_reply=45000, tcp_state=TCP_TIME_WAIT))
            await fp.read_flows()
            assert relay.table.live() == []
            [ended] = relay.table.history()
            assert (ended["bytes_up"], ended["bytes_down"], ended["state"]) == (600, 45000, "closed")
        finally:
            await fp.stop()
    run(go())


def test_unmapping_an_address_forgets_its_closed_connections_only():
    k = Kernel()

    async def go():
        relay = Relay(asyncio.get_running_loop(), ttl=1)
        fp = k.fast_path(relay)
        await fp.start()
        try:
            await fp.offer(FAKE, REAL, "direct.test")
            ended = nft.FAST_PATH_CT_MARK_ENDED
            closed = k.ct.add(kernel_row(mark=ended, tcp_state=TCP_TIME_WAIT))
            half = k.ct.add(kernel_row(src=(CLIENT[0], 40001), mark=ended))
            other = k.ct.add(kernel_row(dst=("100.96.0.8", 80), mark=ended, tcp_state=TCP_TIME_WAIT))
            deadline = time.monotonic() + 5
            while relay.directory.count[FAKE] and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert relay.directory.count[FAKE] == 0
            left = await k.ct.entries(ended)
            assert closed not in left and half in left and other in left
            # The half-closed one gets its last ACK after the retire: forgotten once closed.
            k.ct.add(kernel_row(src=(CLIENT[0], 40001), mark=ended, tcp_state=TCP_TIME_WAIT))

            async def still_there():
                return any(e.src == (CLIENT[0], 40001) for e in await k.ct.entries(ended))
            deadline = time.monotonic() + 5
            while await still_there() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not await still_there() and other in await k.ct.entries(ended)
        finally:
            await fp.stop()
    run(go())


def test_the_kernels_counters_add_to_the_domains_and_clients():
    k = Kernel()

    async def go():
        relay = Relay(asyncio.get_running_loop())
        fp = k.fast_path(relay)
        await fp.start()
        try:
            await fp.offer(FAKE, REAL, "direct.test")
            pair = f"{CLIENT[0]} . {FAKE}"
            await k.nft.run(f"add element ip {TABLE} conns {{ {pair} counter packets 3 bytes 180 }}\n"
                            f"add element ip {TABLE} up {{ {pair} counter packets 9 bytes 1200 }}\n"
                            f"add element ip {TABLE} down {{ {pair} counter packets 20 bytes 90000 }}\n")
            await fp.read_counters()
            counters = relay.table.counters()
            assert counters["domains"]["direct.test"] == {"bytes_up": 1200, "bytes_down": 90000,
                                                          "connections": 3}
            assert counters["clients"][CLIENT[0]]["connections"] == 3
            assert counters["totals"]["fast_path"] == 3
            await fp.read_counters()  # nothing new: nothing added twice
            assert relay.table.counters()["domains"]["direct.test"]["connections"] == 3
        finally:
            await fp.stop()
    run(go())


def test_a_failed_counter_read_is_counted_not_fatal():
    k = Kernel()

    async def go():
        fp = k.fast_path(Relay(asyncio.get_running_loop()))
        await fp.start()
        k.nft.tables.clear()   # someone flushed the ruleset
        await fp.read_counters()
        assert fp.stats()["nft_failures"] == 1
        await fp.stop()
    run(go())


# -- IPv6 -----------------------------------------------------------------------------

CLIENT6 = ("2001:db8:1::c", 40000)
FAKE6, REAL6 = "2001:2::7", "2001:db8:ffff::10"  # FAKE6 is FAKE's twin
SIX = {"fake_range6": "2001:2::/48", "direct6": True}


class Relay6(Relay):
    def __init__(self, loop, **fast_path):
        super().__init__(loop, **fast_path)
        self.settings = parse_settings({**SIX, "fast_path": {"poll": 60, **fast_path}})


def test_an_ipv6_offer_maps_in_the_ip6_table_and_pins_the_ipv4_twin_then_forgets_it():
    k = Kernel()

    async def go():
        relay = Relay6(asyncio.get_running_loop(), ttl=1)
        fp = k.fast_path(relay)
        await fp.start()
        try:
            assert set(k.nft.tables) == {("ip", TABLE), ("ip6", TABLE)}
            await fp.offer(FAKE6, REAL6, "direct.test")
            assert await k.nft.map_elements("ip6", TABLE, "fast") == {FAKE6: REAL6}
            assert await k.mapped() == {}  # the IPv4 map is the IPv4 twin's own
            assert relay.directory.count[FAKE] == 1  # the DNS server knows it by the twin
            # A fake IPv6 address never maps to a real IPv4 one (nor the reverse).
            await fp.offer("2001:2::8", REAL, "other.test")
            await fp.offer("100.96.0.8", REAL6, "other.test")
            assert set(fp.entries) == {FAKE6}
            deadline = time.monotonic() + 5
            while relay.directory.count[FAKE] and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert relay.directory.count[FAKE] == 0
            assert await k.nft.map_elements("ip6", TABLE, "fast") == {}
        finally:
            await fp.stop()
        assert k.nft.tables == {}  # both families' tables gone
    run(go())


def test_without_direct6_there_is_no_ip6_table_and_a_predecessors_goes():
    k = Kernel()

    async def go():
        await k.fast_path(Relay6(asyncio.get_running_loop())).start()  # then it died
        relay = Relay(asyncio.get_running_loop())
        relay.settings = parse_settings({"fake_range6": "2001:2::/48", "fast_path": {"poll": 60}})
        fp = k.fast_path(relay)
        await fp.start()
        try:
            assert set(k.nft.tables) == {("ip", TABLE)}
            await fp.offer(FAKE6, REAL6, "direct.test")
            assert fp.entries == {} and relay.directory.count[FAKE] == 0
        finally:
            await fp.stop()
    run(go())


def test_ipv6_kernel_connections_and_counters_reach_the_table():
    k = Kernel()

    async def go():
        relay = Relay6(asyncio.get_running_loop())
        fp = k.fast_path(relay)
        await fp.start()
        try:
            await fp.offer(FAKE6, REAL6, "direct.test")
            k.ct.add(kernel_row(src=CLIENT6, dst=(FAKE6, 80), reply_src=(REAL6, 80),
                                bytes_orig=700, bytes_reply=40000))
            await fp.read_flows()
            [row] = relay.table.live()
            assert (row["path"], row["domain"], row["fake_ip"], row["real"]) == \
                ("kernel", "direct.test", FAKE6, f"[{REAL6}]:80")
            pair4, pair6 = f"{CLIENT[0]} . {FAKE}", f"{CLIENT6[0]} . {FAKE6}"
            await k.nft.run(f"add element ip {TABLE} conns {{ {pair4} counter packets 1 bytes 60 }}\n"
                            f"add element ip6 {TABLE} conns {{ {pair6} counter packets 2 bytes 160 }}\n"
                            f"add element ip6 {TABLE} down {{ {pair6} counter packets 30 bytes 40000 }}\n")
            await fp.read_counters()
            counters = relay.table.counters()
            assert counters["domains"]["direct.test"]["connections"] == 1 + 2  # the kernel row is not counted twice
            assert counters["domains"]["direct.test"]["bytes_down"] == 40000
            assert counters["clients"][CLIENT6[0]]["bytes_down"] == 40000
            assert counters["totals"]["fast_path"] == 3
        finally:
            await fp.stop()
    run(go())
