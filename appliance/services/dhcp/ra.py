"""The modem's Router Advertisement, as the DHCPv6 server of the virtual gateway follows it (pure).

What DHCPv6 on the LAN depends on is in the modem's RA (RFC 4861 4.2):
the M flag (addresses by DHCPv6), the O flag (other information by DHCPv6),
its prefixes, and the DNS servers it announces (RDNSS, RFC 8106). gw0 hears
every RA the modem multicasts; `parse_ra` reads one, `RouterAdvert` is what
is kept of it (as JSON in the state directory, so the console and the next
apply see what the modem last said).
"""
from __future__ import annotations

import struct
from dataclasses import asdict, dataclass
from ipaddress import IPv6Address, IPv6Network

ROUTER_ADVERT = 134
OPT_PREFIX, OPT_RDNSS, OPT_DNSSL = 3, 25, 31
FLAG_MANAGED, FLAG_OTHER = 0x80, 0x40


class NotAnAdvert(ValueError):
    """The bytes are not a Router Advertisement we can read."""


@dataclass(frozen=True)
class RouterAdvert:
    source: str  # the router's link-local address
    managed: bool  # M: addresses by DHCPv6
    other: bool  # O: other configuration by DHCPv6
    prefixes: tuple[str, ...] = ()  # on-link prefixes announced for SLAAC or on-link use
    dns: tuple[str, ...] = ()  # RDNSS
    lifetime: int = 0  # router lifetime, seconds (0: not a default router)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "RouterAdvert":
        return cls(source=data["source"], managed=bool(data["managed"]), other=bool(data["other"]),
                   prefixes=tuple(data.get("prefixes", ())), dns=tuple(data.get("dns", ())),
                   lifetime=int(data.get("lifetime", 0)))


def parse_ra(source: str, message: bytes) -> RouterAdvert:
    """An ICMPv6 Router Advertisement (from its type byte on) sent by `source`."""
    if len(message) < 16 or message[0] != ROUTER_ADVERT or message[1] != 0:
        raise NotAnAdvert("not an ICMPv6 Router Advertisement")
    flags = message[5]
    lifetime = struct.unpack_from("!H", message, 6)[0]
    prefixes: list[str] = []
    dns: list[str] = []
    at = 16
    while at + 2 <= len(message):
        kind, length = message[at], message[at + 1] * 8
        if length == 0 or at + length > len(message):
            raise NotAnAdvert(f"option {kind} at {at} has a bad length")
        body = message[at:at + length]
        if kind == OPT_PREFIX and length == 32:
            plen = body[2]
            if plen <= 128:
                prefixes.append(str(IPv6Network((IPv6Address(body[16:32]), plen), strict=False)))
        elif kind == OPT_RDNSS and length >= 24:
            valid = struct.unpack_from("!I", body, 4)[0]
            if valid:  # a lifetime of 0 withdraws the servers
                dns += [str(IPv6Address(body[i:i + 16])) for i in range(8, length - 15, 16)]
        at += length
    return RouterAdvert(source=str(IPv6Address(source.split("%")[0])), managed=bool(flags & FLAG_MANAGED),
                        other=bool(flags & FLAG_OTHER), prefixes=tuple(prefixes), dns=tuple(dns), lifetime=lifetime)


def router_advert(*, managed: bool = False, other: bool = True, prefixes=(), dns=(),
                  lifetime: int = 1800) -> bytes:
    """An RA as a modem sends it (for tests and the lab): the inverse of `parse_ra`."""
    flags = (FLAG_MANAGED if managed else 0) | (FLAG_OTHER if other else 0)
    out = struct.pack("!BBHBBHII", ROUTER_ADVERT, 0, 0, 64, flags, lifetime, 0, 0)
    for prefix in prefixes:
        net = IPv6Network(prefix)
        out += struct.pack("!BBBBIII", OPT_PREFIX, 4, net.prefixlen, 0xC0, 86400, 14400, 0)
        out += net.network_address.packed
    if dns:
        out += struct.pack("!BBHI", OPT_RDNSS, 1 + 2 * len(dns), 0, 1800)
        out += b"".join(IPv6Address(a).packed for a in dns)
    return out
