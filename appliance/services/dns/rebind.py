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
"""

from __future__ import annotations

import ipaddress
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


class RebindGuard:
    """`refuses(name, addresses)`: True when an upstream answer must not reach the client."""

    def __init__(self, extra_networks: Iterable[str] = (), allow: Iterable[str] = (),
                 local_domain: str | None = None):
        nets = [ipaddress.ip_network(n) for n in (*PRIVATE_NETWORKS, *extra_networks)]
        self._v4 = [n for n in nets if n.version == 4]
        self._v6 = [n for n in nets if n.version == 6]
        exempt = [Rule("suffix", s, True, "rebind.allow") for s in allow]
        if local_domain:
            exempt.append(Rule("suffix", local_domain, True, "local_names.domain"))
        self._exempt = DomainMatcher(exempt)

    def private(self, rdata: bytes) -> bool:
        if len(rdata) == 4:
            address = ipaddress.IPv4Address(rdata)
            return any(address in n for n in self._v4)
        address = ipaddress.IPv6Address(rdata)
        mapped = address.ipv4_mapped
        if mapped is not None:
            return any(mapped in n for n in self._v4)
        return any(address in n for n in self._v6)

    def refuses(self, name: str, addresses: list[bytes]) -> bool:
        if not addresses or self._exempt.match(name) is not None:
            return False
        return any(self.private(a) for a in addresses)
