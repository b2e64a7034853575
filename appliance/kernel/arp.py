"""ARP at the kernel boundary: ask, announce, and watch the gateway's frames.

- `probe`: find a neighbour's MAC by an ARP probe (RFC 5227): sender IP
  0.0.0.0, so the box never emits ARP with a source IP that is not its own
  (the seed's NetworkManager lesson). Linux and common modems answer probes
  like any request.
- `request`: one ordinary ARP request from a link, as its own host (its MAC
  and address): what the box's admin stack sends anyway.
- `announce`: a gratuitous ARP (sender = target = the address) from a link.
- `GatewayTap`: the frames arriving on a link from one address (ARP with it
  as sender, IPv4 with it as source), each with its source MAC; a classic
  BPF filter on the socket keeps every other frame out of user space.

    python -m appliance.kernel.arp IFNAME IP [TIMEOUT]   (prints the MAC)
"""
from __future__ import annotations

import ctypes
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass

from appliance.kernel.setns import in_netns

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26
BROADCAST = b"\xff" * 6


def probe(ifname: str, ip: str, timeout: float = 1.0, tries: int = 3) -> str | None:
    target = socket.inet_aton(ip)
    # ETH_P_ALL: on a bridge port, a socket for one protocol sees nothing
    # (the bridge takes the frame first); taps for all protocols see it.
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as s:
        s.bind((ifname, 0))
        # The link's own MAC, from the socket: /sys may belong to another namespace.
        own = s.getsockname()[4]
        frame = (b"\xff" * 6 + own + struct.pack("!H", ETH_P_ARP)
                 + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + own + b"\0\0\0\0" + b"\0" * 6 + target)
        frame += b"\0" * (60 - len(frame))
        for _ in range(tries):
            s.send(frame)
            deadline = time.monotonic() + timeout / tries
            while (left := deadline - time.monotonic()) > 0:
                s.settimeout(left)
                try:
                    data = s.recv(1500)
                except socket.timeout:
                    break
                if len(data) < 42 or data[12:14] != b"\x08\x06":
                    continue
                op = struct.unpack("!H", data[20:22])[0]
                if op == 2 and data[28:32] == target:
                    return _mac_text(data[22:28])
    return None


def _mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _arp_frame(own: bytes, dst: bytes, sender_ip: bytes, target_ip: bytes, op: int = 1) -> bytes:
    frame = (dst + own + struct.pack("!H", ETH_P_ARP) + struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, op)
             + own + sender_ip + b"\0" * 6 + target_ip)
    return frame + b"\0" * (60 - len(frame))


def _send_arp(ifname: str, sender_ip: str, target_ip: str) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as s:
        s.bind((ifname, 0))
        own = s.getsockname()[4]
        s.send(_arp_frame(own, BROADCAST, socket.inet_aton(sender_ip), socket.inet_aton(target_ip)))


def request(ns: str | None, ifname: str, sender_ip: str, target_ip: str) -> None:
    """One broadcast ARP request from `ifname` (its own MAC) as `sender_ip`: who has `target_ip`?"""
    in_netns(ns, _send_arp, ifname, sender_ip, target_ip)


def announce(ns: str | None, ifname: str, ip: str) -> None:
    """A gratuitous ARP from `ifname`: neighbours holding `ip` update its MAC to the link's."""
    in_netns(ns, _send_arp, ifname, ip, ip)


@dataclass(frozen=True)
class Sighting:
    """A frame from the watched address: its source MAC, and whether it was ARP."""

    mac: str
    arp: bool


def _filter(ip: bytes) -> list[tuple[int, int, int, int]]:
    """Classic BPF: incoming ARP with sender `ip`, or IPv4 with source `ip`; nothing else."""
    k = struct.unpack("!I", ip)[0]
    ld_w, ld_h, jeq, ret = 0x20, 0x28, 0x15, 0x06
    pkttype = 0xFFFFF000 + 4  # SKF_AD_OFF + SKF_AD_PKTTYPE
    return [
        (ld_w, 0, 0, pkttype),
        (jeq, 8, 0, PACKET_OUTGOING),   # the box's own frames leaving: never
        (ld_h, 0, 0, 12),
        (jeq, 0, 2, ETH_P_ARP),
        (ld_w, 0, 0, 28),               # ARP sender IP
        (jeq, 3, 4, k),
        (jeq, 0, 3, ETH_P_IP),
        (ld_w, 0, 0, 26),               # IPv4 source
        (jeq, 0, 1, k),
        (ret, 0, 0, 64),
        (ret, 0, 0, 0),
    ]


class GatewayTap:
    """Frames from `ip` arriving on `ifname` in namespace `ns` (passive: it sends nothing).

    A tap for all protocols sees a bridge port's frames before the bridge
    and the datapath take them, dropped ones too.
    """

    def __init__(self, ns: str | None, ifname: str, ip: str):
        self.ifname = ifname
        self._sock = in_netns(ns, socket.socket, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            insns = b"".join(struct.pack("HBBI", *i) for i in _filter(socket.inet_aton(ip)))
            buf = ctypes.create_string_buffer(insns, len(insns))
            self._sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                                  struct.pack("HL", len(insns) // 8, ctypes.addressof(buf)))
            self._sock.bind((ifname, 0))
            self._sock.setblocking(False)
        except OSError:
            self._sock.close()
            raise

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self, timeout: float) -> list[Sighting]:
        """What arrived: waits up to `timeout` for a first frame, then takes all that are queued."""
        out: list[Sighting] = []
        if not select.select([self._sock], [], [], timeout)[0]:
            return out
        while True:
            try:
                data, addr = self._sock.recvfrom(64)
            except BlockingIOError:
                return out
            if addr[2] == PACKET_OUTGOING or len(data) < 14:
                continue
            out.append(Sighting(_mac_text(data[6:12]), data[12:14] == b"\x08\x06"))

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "GatewayTap":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    mac = probe(argv[0], argv[1], float(argv[2]) if len(argv) == 3 else 1.0)
    if mac is None:
        print(f"no ARP reply for {argv[1]} on {argv[0]}", file=sys.stderr)
        return 1
    print(mac)
    return 0


if __name__ == "__main__":
    sys.exit(main())
