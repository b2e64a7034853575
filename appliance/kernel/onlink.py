"""A route through a neighbour that is never resolved (pyroute2).

For addresses that exist only inside a namespace and must leave by one
device without an ARP request for them ever going out: the route names a
gateway `onlink` and the gateway's neighbour entry is permanent, so the
kernel hands the frames straight to the device's egress, where a program
takes them (the relay's IPv6 translator, `services/relay/nat64.py`). Safe to
call from an asyncio loop's thread (pyroute2 then runs on a thread of its own).
"""
from __future__ import annotations

import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .base import KernelError
from .tc import outside_event_loop

RTNH_F_ONLINK = 4
NUD_PERMANENT = 0x80


def replace(ifindex: int, dst: str, gateway: str, gateway_mac: str, mtu_less: int = 0) -> int:
    """Route `dst` via `gateway` (neighbour `gateway_mac`, permanent) out of `ifindex`, with an MTU
    `mtu_less` bytes under the device's; returns that MTU."""
    def call() -> int:
        with IPRoute() as ip:
            mtu = (ip.get_links(ifindex)[0].get_attr("IFLA_MTU") or 1500) - mtu_less
            ip.neigh("replace", dst=gateway, lladdr=gateway_mac, ifindex=ifindex, state=NUD_PERMANENT)
            ip.route("replace", dst=dst, gateway=gateway, oif=ifindex, flags=RTNH_F_ONLINK,
                     metrics={"mtu": mtu})
            return mtu
    try:
        return outside_event_loop(call)
    except NetlinkError as e:
        raise KernelError(f"route {dst} via {gateway} on ifindex {ifindex}: {e}") from e


def remove(ifindex: int, gateway: str) -> int:
    """Every IPv4 route via `gateway` out of `ifindex`, and the gateway's neighbour entry; how many
    routes there were (a device already gone: none)."""
    def call() -> int:
        found = 0
        with IPRoute() as ip:
            for route in ip.get_routes(family=socket.AF_INET, oif=ifindex):
                if route.get_attr("RTA_GATEWAY") != gateway:
                    continue
                found += 1
                try:
                    ip.route("del", dst=f"{route.get_attr('RTA_DST')}/{route['dst_len']}",
                             gateway=gateway, oif=ifindex)
                except NetlinkError:
                    pass  # gone meanwhile
            try:
                ip.neigh("del", dst=gateway, ifindex=ifindex)
            except NetlinkError:
                pass
        return found
    try:
        return outside_event_loop(call)
    except NetlinkError as e:
        raise KernelError(f"routes via {gateway} on ifindex {ifindex}: {e}") from e
