"""`Conntrack`: the same assertions on `FakeConntrack` and on the running kernel (`LinuxConntrack`).

On the kernel side two TCP connections over loopback in a scratch
namespace, to 127.0.0.1 and to 127.0.0.2 (and to ::1 for IPv6), get a
conntrack mark from an nftables rule and carry 1000 bytes each way; on the fake side `add()` makes
the entries traffic would have made.
"""
from __future__ import annotations

import asyncio
import socket

import pytest

from appliance.kernel.conntrack import TCP, TCP_ESTABLISHED, CtEntry, LinuxConntrack
from appliance.kernel.fake_conntrack import FakeConntrack
from appliance.kernel.setns import in_netns
from tests.support.scratchns import ScratchNamespaces, sh


MARK = 0x42
PORT = 8080
MARKING = f"""
table ip kc {{
  chain out {{
    type filter hook output priority 0; policy accept;
    ct mark set 0x{MARK:x}
  }}
}}
table ip6 kc {{
  chain out {{
    type filter hook output priority 0; policy accept;
    ct mark set 0x{MARK:x}
  }}
}}
"""


class Side:
    def __init__(self, kind: str, ns: str):
        self.kind, self.ns = kind, ns
        self.sockets: list[socket.socket] = []
        if kind == "fake":
            self.ct = FakeConntrack()
        else:
            self.ct = LinuxConntrack(ns)
            sh(ns, "sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1")
            sh(ns, "nft", "-f", "-", input=MARKING)
            # The scratch namespace has IPv6 off; ::1 on lo is all it needs here.
            sh(ns, "sysctl", "-qw", "net.ipv6.conf.lo.disable_ipv6=0")

    def connect(self, server_ip: str) -> tuple[tuple[str, int], tuple[str, int]]:
        """A TCP connection that carried 1000 bytes each way: (client, server) addresses."""
        if self.kind == "fake":
            client = ("::1" if ":" in server_ip else "127.0.0.1", 40000 + len(self.ct.table))
            self.ct.add(CtEntry(0, TCP, client, (server_ip, PORT), (server_ip, PORT), mark=MARK,
                                bytes_orig=1000 + 6 * 52, bytes_reply=1000 + 6 * 52,
                                tcp_state=TCP_ESTABLISHED))
            return client, (server_ip, PORT)
        family = socket.AF_INET6 if ":" in server_ip else socket.AF_INET
        listener = in_netns(self.ns, socket.socket, family)
        listener.bind((server_ip, PORT))
        listener.listen(1)
        client = in_netns(self.ns, socket.create_connection, (server_ip, PORT))
        server, _ = listener.accept()
        listener.close()
        self.sockets += [client, server]
        client.sendall(b"x" * 1000)
        server.sendall(b"y" * 1000)
        for s in (server, client):
            got = 0
            while got < 1000:
                got += len(s.recv(1000 - got))
        return client.getsockname()[:2], (server_ip, PORT)

    def close(self) -> None:
        for s in self.sockets:
            s.close()


@pytest.fixture(params=["fake", "linux"])
def side(request):
    with ScratchNamespaces("kcc") as (ns,):
        s = Side(request.param, ns)
        try:
            yield s
        finally:
            s.close()


def run(side, coro):
    """Run a test's calls in one event loop; the conntrack socket closes in it."""
    async def go():
        try:
            return await coro
        finally:
            side.ct.close()
    return asyncio.run(go())


def test_entries_by_mark_and_destination(side):
    one = side.connect("127.0.0.1")
    two = side.connect("127.0.0.2")

    async def go():
        every = await side.ct.entries(MARK)
        assert sorted((e.src, e.dst) for e in every) == sorted([one, two])
        entry = next(e for e in every if e.src == one[0])
        assert (entry.proto, entry.reply_src, entry.mark, entry.tcp_state) == \
            (TCP, one[1], MARK, TCP_ESTABLISHED)
        assert entry.bytes_orig > 1000 and entry.bytes_reply > 1000
        assert [e.src for e in await side.ct.entries(MARK, "127.0.0.2")] == [two[0]]
        assert await side.ct.entries(MARK + 1) == []
        assert (await side.ct.get(TCP, *one)).id == entry.id
    run(side, go())


def test_a_deleted_entry_is_gone(side):
    one = side.connect("127.0.0.1")
    two = side.connect("127.0.0.2")

    async def go():
        assert await side.ct.delete(TCP, *one) is True
        assert await side.ct.get(TCP, *one) is None
        assert await side.ct.delete(TCP, *one) is False
        assert [e.src for e in await side.ct.entries(MARK)] == [two[0]]
    run(side, go())


def test_no_entry_for_a_connection_never_made(side):
    async def go():
        assert await side.ct.get(TCP, ("127.0.0.1", 1), ("127.0.0.9", 9)) is None
        assert await side.ct.entries(MARK) == []
    run(side, go())


def test_ipv6_entries_beside_ipv4_ones(side):
    one = side.connect("127.0.0.1")
    six = side.connect("::1")

    async def go():
        assert sorted((e.src, e.dst) for e in await side.ct.entries(MARK)) == sorted([one, six])
        [entry] = await side.ct.entries(MARK, "::1")
        assert (entry.src, entry.reply_src, entry.tcp_state) == (six[0], six[1], TCP_ESTABLISHED)
        assert entry.bytes_orig > 1000
        assert (await side.ct.get(TCP, *six)).id == entry.id
        assert await side.ct.delete(TCP, *six) is True
        assert await side.ct.get(TCP, *six) is None
        assert [e.src for e in await side.ct.entries(MARK)] == [one[0]]
    run(side, go())
