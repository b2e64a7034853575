"""Which MAC sends from an address: the neighbour tables of netns vproxy.

The DNS server sees a query's source address, not its frame. Groups and
local names are keyed by MAC, so the address is looked up where the kernel
keeps what it learned: the ARP table (IPv4, `/proc/net/arp`) and the IPv6
neighbour table (netlink, `appliance.kernel.neighbours`). Both are filled
by the box's own exchanges with the client: its DNS answers go out of
vproxy0 and the kernel resolves the client first, so after one answer the
table holds the client's current MAC for the very address it asked from,
whatever kind of address that is (SLAAC EUI-64, stable-privacy, temporary,
DHCPv6).

`eui64_mac` is the fallback for an IPv6 address the table does not hold yet
(the first query of a client): the MAC an EUI-64 interface identifier
(RFC 4291 appendix A) was made from. It is only a hint: privacy and
stable-privacy addresses (the default of Windows, macOS, iOS, Android and
systemd-networkd) carry no MAC, and any host may choose an address that
looks like one, so the resolver decides again as soon as the table knows.
"""
from __future__ import annotations

import ipaddress
import time
from typing import Callable, Iterable

Neighbours6 = Callable[[], Iterable[tuple[str, str]]]


def read_arp_mac(ip: str, path: str = "/proc/net/arp") -> str | None:
    """The MAC of an IPv4 neighbour of this namespace, from the ARP table."""
    try:
        with open(path) as fh:
            next(fh, None)
            for line in fh:
                parts = line.split()
                if len(parts) >= 4 and parts[0] == ip and parts[3] != "00:00:00:00:00:00":
                    return parts[3].lower()
    except OSError:
        pass
    return None


def eui64_mac(ip: str) -> str | None:
    """The MAC inside an EUI-64 interface identifier (xx:xx:xx:ff:fe:xx:xx:xx), else None."""
    try:
        address = ipaddress.IPv6Address(ip)
    except ValueError:
        return None
    iid = address.packed[8:]
    if iid[3:5] != b"\xff\xfe" or address.ipv4_mapped is not None:
        return None
    mac = bytes([iid[0] ^ 0x02]) + iid[1:3] + iid[5:]
    if mac[0] & 0x01:  # a group address is no host's MAC
        return None
    return ":".join(f"{b:02x}" for b in mac)


def _system_neighbours6() -> list[tuple[str, str]]:
    from appliance.kernel.neighbours import ipv6_neighbours

    try:
        return ipv6_neighbours()
    except OSError:
        return []


class NeighbourTable:
    """`mac_of(ip)` for IPv4 and IPv6; `ipv6()` the IPv6 entries.

    The IPv6 table is dumped at most every `min_age` seconds (one dump serves
    every client asked about meanwhile) and at least every `max_age` for an
    address it holds (a device may have moved the address to another MAC).
    """

    def __init__(self, read6: Neighbours6 = _system_neighbours6,
                 read_arp: Callable[[str], str | None] = read_arp_mac,
                 clock: Callable[[], float] = time.monotonic, min_age: float = 1.0,
                 max_age: float = 30.0):
        self._read6 = read6
        self._read_arp = read_arp
        self._clock = clock
        self.min_age, self.max_age = min_age, max_age
        self._table6: dict[str, str] = {}
        self._read_at = float("-inf")

    def _reload(self, now: float) -> None:
        table = {}
        for address, mac in self._read6():
            try:
                table[str(ipaddress.IPv6Address(address))] = mac.lower()
            except ValueError:
                continue
        self._table6, self._read_at = table, now

    def mac_of(self, ip: str) -> str | None:
        if ":" not in ip:
            return self._read_arp(ip)
        try:  # a link-local source comes with its zone (fe80::1%vproxy0); the table has none
            ip = str(ipaddress.IPv6Address(ip.split("%")[0]))
        except ValueError:
            return None
        now = self._clock()
        age = now - self._read_at
        mac = self._table6.get(ip)
        if (mac is None and age >= self.min_age) or age >= self.max_age:
            self._reload(now)
            mac = self._table6.get(ip)
        return mac

    def ipv6(self) -> list[tuple[str, str]]:
        """Every IPv6 (address, MAC) the table holds now."""
        self._reload(self._clock())
        return list(self._table6.items())
