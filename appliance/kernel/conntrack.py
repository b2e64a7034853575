"""The kernel's connection tracking table (IPv4 and IPv6), read and pruned over ctnetlink.

A connection is known by its original tuple (protocol, source, destination
as the first packet had them); `reply_src` is who answers, which after a
DNAT is the real server. Byte counts need `nf_conntrack_acct` and start
times `nf_conntrack_timestamp` in the namespace (else 0 and None).

The calls are asynchronous (the relay reads the table from its event loop).
`LinuxConntrack` talks to the kernel with pyroute2, in `netns` (None: the
namespace the process runs in), with one socket per family (ctnetlink
filters a dump by the family of its request); `FakeConntrack`
(`appliance.kernel.fake_conntrack`) keeps entries in memory.
"""
from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from typing import Protocol

from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink.nfctsocket import AsyncNFCTSocket, NFCTAttrTuple

from appliance.kernel.base import KernelError

TCP = socket.IPPROTO_TCP
UDP = socket.IPPROTO_UDP
# conntrack's TCP states (enum tcp_conntrack)
TCP_ESTABLISHED = 3
TCP_TIME_WAIT = 7
TCP_CLOSE = 8


@dataclass(frozen=True)
class CtEntry:
    id: int
    proto: int
    src: tuple[str, int]          # the original direction: the client
    dst: tuple[str, int]          # where its first packet went (before any DNAT)
    reply_src: tuple[str, int]    # who answers (after a DNAT: the real server)
    mark: int = 0
    bytes_orig: int = 0           # IP bytes, headers included
    bytes_reply: int = 0
    start: float | None = None    # seconds since the epoch
    tcp_state: int | None = None


class Conntrack(Protocol):
    async def entries(self, mark: int, dst: str | None = None) -> list[CtEntry]:
        """The connections carrying `mark` (to address `dst` only, if given)."""
    async def get(self, proto: int, src: tuple[str, int], dst: tuple[str, int]) -> CtEntry | None:
        """The connection with this original tuple, None when there is none."""
    async def delete(self, proto: int, src: tuple[str, int], dst: tuple[str, int]) -> bool:
        """Forget the connection with this original tuple; False when there was none."""
    def close(self) -> None: ...


class LinuxConntrack:
    def __init__(self, netns: str | None = None):
        self.netns = netns
        self._socks: dict[int, AsyncNFCTSocket] = {}

    def _socket(self, family: int = socket.AF_INET) -> AsyncNFCTSocket:
        if family not in self._socks:
            kw = {"netns": self.netns} if self.netns else {}
            self._socks[family] = AsyncNFCTSocket(nfgen_family=family, **kw)
        return self._socks[family]

    def _error(self, what: str, e: Exception) -> KernelError:
        return KernelError(f"netns {self.netns or '(own)'}: conntrack {what}: {e}")

    async def entries(self, mark, dst=None):
        # The mark is filtered in the kernel, and so is an IPv4 destination (since 5.8); an
        # IPv6 one only here: a dump with an IPv6 tuple filter returned no entry at all,
        # matching or not (pyroute2 0.9.7, kernel 6.18). No `dst`: both families.
        fams = FAMILIES if dst is None else (_family(dst),)
        out = []
        for family in fams:
            where = {} if dst is None or family == socket.AF_INET6 else \
                {"tuple_orig": NFCTAttrTuple(family=family, daddr=dst)}
            try:
                async for msg in await self._socket(family).dump(mark=mark, **where):
                    entry = _entry(msg)
                    if entry is not None and (dst is None or entry.dst[0] == dst):
                        out.append(entry)
            except NetlinkError as e:
                raise self._error("dump", e) from e
        return out

    async def get(self, proto, src, dst):
        family = _family(dst[0])
        try:
            for msg in await self._socket(family).entry("get", tuple_orig=_tuple(proto, src, dst)):
                if (entry := _entry(msg)) is not None:
                    return entry
        except NetlinkError as e:
            if e.code == errno.ENOENT:
                return None
            raise self._error("get", e) from e
        return None

    async def delete(self, proto, src, dst):
        try:
            await self._socket(_family(dst[0])).entry("del", tuple_orig=_tuple(proto, src, dst))
        except NetlinkError as e:
            if e.code == errno.ENOENT:
                return False
            raise self._error("delete", e) from e
        return True

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()


FAMILIES = (socket.AF_INET, socket.AF_INET6)


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _tuple(proto: int, src: tuple[str, int], dst: tuple[str, int]) -> NFCTAttrTuple:
    return NFCTAttrTuple(family=_family(dst[0]), saddr=src[0], daddr=dst[0], proto=proto,
                         sport=src[1], dport=dst[1])


def _entry(msg) -> CtEntry | None:
    orig, reply = msg.get_attr("CTA_TUPLE_ORIG"), msg.get_attr("CTA_TUPLE_REPLY")
    if orig is None or reply is None:
        return None
    proto = orig.get_attr("CTA_TUPLE_PROTO")
    r_proto = reply.get_attr("CTA_TUPLE_PROTO")
    o_ip, r_ip = orig.get_attr("CTA_TUPLE_IP"), reply.get_attr("CTA_TUPLE_IP")
    if proto is None or r_proto is None or o_ip is None or r_ip is None:
        return None
    up = down = 0
    if (c := msg.get_attr("CTA_COUNTERS_ORIG")) is not None:
        up = c.get_attr("CTA_COUNTERS_BYTES") or 0
    if (c := msg.get_attr("CTA_COUNTERS_REPLY")) is not None:
        down = c.get_attr("CTA_COUNTERS_BYTES") or 0
    start = None
    if (ts := msg.get_attr("CTA_TIMESTAMP")) is not None and ts.get_attr("CTA_TIMESTAMP_START"):
        start = ts.get_attr("CTA_TIMESTAMP_START") / 1e9
    state = None
    if (info := msg.get_attr("CTA_PROTOINFO")) is not None:
        if (tcp := info.get_attr("CTA_PROTOINFO_TCP")) is not None:
            state = tcp.get_attr("CTA_PROTOINFO_TCP_STATE")
    v = "V6" if o_ip.get_attr("CTA_IP_V6_SRC") is not None else "V4"
    return CtEntry(
        id=msg.get_attr("CTA_ID"),
        proto=proto.get_attr("CTA_PROTO_NUM"),
        src=(o_ip.get_attr(f"CTA_IP_{v}_SRC"), proto.get_attr("CTA_PROTO_SRC_PORT")),
        dst=(o_ip.get_attr(f"CTA_IP_{v}_DST"), proto.get_attr("CTA_PROTO_DST_PORT")),
        reply_src=(r_ip.get_attr(f"CTA_IP_{v}_SRC"), r_proto.get_attr("CTA_PROTO_SRC_PORT")),
        mark=msg.get_attr("CTA_MARK") or 0,
        bytes_orig=up,
        bytes_reply=down,
        start=start,
        tcp_state=state,
    )
