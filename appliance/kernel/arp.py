"""Find a neighbour's MAC by ARP without borrowing anyone's address.

The request is an ARP probe (RFC 5227): sender IP 0.0.0.0, so the box never
emits ARP with a source IP that is not its own (the seed's NetworkManager
lesson). Linux and common modems answer probes like any request.

    python -m appliance.kernel.arp IFNAME IP [TIMEOUT]   (prints the MAC)
"""
from __future__ import annotations

import socket
import struct
import sys
import time

ETH_P_ARP = 0x0806
ETH_P_ALL = 0x0003


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
                    return ":".join(f"{b:02x}" for b in data[22:28])
    return None


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
