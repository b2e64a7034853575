"""Packets for the classifier and the datapath tests: fields <-> frame bytes.

A `Packet` is an input port plus header fields under their canonical names
(see `fields.py`), exactly what a `Match` is compared against. It is built
from fields (``Packet(in_port=1, dl_type=0x0800, nw_proto=17, ...)``) or
parsed from a raw Ethernet frame (``Packet.from_bytes(frame, in_port=1)``),
and serialised back with ``to_bytes()``, which is what the datapath tests
feed to BPF_PROG_TEST_RUN and compare the program's output frames against.

Parsing extracts what Open vSwitch's flow extraction does for these
headers: Ethernet, one 802.1Q tag, ARP (Ethernet/IPv4 only), IPv4
(nw_tos is the DSCP bits, `tos & 0xfc`), IPv6 (with its flow label),
TCP, UDP, ICMP, ICMPv6 and neighbour discovery (`nd_target` and the
source/target link-layer options of a solicitation or advertisement, as
OVS's parse_icmpv6); transport ports are read only from the first fragment.

A packet parsed from bytes keeps its bytes past the Ethernet/VLAN header,
so rewriting L2 fields (all the actions can rewrite) serialises back to the
same frame with only those bytes changed. Changing an L3/L4 field drops
them and the headers are rebuilt from the fields.

Packets are immutable: `replace()` returns a new one, so a classifier
result can keep the packet as it was at each output without copying.
"""
from __future__ import annotations

import ipaddress
import struct
from typing import Mapping

from . import fields as F
from .fields import (ETH_TYPE_ARP, ETH_TYPE_IP, ETH_TYPE_IPV6, ETH_TYPE_VLAN,
                     FIELD_BY_NAME, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP,
                     IPPROTO_UDP, VLAN_CFI)

# Fields whose change leaves the L3 bytes as they are (registers are no bytes at all).
L2_FIELDS = frozenset({"in_port", "dl_src", "dl_dst", "vlan_tci", "vlan_tci1", *F.REGS})


class PacketError(ValueError):
    """A frame or field that cannot be a packet; names the problem."""


class Packet:
    """in_port + header fields (canonical name -> int), absent fields read 0."""

    __slots__ = ("fields", "l3", "payload")

    def __init__(self, fields: Mapping[str, int] | None = None, *,
                 l3: bytes | None = None, payload: bytes = b"", **kw: int):
        f = dict(fields or {})
        f.update(kw)
        for name, value in f.items():
            fld = FIELD_BY_NAME.get(name)
            if fld is None:
                raise PacketError(f"unknown packet field {name!r}")
            if not isinstance(value, int) or value < 0 or value > fld.full_mask:
                raise PacketError(f"{name}: value {value!r} does not fit in {fld.width} bits")
        self.fields: dict[str, int] = f
        self.l3 = l3
        self.payload = payload

    # -- access ----------------------------------------------------------------

    def __getitem__(self, name: str) -> int:
        return self.fields.get(name, 0)

    def get(self, name: str, default: int = 0) -> int:
        return self.fields.get(name, default)

    @property
    def in_port(self) -> int:
        return self.fields.get("in_port", 0)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Packet) and _nonzero(self.fields) == _nonzero(other.fields)
                and self.payload == other.payload)

    def __hash__(self) -> int:
        return hash(tuple(sorted(_nonzero(self.fields).items())))

    def __repr__(self) -> str:
        return f"Packet({self.to_ofctl()!r})"

    def replace(self, **changes: int) -> "Packet":
        """A copy with some fields changed (L2-only changes keep the L3 bytes)."""
        f = dict(self.fields)
        f.update(changes)
        keep_l3 = self.l3 if L2_FIELDS.issuperset(changes) else None
        p = Packet.__new__(Packet)
        p.fields, p.l3, p.payload = f, keep_l3, self.payload
        return p

    # -- text ------------------------------------------------------------------

    def to_ofctl(self, port_names: Mapping[int, str] | None = None) -> str:
        """The packet as an `ofproto/trace` flow string.

        Uses `udp_dst`/`tcp_dst` (not `tp_dst`) and `arp_spa`, which is what
        ovs-appctl's trace parser accepts, and lists every field so the
        trace sees exactly this packet.
        """
        from .flows import format_port
        f = self.fields
        # Registers first, as OVS prints them; a nonzero one is the value the
        # pipeline starts with (the box's health register, reg15).
        parts = [f"{r}={F.format_hexn(f[r])}" for r in F.REGS if f.get(r)]
        parts.append(f"in_port={format_port(f.get('in_port', 0), port_names)}")
        tci = f.get("vlan_tci", 0)
        if tci:
            parts.append(f"vlan_tci=0x{tci:04x}")
        parts.append(f"dl_src={F.format_mac(f.get('dl_src', 0))}")
        parts.append(f"dl_dst={F.format_mac(f.get('dl_dst', 0))}")
        dl_type = f.get("dl_type", 0)
        parts.append(f"dl_type=0x{dl_type:04x}")
        if dl_type == ETH_TYPE_IP:
            parts.append(f"nw_src={F.format_ipv4(f.get('nw_src', 0))}")
            parts.append(f"nw_dst={F.format_ipv4(f.get('nw_dst', 0))}")
            parts.append(f"nw_proto={f.get('nw_proto', 0)}")
            parts.append(f"nw_tos={f.get('nw_tos', 0)}")
            parts.append(f"nw_ttl={f.get('nw_ttl', 64)}")
        elif dl_type == ETH_TYPE_IPV6:
            parts.append(f"ipv6_src={F.format_ipv6(f.get('ipv6_src', 0))}")
            parts.append(f"ipv6_dst={F.format_ipv6(f.get('ipv6_dst', 0))}")
            parts.append(f"ipv6_label=0x{f.get('ipv6_label', 0):05x}")
            parts.append(f"nw_proto={f.get('nw_proto', 0)}")
            parts.append(f"nw_ttl={f.get('nw_ttl', 64)}")
        elif dl_type == ETH_TYPE_ARP:
            parts.append(f"arp_spa={F.format_ipv4(f.get('arp_spa', 0))}")
            parts.append(f"arp_tpa={F.format_ipv4(f.get('arp_tpa', 0))}")
            parts.append(f"arp_op={f.get('arp_op', 0)}")
            parts.append(f"arp_sha={F.format_mac(f.get('arp_sha', 0))}")
            parts.append(f"arp_tha={F.format_mac(f.get('arp_tha', 0))}")
        proto = f.get("nw_proto", 0) if dl_type in (ETH_TYPE_IP, ETH_TYPE_IPV6) else None
        if proto == IPPROTO_TCP:
            parts.append(f"tcp_src={f.get('tp_src', 0)},tcp_dst={f.get('tp_dst', 0)}")
        elif proto == IPPROTO_UDP:
            parts.append(f"udp_src={f.get('tp_src', 0)},udp_dst={f.get('tp_dst', 0)}")
        elif proto == IPPROTO_ICMP and dl_type == ETH_TYPE_IP:
            parts.append(f"icmp_type={f.get('icmp_type', 0)},icmp_code={f.get('icmp_code', 0)}")
        elif proto == IPPROTO_ICMPV6 and dl_type == ETH_TYPE_IPV6:
            parts.append(f"icmpv6_type={f.get('icmp_type', 0)},icmpv6_code={f.get('icmp_code', 0)}")
            # OVS's trace parser takes the ND fields only after a type and
            # code that make them meaningful ("prerequisites not met").
            for name in ("nd_target", "nd_sll", "nd_tll"):
                if FIELD_BY_NAME[name].prereq.holds_for(f):
                    parts.append(f"{name}={_format_text(name, f.get(name, 0))}")
        return ",".join(parts)

    # -- bytes -----------------------------------------------------------------

    @classmethod
    def from_bytes(cls, frame: bytes, in_port: int = 0) -> "Packet":
        """Parse an Ethernet frame. Raises PacketError on a truncated header."""
        if len(frame) < 14:
            raise PacketError(f"frame of {len(frame)} bytes is shorter than an Ethernet header")
        f: dict[str, int] = {"in_port": in_port}
        f["dl_dst"] = int.from_bytes(frame[0:6], "big")
        f["dl_src"] = int.from_bytes(frame[6:12], "big")
        (eth_type,) = struct.unpack_from("!H", frame, 12)
        off = 14
        if eth_type in (ETH_TYPE_VLAN, 0x88A8):
            if len(frame) < 18:
                raise PacketError("frame truncated inside the 802.1Q tag")
            tci, eth_type = struct.unpack_from("!HH", frame, 14)
            f["vlan_tci"] = tci | VLAN_CFI
            off = 18
            if eth_type in (ETH_TYPE_VLAN, 0x88A8) and len(frame) >= 22:
                tci, eth_type = struct.unpack_from("!HH", frame, 18)
                f["vlan_tci1"] = tci | VLAN_CFI
                off = 22
        f["dl_type"] = eth_type
        l3 = bytes(frame[off:])
        _parse_l3(f, eth_type, l3)
        return cls(f, l3=l3)

    def to_bytes(self) -> bytes:
        """The frame: Ethernet (+ 802.1Q if vlan_tci) + L3 bytes (kept or built)."""
        f = self.fields
        out = f.get("dl_dst", 0).to_bytes(6, "big") + f.get("dl_src", 0).to_bytes(6, "big")
        tci = f.get("vlan_tci", 0)
        if tci & VLAN_CFI:
            out += struct.pack("!HH", ETH_TYPE_VLAN, tci & ~VLAN_CFI & 0xFFFF)
            inner = f.get("vlan_tci1", 0)
            if inner & VLAN_CFI:
                out += struct.pack("!HH", ETH_TYPE_VLAN, inner & ~VLAN_CFI & 0xFFFF)
        out += struct.pack("!H", f.get("dl_type", 0))
        l3 = self.l3 if self.l3 is not None else _build_l3(f, self.payload)
        return out + l3


def _format_text(name: str, value: int) -> str:
    return F.format_ipv6(value) if FIELD_BY_NAME[name].kind == F.IPV6 else F.format_mac(value)


def _nonzero(f: Mapping[str, int]) -> dict[str, int]:
    return {k: v for k, v in f.items() if v}


def _parse_l3(f: dict[str, int], eth_type: int, b: bytes) -> None:
    if eth_type == ETH_TYPE_ARP:
        if len(b) < 28:
            return
        htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", b, 0)
        if htype == 1 and ptype == ETH_TYPE_IP and hlen == 6 and plen == 4:
            f["arp_op"] = op
            f["arp_sha"] = int.from_bytes(b[8:14], "big")
            f["arp_spa"] = int.from_bytes(b[14:18], "big")
            f["arp_tha"] = int.from_bytes(b[18:24], "big")
            f["arp_tpa"] = int.from_bytes(b[24:28], "big")
        return
    if eth_type == ETH_TYPE_IP:
        if len(b) < 20 or b[0] >> 4 != 4:
            return
        ihl = (b[0] & 0x0F) * 4
        if ihl < 20 or len(b) < ihl:
            return
        f["nw_tos"] = b[1] & 0xFC
        f["nw_ttl"] = b[8]
        f["nw_proto"] = b[9]
        f["nw_src"] = int.from_bytes(b[12:16], "big")
        f["nw_dst"] = int.from_bytes(b[16:20], "big")
        (frag,) = struct.unpack_from("!H", b, 6)
        if frag & 0x3FFF:
            return  # a fragment, the first one too (OVS's frag handling "normal"), has no transport fields
        _parse_l4(f, b[9], b[ihl:])
        return
    if eth_type == ETH_TYPE_IPV6:
        if len(b) < 40:
            return
        f["ipv6_src"] = int.from_bytes(b[8:24], "big")
        f["ipv6_dst"] = int.from_bytes(b[24:40], "big")
        walked = _ipv6_ext_headers(b)
        if walked is None:
            return  # an extension header cut off: the addresses alone (OVS: truncated)
        proto, off, fragment = walked
        f["nw_tos"] = ((int.from_bytes(b[0:2], "big") >> 4) & 0xFF) & 0xFC
        f["ipv6_label"] = int.from_bytes(b[0:4], "big") & 0xFFFFF
        f["nw_ttl"] = b[7]
        f["nw_proto"] = proto
        if fragment:
            return  # a fragment has no transport fields (OVS's frag handling "normal")
        # ND behind an extension header: its type, not its fields (the datapath's bound).
        _parse_l4(f, proto, b[off:], ipv6=off == 40)


# IPv6 extension headers OVS walks past (parse_ipv6_ext_hdrs): hop-by-hop,
# routing, destination options (8-byte units), AH (4-byte units), fragment.
IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_AH, IPPROTO_DSTOPTS = 0, 43, 44, 51, 60
IPV6_EXT_HEADERS = frozenset({IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_AH, IPPROTO_DSTOPTS})
# The datapath reads a bounded head of the frame: at most 6 extension headers,
# and the transport header starting at most 96 bytes after the IPv6 header's
# start (dp_runtime.h's DP_IPV6_EXTS, DP_EXT_END); past that, as cut off
# (OVS reads on: the one place the reference follows the datapath, not OVS).
IPV6_EXTS, IPV6_EXT_END = 6, 96


def _ipv6_ext_headers(b: bytes) -> tuple[int, int, bool] | None:
    """(the transport protocol, its offset, a fragment?) after the extension headers of the IPv6
    packet `b`; (44, offset, True) for a later fragment; None when a header is cut off or out of
    reach."""
    proto, off, fragment = b[6], 40, False
    for _ in range(IPV6_EXTS):
        if proto not in IPV6_EXT_HEADERS:
            break
        if off > IPV6_EXT_END or len(b) < off + 8:
            return None
        nxt, size = b[off], b[off + 1]
        if proto == IPPROTO_FRAGMENT:
            offlg = int.from_bytes(b[off + 2:off + 4], "big")
            off += 8
            if offlg & 0xFFF8:
                return IPPROTO_FRAGMENT, off, True
            fragment = fragment or offlg != 0   # a first fragment (an atomic one is none)
        elif proto == IPPROTO_AH:
            off += (size + 2) * 4
        else:
            off += (size + 1) * 8
        proto = nxt
    if proto in IPV6_EXT_HEADERS or off > IPV6_EXT_END:
        return None
    return proto, off, fragment


def _parse_l4(f: dict[str, int], proto: int, b: bytes, ipv6: bool = False) -> None:
    if proto in (IPPROTO_TCP, IPPROTO_UDP):
        if len(b) >= 4:
            f["tp_src"], f["tp_dst"] = struct.unpack_from("!HH", b, 0)
    elif proto == IPPROTO_ICMP:
        if len(b) >= 2:
            f["icmp_type"], f["icmp_code"] = b[0], b[1]
    elif proto == IPPROTO_ICMPV6:
        # OVS reads ICMPv6 only with its 8-byte header (type, code,
        # checksum, the 4 bytes of flags/reserved).
        if len(b) >= 8:
            f["icmp_type"], f["icmp_code"] = b[0], b[1]
            # ND on IPv6 only (OVS reads it after IPv4 too, where no flow
            # can ask for it).
            if ipv6 and b[1] == 0 and b[0] in (F.ND_NEIGHBOR_SOLICIT, F.ND_NEIGHBOR_ADVERT):
                _parse_nd(f, b[8:])


# ND options that carry a link-layer address (RFC 4861 4.6.1), one 8-byte unit.
ND_OPT_SOURCE_LINKADDR = 1
ND_OPT_TARGET_LINKADDR = 2


def _parse_nd(f: dict[str, int], b: bytes) -> None:
    """The target and the link-layer options after an NS/NA header, as OVS's
    parse_icmpv6: a truncated target leaves all three 0; an option of
    length 0 or past the end stops the walk; a second source (or target)
    link-layer option makes the message invalid and all three read 0."""
    if len(b) < 16:
        return
    target = int.from_bytes(b[0:16], "big")
    lla = {ND_OPT_SOURCE_LINKADDR: 0, ND_OPT_TARGET_LINKADDR: 0}
    off = 16
    while len(b) - off >= 8:
        kind, units = b[off], b[off + 1]
        length = units * 8
        if not length or length > len(b) - off:
            break
        if kind in lla and length == 8:
            if lla[kind]:
                return
            lla[kind] = int.from_bytes(b[off + 2:off + 8], "big")
        off += length
    f["nd_target"] = target
    f["nd_sll"] = lla[ND_OPT_SOURCE_LINKADDR]
    f["nd_tll"] = lla[ND_OPT_TARGET_LINKADDR]


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def _build_l4(f: Mapping[str, int], proto: int, payload: bytes,
              pseudo: bytes) -> bytes:
    if proto == IPPROTO_UDP:
        length = 8 + len(payload)
        hdr = struct.pack("!HHHH", f.get("tp_src", 0), f.get("tp_dst", 0), length, 0)
        csum = _checksum(pseudo + struct.pack("!H", length) + hdr + payload) or 0xFFFF
        return hdr[:6] + struct.pack("!H", csum) + payload
    if proto == IPPROTO_TCP:
        hdr = struct.pack("!HHIIBBHHH", f.get("tp_src", 0), f.get("tp_dst", 0),
                          0, 0, 5 << 4, 0x02, 65535, 0, 0)
        csum = _checksum(pseudo + struct.pack("!H", len(hdr) + len(payload)) + hdr + payload)
        return hdr[:16] + struct.pack("!H", csum) + hdr[18:] + payload
    if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        hdr = struct.pack("!BBHI", f.get("icmp_type", 0), f.get("icmp_code", 0), 0, 0)
        if proto == IPPROTO_ICMPV6 and F.FIELD_BY_NAME["nd_target"].prereq.holds_for(f):
            # As OVS's flow_compose: the target, then the options it has.
            payload = f.get("nd_target", 0).to_bytes(16, "big") + b"".join(
                struct.pack("!BB", kind, 1) + f.get(name, 0).to_bytes(6, "big")
                for kind, name in ((ND_OPT_SOURCE_LINKADDR, "nd_sll"), (ND_OPT_TARGET_LINKADDR, "nd_tll"))
                if f.get(name, 0)) + payload
        if proto == IPPROTO_ICMP:
            csum = _checksum(hdr + payload)
        else:
            csum = _checksum(pseudo + struct.pack("!H", len(hdr) + len(payload)) + hdr + payload)
        return hdr[:2] + struct.pack("!H", csum) + hdr[4:] + payload
    return payload


def _build_l3(f: Mapping[str, int], payload: bytes) -> bytes:
    eth_type = f.get("dl_type", 0)
    if eth_type == ETH_TYPE_ARP:
        return struct.pack("!HHBBH", 1, ETH_TYPE_IP, 6, 4, f.get("arp_op", 0)) + \
            f.get("arp_sha", 0).to_bytes(6, "big") + f.get("arp_spa", 0).to_bytes(4, "big") + \
            f.get("arp_tha", 0).to_bytes(6, "big") + f.get("arp_tpa", 0).to_bytes(4, "big") + payload
    if eth_type == ETH_TYPE_IP:
        proto = f.get("nw_proto", 0)
        src = f.get("nw_src", 0).to_bytes(4, "big")
        dst = f.get("nw_dst", 0).to_bytes(4, "big")
        l4 = _build_l4(f, proto, payload, src + dst + struct.pack("!BB", 0, proto))
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, f.get("nw_tos", 0), 20 + len(l4), 0,
                          0x4000, f.get("nw_ttl", 64), proto, 0, src, dst)
        hdr = hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:]
        return hdr + l4
    if eth_type == ETH_TYPE_IPV6:
        proto = f.get("nw_proto", 0)
        src = f.get("ipv6_src", 0).to_bytes(16, "big")
        dst = f.get("ipv6_dst", 0).to_bytes(16, "big")
        l4 = _build_l4(f, proto, payload, src + dst + struct.pack("!BBB", 0, 0, proto))
        first = (6 << 28) | (f.get("nw_tos", 0) << 20) | f.get("ipv6_label", 0)
        return struct.pack("!IHBB", first, len(l4), proto, f.get("nw_ttl", 64)) + src + dst + l4
    return payload


def packet_from_text(text: str, port_map: Mapping[str, int] | None = None) -> Packet:
    """A packet from a trace-style flow string ('in_port=1,udp,nw_dst=...').

    Accepts what the parser accepts for a match (prerequisites included),
    but every field must be exact (no masks). Raises FlowSyntaxError or
    PacketError.
    """
    from .odpflow import fields as odp_fields, looks_like_odp
    from .parser import parse_match
    if looks_like_odp(text):
        try:
            return Packet(odp_fields(text))
        except ValueError as e:
            raise PacketError(str(e)) from None
    match = parse_match(text, port_map)
    for name, mask in match.masks.items():
        if mask != FIELD_BY_NAME[name].full_mask and name != "vlan_tci":
            raise PacketError(f"{name}: a packet field takes an exact value, not a mask")
    f = dict(match.values)
    if f.get("dl_type") in (ETH_TYPE_IP, ETH_TYPE_IPV6):
        f.setdefault("nw_ttl", 64)
    return Packet(f)


def ipv4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def mac(text: str) -> int:
    return int(text.replace(":", "").replace("-", ""), 16)
