"""The network devices of a namespace as the datapath and the console read them.

One netlink dump gives, per device, what attaching a program needs (its
ifindex, and whether it is a veth whose peer sits in another namespace, so
a frame can be redirected straight into the peer) and what the console
shows (carrier, byte counters: what `ip -s link` prints).

`LinuxDevices` reads the kernel with pyroute2; `FakeDevices`
(`appliance.kernel.fake_devices`) keeps devices in memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from appliance.kernel.base import KernelError
from appliance.kernel.setns import in_netns

IFF_LOWER_UP = 0x10000


@dataclass(frozen=True)
class Device:
    name: str
    ifindex: int
    kind: str                    # "veth", "bridge", "dummy", ... or "device"
    carrier: bool                # LOWER_UP: up, and for a veth its peer too
    peer_elsewhere: bool = False  # a veth whose peer is in another namespace
    rx_bytes: int = 0
    tx_bytes: int = 0
    carrier_changes: int = 0     # every carrier loss and return counts (a flap between two reads too)


class Devices(Protocol):
    def devices(self, netns: str | None) -> list[Device]:
        """Every device of namespace `netns` (None: our own), by ifindex."""


class LinuxDevices:
    def devices(self, netns: str | None) -> list[Device]:
        try:
            return in_netns(netns, _dump)
        except (NetlinkError, OSError) as e:
            raise KernelError(f"netns {netns or '(own)'}: devices: {e}") from e


def _dump() -> list[Device]:
    with IPRoute() as ipr:
        msgs = list(ipr.get_links())
    out = []
    for m in msgs:
        info = m.get_attr("IFLA_LINKINFO")
        kind = (info.get_attr("IFLA_INFO_KIND") if info else None) or "device"
        stats = m.get_attr("IFLA_STATS64") or {}
        out.append(Device(
            name=m.get_attr("IFLA_IFNAME"),
            ifindex=m["index"],
            kind=kind,
            carrier=bool(m["flags"] & IFF_LOWER_UP),
            peer_elsewhere=kind == "veth" and m.get_attr("IFLA_LINK_NETNSID") is not None,
            rx_bytes=stats.get("rx_bytes", 0),
            tx_bytes=stats.get("tx_bytes", 0),
            carrier_changes=m.get_attr("IFLA_CARRIER_CHANGES") or 0,
        ))
    return sorted(out, key=lambda d: d.ifindex)
