"""A throwaway "box" for datapath tests and benchmarks: namespaces and veths.

`DpBox(ports)` makes a namespace `dpbox<pid><rand>` with a Linux bridge
`br0` (br_netfilter's bridge-nf-call-* off, as the appliance does) and, for
every port, a veth whose box end carries the port's name (enslaved to
br0) and whose other end is `eth0` in its own namespace `<box>-<port>`
with the given address and MAC.  Everything is removed by `close()`, also
after a failure half-way through building it.

Sockets are opened inside a namespace with `socket_in(ns, ...)`; traffic
stays inside these namespaces.
"""
from __future__ import annotations

import os
import random
import socket
import subprocess
from dataclasses import dataclass

from pyroute2.netns import create_socket

ETH_P_ALL = 0x0003


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


@dataclass(frozen=True)
class PortSpec:
    name: str
    ip: str | None      # "192.168.1.50/24" on the far end, or None
    mac: str


# The seed's ports and who sits behind them (modem and virtual gateway both
# carry the modem's address and MAC, as in the seed design).
SEED_PORTS = (
    PortSpec("uplink", "192.168.1.1/24", "18:00:00:00:00:e8"),
    PortSpec("downlink", "192.168.1.50/24", "02:00:00:00:00:50"),
    PortSpec("admin", "192.168.1.8/24", "02:00:00:00:00:08"),
    PortSpec("vgw", "192.168.1.1/24", "18:00:00:00:00:e8"),
    PortSpec("vproxy", "192.168.1.9/24", "d6:00:00:00:00:bf"),
)


class DpBox:
    def __init__(self, ports=SEED_PORTS, prefix: str = "dpbox"):
        self.box = f"{prefix}{os.getpid()}{random.randrange(1 << 20):05x}"
        self.ports = {p.name: p for p in ports}
        self.namespaces = [self.box]
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def ns(self, port: str) -> str:
        return f"{self.box}-{port}"

    def _build(self) -> None:
        sh("ip", "netns", "add", self.box)
        self.exec(self.box, "ip", "link", "set", "lo", "up")
        self.exec(self.box, "ip", "link", "add", "br0", "type", "bridge")
        for key in ("iptables", "ip6tables", "arptables"):
            self.exec(self.box, "sysctl", "-qw", f"net.bridge.bridge-nf-call-{key}=0", check=False)
        for p in self.ports.values():
            far = self.ns(p.name)
            sh("ip", "netns", "add", far)
            self.namespaces.append(far)
            self.exec(self.box, "ip", "link", "add", p.name, "type", "veth",
                      "peer", "name", "eth0", "netns", far)
            self.exec(self.box, "ip", "link", "set", p.name, "master", "br0", "up")
            self.exec(far, "ip", "link", "set", "lo", "up")
            self.exec(far, "ip", "link", "set", "eth0", "address", p.mac, "up")
            if p.ip:
                self.exec(far, "ip", "addr", "add", p.ip, "dev", "eth0")
            # No IPv6 chatter (router solicitations, DAD) in the captures.
            self.exec(far, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", check=False)
        self.exec(self.box, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", check=False)
        self.exec(self.box, "ip", "link", "set", "br0", "up")

    def exec(self, ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", ns, *args, check=check)

    def neigh(self, port: str, ip: str, mac: str) -> None:
        """A static neighbour entry behind `port` (no ARP needed in a test)."""
        self.exec(self.ns(port), "ip", "neigh", "replace", ip, "lladdr", mac,
                  "dev", "eth0", "nud", "permanent")

    def socket_in(self, port: str, family=socket.AF_INET, kind=socket.SOCK_DGRAM,
                  proto: int = 0) -> socket.socket:
        return create_socket(self.ns(port), family, kind, proto)

    def capture(self, port: str) -> socket.socket:
        """An AF_PACKET socket seeing every frame arriving at `port`'s far end."""
        s = self.socket_in(port, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind(("eth0", 0))
        s.setblocking(False)
        return s

    def close(self) -> None:
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)
        self.namespaces = []


def drain(sock: socket.socket, outgoing: bool = False) -> list[bytes]:
    """Frames waiting on a non-blocking capture socket: those it received, or (`outgoing`)
    those its end transmitted."""
    out = []
    while True:
        try:
            data, addr = sock.recvfrom(65535)
        except BlockingIOError:
            return out
        if (addr[2] == socket.PACKET_OUTGOING) == outgoing:
            out.append(data)
