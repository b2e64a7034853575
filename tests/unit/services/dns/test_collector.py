"""The DNS server makes no reference cycles while it answers, so its full garbage-collector passes
can run on a clock (`collector.py`): whatever an answer allocates is freed by its last reference.

The real server (listener, resolver, upstream channel, query log, answer cache, fake-IP pool) on
loopback, a real UDP upstream, the event loops it runs on in the box (uvloop) and in the tests.
"""
import asyncio
import collections
import gc
import socket

import dns.message
import dns.rcode
import dns.rrset
import pytest
import uvloop

from appliance.services.dns.server import DnsService
from appliance.services.dns.settings import parse_settings

# Forwarded (TTL 300, TTL 0, NXDOMAIN), blocked, fake-IP, and a cached name asked again and again.
KINDS = ("www{}.example.test", "z{}.example.test", "nx{}.example.test", "a{}.blocked.test", "b{}.fake.test",
         "www1.example.test")


class Upstream(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        q = dns.message.from_wire(data)
        r = dns.message.make_response(q)
        name = q.question[0].name.to_text()
        if name.startswith("nx"):
            r.set_rcode(dns.rcode.NXDOMAIN)
        else:
            ttl = 0 if name.startswith("z") else 300
            r.answer.append(dns.rrset.from_text(q.question[0].name, ttl, "IN", "A", "198.51.100.7"))
        self.transport.sendto(r.to_wire(), addr)


async def garbage_of_answers(tmp_path, rounds: int) -> list:
    loop = asyncio.get_running_loop()
    upstream, _ = await loop.create_datagram_endpoint(Upstream, local_addr=("127.0.0.1", 0))
    settings = parse_settings({
        "listen": ["127.0.0.1:0"], "upstreams": [{"url": f"udp://127.0.0.1:{upstream.get_extra_info('sockname')[1]}"}],
        "control_socket": None, "workers": 1, "allow_clients": ["127.0.0.0/8"],
        "rate_limit": {"per_client_qps": 1000000, "burst": 1000000},
        "fake_ip": {"db_path": str(tmp_path / "fakeip.sqlite3"), "new_per_client": 0},
        "query_log": {"dir": str(tmp_path / "querylog")},
        "rules": [{"match": "suffix", "value": "blocked.test", "then": {"action": "block"}},
                  {"match": "suffix", "value": "fake.test", "then": {"action": "fake-ip", "route": "direct"}}]})
    service = DnsService(settings)
    await service.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect(("127.0.0.1", service.bound_ports()[0]))
    rcodes = collections.Counter()

    async def ask(name):
        await loop.sock_sendall(sock, dns.message.make_query(name, "A").to_wire())
        rcodes[dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)).rcode()] += 1

    try:
        for i in range(20):  # the first of everything: caches, pools, files, the loop's own
            for kind in KINDS:
                await ask(kind.format(i))
        await asyncio.sleep(0.3)  # a settle of the query log, its disk write included
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what a pass would free is kept in gc.garbage instead
        try:
            for i in range(20, 20 + rounds):
                for kind in KINDS:
                    await ask(kind.format(i))
            await asyncio.sleep(0.3)
            gc.collect()
            garbage = list(gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    finally:
        sock.close()
        await service.stop()
        upstream.close()
    asked = 20 + rounds  # of each kind; blocked names are NXDOMAIN, as the upstream's nx* names
    assert rcodes == {dns.rcode.NXDOMAIN: 2 * asked, dns.rcode.NOERROR: 4 * asked}
    return garbage


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_answering_every_kind_of_query_makes_no_garbage_cycles(tmp_path, loop):
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        garbage = runner.run(garbage_of_answers(tmp_path, 400))
    assert collections.Counter(type(o).__qualname__ for o in garbage) == collections.Counter()
