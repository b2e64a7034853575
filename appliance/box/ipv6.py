"""IPv6 addresses the box derives: a MAC's link-local, vproxy's DNS address.

Pure; the lab's topology uses the same link-local rule for its modem.
"""
from __future__ import annotations

import ipaddress

# The DNS server's IPv6 address on vproxy's loopback: DNS over IPv6 to the
# modem's addresses is DNATed to it (REDIRECT needs an address on the
# incoming link, and vproxy0 holds only a link-local one). Never seen
# outside vproxy: conntrack answers from the address the client asked.
VPROXY_DNS6 = "fdff:7e1a::53"


def eui64_link_local(mac: str) -> str:
    """The link-local address the kernel forms from a MAC (RFC 4291 appendix A)."""
    b = bytes.fromhex(mac.replace(":", ""))
    iid = bytes([b[0] ^ 0x02]) + b[1:3] + b"\xff\xfe" + b[3:]
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + iid))
