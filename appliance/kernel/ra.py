"""Router Advertisements on one link: hear them (the DHCPv6 server follows the modem's) and,
for tests and the lab, send one.

A raw ICMPv6 socket bound to the interface with a filter that lets only
type 134 through; it receives every RA on the link whatever `accept_ra`
says (the kernel's own autoconfiguration stays off on gw0). It sends
nothing by itself: listening is all the box does on the modem's link.
"""
from __future__ import annotations

import socket
import struct

ICMP6_FILTER = 1  # <netinet/icmp6.h>, level IPPROTO_ICMPV6
ROUTER_ADVERT = 134


def _only(kind: int) -> bytes:
    # struct icmp6_filter: 256 bits, a set bit BLOCKS that type.
    words = [0xFFFFFFFF] * 8
    words[kind >> 5] &= ~(1 << (kind & 31)) & 0xFFFFFFFF
    return struct.pack("8I", *words)


class RaListener:
    """Router Advertisements arriving on `ifname` (in the namespace this runs in)."""

    def __init__(self, ifname: str):
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        try:
            self.sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, _only(ROUTER_ADVERT))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        except OSError:
            self.sock.close()
            raise

    def receive(self, timeout: float | None = None) -> tuple[str, bytes] | None:
        """(source address, the ICMPv6 message) of the next RA, or None after `timeout` seconds."""
        self.sock.settimeout(timeout)
        try:
            data, addr = self.sock.recvfrom(65535)
        except socket.timeout:
            return None
        return addr[0], data

    def close(self) -> None:
        self.sock.close()


def send_ra(ifname: str, message: bytes, hop_limit: int = 255) -> None:
    """Multicast one RA to all nodes on `ifname` (from its link-local address), as a router does."""
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
        # Hosts drop an RA whose hop limit is not 255 (RFC 4861 6.1.2).
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, hop_limit)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        s.sendto(message, ("ff02::1", 0, 0, socket.if_nametoindex(ifname)))
