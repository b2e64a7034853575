"""IPv6 frames with extension headers (hop-by-hop, routing, destination options, AH, fragments)
in front of UDP, TCP, ICMPv6 and MLD, and a table that tells their transport fields apart: judged
by Open vSwitch (`tests/integration/switch/test_ovs_oracle.py`, whole frames it parses as we do)
and by the compiled datapath against the reference (`.../datapath/test_equivalence.py`, every frame,
whole and cut)."""
from __future__ import annotations

import struct
from ipaddress import IPv6Address

EXT_TABLE = """\
priority=50,udp6,tp_dst=53,actions=output:5
priority=45,tcp6,tp_dst=80,actions=output:4
priority=40,icmp6,icmp_type=143,actions=output:3
priority=35,icmp6,icmp_type=128,icmp_code=0,actions=output:2
priority=30,ipv6,nw_proto=44,actions=output:1
priority=25,ipv6,nw_proto=0,actions=drop
priority=20,ipv6,nw_proto=60,actions=output:1,output:2
priority=15,ipv6,ipv6_label=0x00007,actions=resubmit(,1)
priority=0,actions=NORMAL
table=1,priority=10,udp6,tp_src=5353,actions=output:3
table=1,priority=0,actions=drop
"""

HOPOPTS, ROUTING, FRAGMENT, AH, DSTOPTS = 0, 43, 44, 51, 60
UDP, TCP, ICMPV6 = 17, 6, 58


def _ext(kind: int, nxt: int, units: int = 0, frag: int = 0) -> bytes:
    """One extension header of `kind` whose next header is `nxt`: `units` its length field
    (8-byte units past the first 8; AH: 4-byte units past the first 8), `frag` a fragment
    header's offset-and-flags word."""
    if kind == FRAGMENT:
        return struct.pack("!BBHI", nxt, 0, frag, 0x1234)
    if kind == AH:
        return struct.pack("!BBH", nxt, units, 0) + bytes((units + 2) * 4 - 4)
    if kind == ROUTING:   # type 0 with no segments left: passed over
        return struct.pack("!BBBB", nxt, units, 0, 0) + bytes((units + 1) * 8 - 4)
    return struct.pack("!BB", nxt, units) + bytes([1, (units + 1) * 8 - 4]) + bytes((units + 1) * 8 - 4)


def _chain(kinds: list[tuple], last: int, cut: bool = False) -> tuple[int, bytes]:
    """(the IPv6 header's next header, the headers' bytes) for `kinds`: (kind, units, frag) each.
    `cut`: the last header's length field claims 200 units, more than the packet holds."""
    parts = []
    for i in reversed(range(len(kinds))):
        kind, units, frag = kinds[i]
        parts.insert(0, bytearray(_ext(kind, last, units, frag)))
        last = kind
    if cut and parts:
        parts[-1][1] = 200
    return last, b"".join(parts)


TRANSPORTS = {
    "udp/53": (UDP, struct.pack("!HHHH", 40000, 53, 8 + 12, 0) + bytes(12)),
    "udp/5353": (UDP, struct.pack("!HHHH", 5353, 5353, 8 + 4, 0) + bytes(4)),
    "tcp/80": (TCP, struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 5 << 4, 2, 65535, 0, 0)),
    "echo": (ICMPV6, struct.pack("!BBHHH", 128, 0, 0, 1, 1) + bytes(8)),
    "mld": (ICMPV6, struct.pack("!BBHHH", 143, 0, 0, 0, 1) + struct.pack("!BBH", 4, 0, 0)
            + IPv6Address("ff02::fb").packed),
}

CHAINS = {
    "none": [],
    "hop-by-hop": [(HOPOPTS, 0, 0)],
    "destination options": [(DSTOPTS, 0, 0)],
    "destination options, 16 bytes": [(DSTOPTS, 1, 0)],
    "routing": [(ROUTING, 0, 0)],
    "AH": [(AH, 4, 0)],
    "hop-by-hop, destination options": [(HOPOPTS, 0, 0), (DSTOPTS, 0, 0)],
    "first fragment": [(FRAGMENT, 0, 0x0001)],
    "atomic fragment": [(FRAGMENT, 0, 0x0000)],
    "later fragment": [(FRAGMENT, 0, 0x00A8)],
    "hop-by-hop, later fragment": [(HOPOPTS, 0, 0), (FRAGMENT, 0, 0x0109)],
    "six headers": [(HOPOPTS, 0, 0)] + [(DSTOPTS, 0, 0)] * 5,
}
# Where the datapath stops short of OVS (it reads a frame's first 128 bytes): the reference
# follows the datapath, OVS reads on. Judged against the reference only.
BEYOND_OVS = {
    "seven headers": [(HOPOPTS, 0, 0)] + [(DSTOPTS, 0, 0)] * 6,
    "destination options, 64 bytes": [(DSTOPTS, 7, 0)],
}


def frame(chain: list[tuple], transport: str, label: int = 0, cut_header: bool = False) -> bytes:
    proto, payload = TRANSPORTS[transport]
    nxt, headers = _chain(chain, proto, cut_header)
    body = headers + payload
    ip6 = struct.pack("!IHBB", 6 << 28 | 0x2 << 20 | label, len(body), nxt, 64) + \
        IPv6Address("2001:db8:1::50").packed + IPv6Address("2001:db8:1::1").packed
    return bytes.fromhex("1800000000e8" "020000000050") + b"\x86\xdd" + ip6 + body


def ext_frames(beyond_ovs: bool = False) -> list[tuple[str, bytes]]:
    chains = {**CHAINS, **(BEYOND_OVS if beyond_ovs else {})}
    out = []
    for name, chain in chains.items():
        for transport in TRANSPORTS:
            for label in (0, 7):
                out.append((f"{name} / {transport} / label {label}", frame(chain, transport, label)))
                if chain and chain[-1][0] != FRAGMENT:
                    out.append((f"{name} (cut off) / {transport}", frame(chain, transport, label, True)))
    return out
