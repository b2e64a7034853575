"""The IPv6 neighbour table of the calling process's namespace (netlink).

IPv4 has /proc/net/arp; IPv6 has no such file, so the table is dumped with
RTM_GETNEIGH over a plain netlink socket. Not pyroute2: its IPRoute runs
an asyncio loop of its own, which cannot run inside the DNS server's (uvloop
cannot open a netlink endpoint), and one dump of a home's table is a few
hundred bytes to read. Only entries that name a usable link-layer address
are kept: an INCOMPLETE or FAILED entry (the neighbour never answered) says
nothing about who holds the address.
"""
from __future__ import annotations

import socket
import struct

RTM_NEWNEIGH, RTM_GETNEIGH = 28, 30
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NDA_DST, NDA_LLADDR = 1, 2
# NUD states (linux/neighbour.h) whose link-layer address the kernel stands by.
NUD_REACHABLE, NUD_STALE, NUD_DELAY, NUD_PROBE, NUD_PERMANENT = 0x02, 0x04, 0x08, 0x10, 0x80
_USABLE = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT
_NLMSGHDR = struct.Struct("=IHHII")
_NDMSG = struct.Struct("=BBHiHBB")
_RTATTR = struct.Struct("=HH")


def ipv6_neighbours(timeout: float = 1.0) -> list[tuple[str, str]]:
    """(address, MAC) of every usable IPv6 neighbour entry here, MACs in lower case."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
        s.settimeout(timeout)
        s.bind((0, 0))
        body = _NDMSG.pack(socket.AF_INET6, 0, 0, 0, 0, 0, 0)
        s.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
               + body)
        out: list[tuple[str, str]] = []
        while True:
            data = s.recv(65536)
            at = 0
            while at + _NLMSGHDR.size <= len(data):
                length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, at)
                if length < _NLMSGHDR.size:
                    raise OSError("netlink: a message shorter than its header")
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, at + _NLMSGHDR.size)[0]
                    raise OSError(code, f"netlink neighbour dump: {code}")
                if kind == RTM_NEWNEIGH:
                    entry = _entry(data[at + _NLMSGHDR.size:at + length])
                    if entry is not None:
                        out.append(entry)
                at += (length + 3) & ~3


def _entry(msg: bytes) -> tuple[str, str] | None:
    if len(msg) < _NDMSG.size:
        return None
    family, _, _, _, state, _, _ = _NDMSG.unpack_from(msg)
    if family != socket.AF_INET6 or not state & _USABLE:
        return None
    dst = mac = None
    at = _NDMSG.size
    while at + _RTATTR.size <= len(msg):
        length, kind = _RTATTR.unpack_from(msg, at)
        if length < _RTATTR.size:
            break
        value = msg[at + _RTATTR.size:at + length]
        if kind == NDA_DST and len(value) == 16:
            dst = socket.inet_ntop(socket.AF_INET6, value)
        elif kind == NDA_LLADDR and len(value) == 6:
            mac = ":".join(f"{b:02x}" for b in value)
        at += (length + 3) & ~3
    if dst is None or mac is None or mac == "00:00:00:00:00:00":
        return None
    return dst, mac
