"""DNS rebinding protection, as dnsmasq's `--stop-dns-rebind`.

A web page from the internet can make the browser fetch its own name again
and get, this time, an address inside the home (the box's console, a
printer, a camera): the browser then lets the page read what that device
answers. So an upstream answer for a public name that carries a private,
CGNAT, loopback, link-local or ULA address, or one inside the LAN's own
prefix, is refused. Names the home resolves itself (local names, answered
before any upstream), the local domain and the allow-list (`rebind.allow`,
as dnsmasq's `--rebind-domain-ok`) are exempt. The documentation ranges
(192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) count as
public here: the lab's internet uses them.

The home's IPv6 prefix is whatever the modem announces today, and it may
change without an apply (a new delegation from the ISP): the DNS service
reads it from the modem's last Router Advertisement, which the DHCPv6
service keeps in the state directory (`read_ra_prefixes`), and the guard is
rebuilt when it changes. IPv4-mapped addresses (::ffff:a.b.c.d) are judged
by their IPv4 address.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Iterable

from .rules import DomainMatcher, Rule

PRIVATE_NETWORKS = (
    "0.0.0.0/8",  # "this network": 0.0.0.0 reaches the local host on Linux
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918
    "100.64.0.0/10",  # CGNAT (RFC 6598), the fake-IP pool included
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local
    "::/128", "::1/128",  # unspecified, loopback
    "fe80::/10",  # link-local
    "fc00::/7",  # unique local (ULA)
)
# A prefix shorter than this in an RA is not a home's LAN (SLAAC takes a
# /64); taking it would refuse the names of a large part of the internet.
SHORTEST_LAN_PREFIX = 32
PREFIXES_EVERY = 5.0  # seconds between reads of the modem's RA (it announces every few minutes)


def read_ra_prefixes(path: str) -> tuple[str, ...]:
    """The IPv6 prefixes of the RA kept at `path` (`RouterAdvert.to_json`); () if none is readable."""
    try:
        with open(path) as fh:
            data = json.load(fh)
        prefixes = data.get("prefixes") or ()
    except (OSError, ValueError, AttributeError):
        return ()
    out = []
    for text in prefixes:
        try:
            net = ipaddress.IPv6Network(text, strict=False)
        except (ValueError, TypeError):
            continue
        if net.prefixlen >= SHORTEST_LAN_PREFIX and str(net) not in out:
            out.append(str(net))
    return tuple(sorted(out))


class RebindGuard:
    """`refuses(name, addresses)`: True when an upstream answer must not reach the client."""

    def __init__(self, extra_networks: Iterable[str] = (), allow: Iterable[str] = (),
                 local_domain: str | None = None):
        nets = [ipaddress.ip_network(n) for n in (*PRIVATE_NETWORKS, *extra_networks)]
        # (network, mask) as integers: every forwarded answer's addresses are judged, and
        # ipaddress's objects and `in` cost as much as the rest of the answer's handling.
        self._v4 = tuple((int(n.network_address), int(n.netmask)) for n in nets if n.version == 4)
        self._v6 = tuple((int(n.network_address), int(n.netmask)) for n in nets if n.version == 6)
        exempt = [Rule("suffix", s, True, "rebind.allow") for s in allow]
        if local_domain:
            exempt.append(Rule("suffix", local_domain, True, "local_names.domain"))
        self._exempt = DomainMatcher(exempt)

    def private(self, rdata: bytes) -> bool:
        address = int.from_bytes(rdata, "big")
        if len(rdata) == 4:
            nets = self._v4
        elif address >> 32 == 0xffff:  # ::ffff:a.b.c.d, judged as a.b.c.d
            address &= 0xffffffff
            nets = self._v4
        else:
            nets = self._v6
        for net, mask in nets:
            if address & mask == net:
                return True
        return False

    def refuses(self, name: str, addresses) -> bool:
        # The addresses first: nearly every answer has no private one, and then the name
        # needs no matching.
        private = self.private
        for address in addresses:
            if private(address):
                return self._exempt.match(name) is None
        return False
