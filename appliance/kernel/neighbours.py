"""The IPv6 neighbour table of the calling process's namespace (netlink).

IPv4 has /proc/net/arp; IPv6 has no such file, so the table is dumped with
RTM_GETNEIGH. Only entries that name a usable link-layer address are kept:
an INCOMPLETE or FAILED entry (the neighbour never answered) says nothing
about who holds the address.
"""
from __future__ import annotations

import socket

# NUD states (linux/neighbour.h) whose link-layer address the kernel stands by.
NUD_REACHABLE, NUD_STALE, NUD_DELAY, NUD_PROBE, NUD_PERMANENT = 0x02, 0x04, 0x08, 0x10, 0x80
_USABLE = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT
_NO_MAC = "00:00:00:00:00:00"


def ipv6_neighbours() -> list[tuple[str, str]]:
    """(address, MAC) of every usable IPv6 neighbour entry here, MACs in lower case."""
    from pyroute2 import IPRoute  # only a process that asks pays for the import

    with IPRoute() as ip:
        entries = ip.get_neighbours(family=socket.AF_INET6)
    out = []
    for entry in entries:
        if not entry.get("state", 0) & _USABLE:
            continue
        address, mac = entry.get_attr("NDA_DST"), entry.get_attr("NDA_LLADDR")
        if address and mac and mac != _NO_MAC:
            out.append((address.split("%")[0], mac.lower()))
    return out
