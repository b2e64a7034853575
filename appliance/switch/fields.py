"""The match fields of the flow language: names, widths, prerequisites.

This table is the contract shared by the parser, the reference classifier
and the compiled datapath: a field's canonical name is the one
`ovs-ofctl dump-flows` prints, values are plain unsigned ints of ``width``
bits (MACs as 48-bit ints, IPv4 as 32-bit, IPv6 as 128-bit), and a field
that is absent from a packet reads as 0, as in Open vSwitch's `struct flow`.

Unlike Open vSwitch, which stores ARP's addresses in `nw_src`/`nw_dst`,
ICMP's type/code in `tp_src`/`tp_dst` and ND's link-layer addresses in
`arp_sha`/`arp_tha`, every field here has its own slot: `arp_spa`,
`arp_tpa`, `arp_op`, `icmp_type`, `icmp_code`, `nd_sll`, `nd_tll`. ICMPv4
and ICMPv6 share `icmp_type`/`icmp_code` as they share OVS's `tp_src`/
`tp_dst` (`icmpv6_type` is an alias, and dump-flows prints `icmp_type` for
both). The aliases OVS
accepts (`nw_src` on ARP, `nw_proto` on ARP, `tcp_dst`, ...) are resolved
by :func:`resolve_alias` while parsing, so a `Match` only ever holds
canonical names.

`vlan_tci` is the 802.1Q TCI with OVS's convention that bit 0x1000 (CFI)
means "a tag is present": an untagged packet has `vlan_tci=0`, a packet
tagged with VID 5 and PCP 0 has `vlan_tci=0x1005`. `dl_vlan` and
`dl_vlan_pcp` are parse-time spellings of masked `vlan_tci` matches.
"""
from __future__ import annotations

from dataclasses import dataclass

ETH_TYPE_IP = 0x0800
ETH_TYPE_ARP = 0x0806
ETH_TYPE_VLAN = 0x8100
ETH_TYPE_IPV6 = 0x86DD

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58

VLAN_CFI = 0x1000
VLAN_VID_MASK = 0x0FFF
VLAN_PCP_MASK = 0xE000

N_REGS = 16

# Kinds decide how a value is parsed and printed.
INT = "int"
HEX = "hex"      # printed 0x%04x (dl_type, vlan_tci)
HEXN = "hexn"    # printed like C's %#x: 0x5, and 0 as "0" (registers, metadata)
MAC = "mac"
IPV4 = "ipv4"
IPV6 = "ipv6"
LABEL = "label"  # printed 0x%05x (ipv6_label), as OVS's match_format does
PORT = "port"    # OpenFlow port: number or name, printed by name when known


@dataclass(frozen=True)
class Prerequisite:
    """What a match must also contain for a field to be meaningful.

    `dl_types` lists the acceptable `dl_type` values (any of them) and
    `nw_protos` the acceptable `nw_proto` values (empty: no constraint).
    `pairs`, when given, narrows these to the (dl_type, nw_proto) pairs
    that go together (ICMPv4 is 0x0800/1, ICMPv6 0x86dd/58, not 0x0800/58).
    `icmp_types` asks for an exact `icmp_type` among them, with `icmp_code`
    0 or not matched: OVS's "ND" prerequisites (is_nd() reads the match's
    values, where a wildcarded code reads 0).
    `hint` is the fix we print in the error, e.g. "add 'udp' or 'tcp'".
    """

    dl_types: tuple[int, ...] = ()
    nw_protos: tuple[int, ...] = ()
    hint: str = ""
    pairs: tuple[tuple[int, int], ...] = ()
    icmp_types: tuple[int, ...] = ()

    def satisfied_by(self, values: dict[str, int], masks: dict[str, int]) -> bool:
        if self.dl_types:
            if masks.get("dl_type") != 0xFFFF or values.get("dl_type") not in self.dl_types:
                return False
        if self.nw_protos:
            if masks.get("nw_proto") != 0xFF or values.get("nw_proto") not in self.nw_protos:
                return False
        if self.pairs and (values.get("dl_type"), values.get("nw_proto")) not in self.pairs:
            return False
        if self.icmp_types:
            if masks.get("icmp_type") != 0xFF or values.get("icmp_type") not in self.icmp_types:
                return False
            if values.get("icmp_code", 0) != 0:
                return False
        return True

    def describe(self) -> str:
        """The condition in words, e.g. 'dl_type=0x86dd and nw_proto=58'."""
        if self.pairs:
            text = ", or ".join(f"dl_type=0x{d:04x} and nw_proto={p}" for d, p in self.pairs)
        else:
            text = " or ".join(f"dl_type=0x{d:04x}" for d in self.dl_types)
            if self.nw_protos:
                text += " and nw_proto=" + " or ".join(str(p) for p in self.nw_protos)
        if self.icmp_types:
            text += " and " + " or ".join(f"icmp_type={t}" for t in self.icmp_types)
            text += " (with icmp_code=0 or no icmp_code)"
        return text

    def holds_for(self, fields: dict[str, int]) -> bool:
        """Whether a packet (all fields exact, absent = 0) carries the field."""
        return self.satisfied_by(fields, _ALL_EXACT)


@dataclass(frozen=True)
class Field:
    """One matchable header field.

    `maskable` is whether `ovs-ofctl` accepts `value/mask` for it.
    `packet_default` is what a packet without this header reads (0).
    """

    name: str
    width: int
    kind: str
    maskable: bool
    prereq: Prerequisite | None = None

    @property
    def full_mask(self) -> int:
        return (1 << self.width) - 1


_IP = Prerequisite((ETH_TYPE_IP,), (), "add 'ip' (or 'tcp', 'udp', 'icmp'; or 'arp' for ARP's addresses)")
_IPV6 = Prerequisite((ETH_TYPE_IPV6,), (), "add 'ipv6' (or 'tcp6', 'udp6', 'icmp6')")
_ARP = Prerequisite((ETH_TYPE_ARP,), (), "add 'arp'")
_IP_ANY = Prerequisite((ETH_TYPE_IP, ETH_TYPE_IPV6), (), "add 'ip' or 'ipv6'")
_L4 = Prerequisite((ETH_TYPE_IP, ETH_TYPE_IPV6), (IPPROTO_TCP, IPPROTO_UDP),
                   "add 'tcp' or 'udp' (or 'tcp6', 'udp6')")
_TCP = Prerequisite((ETH_TYPE_IP, ETH_TYPE_IPV6), (IPPROTO_TCP,), "add 'tcp' (or 'tcp6')")
_UDP = Prerequisite((ETH_TYPE_IP, ETH_TYPE_IPV6), (IPPROTO_UDP,), "add 'udp' (or 'udp6')")
_ICMP4 = Prerequisite((ETH_TYPE_IP,), (IPPROTO_ICMP,), "add 'icmp'")
_ICMP6 = Prerequisite((ETH_TYPE_IPV6,), (IPPROTO_ICMPV6,), "add 'icmp6'")
_ICMP = Prerequisite((ETH_TYPE_IP, ETH_TYPE_IPV6), (IPPROTO_ICMP, IPPROTO_ICMPV6),
                     "add 'icmp' (or 'icmp6')",
                     pairs=((ETH_TYPE_IP, IPPROTO_ICMP), (ETH_TYPE_IPV6, IPPROTO_ICMPV6)))
ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136
_ND = Prerequisite((ETH_TYPE_IPV6,), (IPPROTO_ICMPV6,),
                   "add 'icmp6,icmp_type=135' (a neighbour solicitation) or 'icmp6,icmp_type=136' "
                   "(an advertisement)", icmp_types=(ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT))
_ND_SOLICIT = Prerequisite((ETH_TYPE_IPV6,), (IPPROTO_ICMPV6,), "add 'icmp6,icmp_type=135'",
                           icmp_types=(ND_NEIGHBOR_SOLICIT,))
_ND_ADVERT = Prerequisite((ETH_TYPE_IPV6,), (IPPROTO_ICMPV6,), "add 'icmp6,icmp_type=136'",
                          icmp_types=(ND_NEIGHBOR_ADVERT,))

# Order matters: it is the order `ovs-ofctl dump-flows` prints fields in
# (OVS's match_format), so printing walks this tuple.
FIELDS: tuple[Field, ...] = tuple(
    [Field(f"reg{i}", 32, HEXN, True) for i in range(N_REGS)]) + (
    Field("in_port", 16, PORT, False),
    Field("vlan_tci", 16, HEX, True),
    Field("dl_src", 48, MAC, True),
    Field("dl_dst", 48, MAC, True),
    Field("dl_type", 16, HEX, False),
    Field("ipv6_src", 128, IPV6, True, _IPV6),
    Field("ipv6_dst", 128, IPV6, True, _IPV6),
    Field("ipv6_label", 20, LABEL, True, _IPV6),
    Field("arp_spa", 32, IPV4, True, _ARP),
    Field("arp_tpa", 32, IPV4, True, _ARP),
    Field("nw_src", 32, IPV4, True, _IP),
    Field("nw_dst", 32, IPV4, True, _IP),
    Field("nw_proto", 8, INT, False, _IP_ANY),
    Field("arp_op", 16, INT, False, _ARP),
    Field("arp_sha", 48, MAC, True, _ARP),
    Field("arp_tha", 48, MAC, True, _ARP),
    Field("nw_tos", 8, INT, False, _IP_ANY),
    Field("nw_ttl", 8, INT, False, _IP_ANY),
    Field("icmp_type", 8, INT, False, _ICMP),
    Field("icmp_code", 8, INT, False, _ICMP),
    Field("nd_target", 128, IPV6, True, _ND),
    Field("nd_sll", 48, MAC, True, _ND_SOLICIT),
    Field("nd_tll", 48, MAC, True, _ND_ADVERT),
    Field("tp_src", 16, INT, True, _L4),
    Field("tp_dst", 16, INT, True, _L4),
    # The inner 802.1Q tag after a push_vlan on a tagged frame (OVS's
    # vlans[1]); packets carry it, matches cannot name it.
    Field("vlan_tci1", 16, HEX, False),
)
PACKET_ONLY = frozenset({"vlan_tci1"})

FIELD_BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
# A packet's fields read as a match where every field is exact.
_ALL_EXACT = {f.name: f.full_mask for f in FIELDS}
FIELD_ORDER: dict[str, int] = {f.name: i for i, f in enumerate(FIELDS)}
REGS = tuple(f"reg{i}" for i in range(N_REGS))

# Spellings OVS accepts that always mean one canonical field. The transport
# aliases carry a narrower prerequisite than `tp_src` (checked by the
# parser): `udp_dst` needs `udp`.
ALIASES: dict[str, str] = {
    "tcp_src": "tp_src", "tcp_dst": "tp_dst",
    "udp_src": "tp_src", "udp_dst": "tp_dst",
    "eth_src": "dl_src", "eth_dst": "dl_dst", "eth_type": "dl_type",
    "ip_src": "nw_src", "ip_dst": "nw_dst", "ip_proto": "nw_proto",
    "icmpv4_type": "icmp_type", "icmpv4_code": "icmp_code",
    "icmpv6_type": "icmp_type", "icmpv6_code": "icmp_code",
}
ALIAS_PREREQ: dict[str, Prerequisite] = {
    "tcp_src": _TCP, "tcp_dst": _TCP, "udp_src": _UDP, "udp_dst": _UDP,
    "icmpv4_type": _ICMP4, "icmpv4_code": _ICMP4,
    "icmpv6_type": _ICMP6, "icmpv6_code": _ICMP6,
}

# Fields OVS reads differently on ARP: `nw_src` on an ARP match is `arp_spa`.
ARP_ALIASES: dict[str, str] = {"nw_src": "arp_spa", "nw_dst": "arp_tpa", "nw_proto": "arp_op"}

# Protocol shorthands: keyword -> (dl_type, nw_proto or None).
SHORTHANDS: dict[str, tuple[int, int | None]] = {
    "ip": (ETH_TYPE_IP, None),
    "ipv4": (ETH_TYPE_IP, None),
    "icmp": (ETH_TYPE_IP, IPPROTO_ICMP),
    "tcp": (ETH_TYPE_IP, IPPROTO_TCP),
    "udp": (ETH_TYPE_IP, IPPROTO_UDP),
    "arp": (ETH_TYPE_ARP, None),
    "ipv6": (ETH_TYPE_IPV6, None),
    "tcp6": (ETH_TYPE_IPV6, IPPROTO_TCP),
    "udp6": (ETH_TYPE_IPV6, IPPROTO_UDP),
    "icmp6": (ETH_TYPE_IPV6, IPPROTO_ICMPV6),
}

# The shorthand dump-flows prints for (dl_type, nw_proto); None = no nw_proto.
SHORTHAND_FOR: dict[tuple[int, int | None], str] = {
    (ETH_TYPE_IP, None): "ip",
    (ETH_TYPE_IP, IPPROTO_ICMP): "icmp",
    (ETH_TYPE_IP, IPPROTO_TCP): "tcp",
    (ETH_TYPE_IP, IPPROTO_UDP): "udp",
    (ETH_TYPE_ARP, None): "arp",
    (ETH_TYPE_IPV6, None): "ipv6",
    (ETH_TYPE_IPV6, IPPROTO_TCP): "tcp6",
    (ETH_TYPE_IPV6, IPPROTO_UDP): "udp6",
    (ETH_TYPE_IPV6, IPPROTO_ICMPV6): "icmp6",
}


def resolve_alias(name: str, dl_type: int | None) -> str:
    """The canonical field for a spelling, given the match's dl_type so far.

    Raises KeyError for a name that is no field at all.
    """
    if dl_type == ETH_TYPE_ARP and name in ARP_ALIASES:
        return ARP_ALIASES[name]
    name = ALIASES.get(name, name)
    if name not in FIELD_BY_NAME or name in PACKET_ONLY:
        raise KeyError(name)
    return name


# --- value formatting helpers shared by printing and the trace -------------

def format_mac(v: int) -> str:
    return ":".join(f"{(v >> s) & 0xFF:02x}" for s in range(40, -8, -8))


def format_ipv4(v: int) -> str:
    return ".".join(str((v >> s) & 0xFF) for s in (24, 16, 8, 0))


def format_hexn(v: int) -> str:
    """C's %#x: 0x1f, and 0 as 0."""
    return f"{v:#x}" if v else "0"


def format_ipv6(v: int) -> str:
    """As OVS prints it (glibc's inet_ntop): like Python's, except that an
    IPv4-compatible (::a.b.c.d, not ::1) or IPv4-mapped address ends in
    dotted quad."""
    import ipaddress
    if (v >> 32 == 0 and (v >> 16) & 0xFFFF) or v >> 32 == 0xFFFF:
        return ("::ffff:" if v >> 32 else "::") + format_ipv4(v & 0xFFFFFFFF)
    return str(ipaddress.IPv6Address(v))


def prefix_len(mask: int, width: int) -> int | None:
    """The CIDR length of a mask, or None if the mask is not a prefix."""
    inv = (~mask) & ((1 << width) - 1)
    if inv & (inv + 1):
        return None
    return width - inv.bit_length()
