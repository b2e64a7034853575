"""Fields as actions write and read them: `set_field`, `load`, `move`, `learn`.

A match only ever holds canonical fields (see `fields.py`); actions may
also name the OpenFlow 1.2+ views OVS offers on them, which are bits of a
canonical field with their own write rules (OVS's `mf_set_flow_value`):

- `vlan_vid` is the low 13 bits of `vlan_tci` (VID plus the present bit,
  OpenFlow 1.3's OFPVID_PRESENT = 0x1000): `set_field:4196->vlan_vid` is
  VLAN 100 with the tag present;
- `vlan_pcp` / `dl_vlan_pcp` are its top 3 bits, and writing them marks a
  tag present; `dl_vlan` is the 12-bit VID, also marking a tag present;
- `ip_dscp` is `nw_tos` >> 2.

Fields also go by their NXM/OXM names (`NXM_OF_ETH_SRC`, `NXM_NX_REG0`,
`OXM_OF_VLAN_VID`, ...) and take a bit range, `reg0[0..15]`, `reg0[3]`,
`NXM_OF_ETH_DST[]`, as ovs-actions(7) writes them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import fields as F
from .fields import FIELD_BY_NAME

# view -> (canonical field, bit offset, width)
VIRTUAL: dict[str, tuple[str, int, int]] = {
    "vlan_vid": ("vlan_tci", 0, 13),
    "vlan_pcp": ("vlan_tci", 13, 3),
    "dl_vlan": ("vlan_tci", 0, 12),
    "dl_vlan_pcp": ("vlan_tci", 13, 3),
    "ip_dscp": ("nw_tos", 2, 6),
    # OVS's tp_src/tp_dst in an action are TCP's (MFF_TCP_SRC/DST): on a
    # UDP packet set_field:80->tp_dst changes nothing. mod_tp_dst is both.
    "tcp_src": ("tp_src", 0, 16), "tcp_dst": ("tp_dst", 0, 16),
    "udp_src": ("tp_src", 0, 16), "udp_dst": ("tp_dst", 0, 16),
}
_TP_AS_TCP = {"tp_src": "tcp_src", "tp_dst": "tcp_dst"}

NXM: dict[str, str] = {
    "NXM_OF_IN_PORT": "in_port", "NXM_OF_ETH_DST": "dl_dst", "NXM_OF_ETH_SRC": "dl_src",
    "NXM_OF_ETH_TYPE": "dl_type", "NXM_OF_VLAN_TCI": "vlan_tci", "NXM_OF_IP_TOS": "nw_tos",
    "NXM_OF_IP_PROTO": "nw_proto", "NXM_OF_IP_SRC": "nw_src", "NXM_OF_IP_DST": "nw_dst",
    "NXM_OF_TCP_SRC": "tcp_src", "NXM_OF_TCP_DST": "tcp_dst", "NXM_OF_UDP_SRC": "udp_src",
    "NXM_OF_UDP_DST": "udp_dst", "NXM_OF_ICMP_TYPE": "icmp_type", "NXM_OF_ICMP_CODE": "icmp_code",
    "NXM_OF_ARP_OP": "arp_op", "NXM_OF_ARP_SPA": "arp_spa", "NXM_OF_ARP_TPA": "arp_tpa",
    "NXM_NX_ARP_SHA": "arp_sha", "NXM_NX_ARP_THA": "arp_tha", "NXM_NX_IPV6_SRC": "ipv6_src",
    "NXM_NX_IPV6_DST": "ipv6_dst", "NXM_NX_IP_TTL": "nw_ttl",
    "OXM_OF_IN_PORT": "in_port", "OXM_OF_ETH_DST": "dl_dst", "OXM_OF_ETH_SRC": "dl_src",
    "OXM_OF_ETH_TYPE": "dl_type", "OXM_OF_VLAN_VID": "vlan_vid", "OXM_OF_VLAN_PCP": "vlan_pcp",
    "OXM_OF_IP_DSCP": "ip_dscp", "OXM_OF_IP_PROTO": "nw_proto", "OXM_OF_IPV4_SRC": "nw_src",
    "OXM_OF_IPV4_DST": "nw_dst", "OXM_OF_TCP_SRC": "tcp_src", "OXM_OF_TCP_DST": "tcp_dst",
    "OXM_OF_UDP_SRC": "udp_src", "OXM_OF_UDP_DST": "udp_dst", "OXM_OF_ICMPV4_TYPE": "icmp_type",
    "OXM_OF_ICMPV4_CODE": "icmp_code", "OXM_OF_ARP_OP": "arp_op", "OXM_OF_ARP_SPA": "arp_spa",
    "OXM_OF_ARP_TPA": "arp_tpa", "OXM_OF_ARP_SHA": "arp_sha", "OXM_OF_ARP_THA": "arp_tha",
    "OXM_OF_IPV6_SRC": "ipv6_src", "OXM_OF_IPV6_DST": "ipv6_dst",
    "NXM_NX_IPV6_LABEL": "ipv6_label", "OXM_OF_IPV6_FLABEL": "ipv6_label",
    "NXM_NX_ICMPV6_TYPE": "icmp_type", "NXM_NX_ICMPV6_CODE": "icmp_code",
    "OXM_OF_ICMPV6_TYPE": "icmp_type", "OXM_OF_ICMPV6_CODE": "icmp_code",
    "NXM_NX_ND_TARGET": "nd_target", "OXM_OF_IPV6_ND_TARGET": "nd_target",
    "NXM_NX_ND_SLL": "nd_sll", "OXM_OF_IPV6_ND_SLL": "nd_sll",
    "NXM_NX_ND_TLL": "nd_tll", "OXM_OF_IPV6_ND_TLL": "nd_tll",
    **{f"NXM_NX_REG{i}": f"reg{i}" for i in range(F.N_REGS)},
}

# Names actions accept besides the canonical ones and the views.
EXTRA_ALIASES: dict[str, str] = {
    "ipv4_src": "nw_src", "ipv4_dst": "nw_dst", "nw_ttl": "nw_ttl", "ip_ttl": "nw_ttl",
    "sctp_src": "tp_src", "sctp_dst": "tp_dst",
}

# Prerequisites of the views (the canonical fields carry their own).
_VIEW_PREREQ = {
    "ip_dscp": F.Prerequisite((F.ETH_TYPE_IP, F.ETH_TYPE_IPV6), (), "add 'ip' or 'ipv6'"),
    **dict.fromkeys(("tcp_src", "tcp_dst"), F.ALIAS_PREREQ["tcp_src"]),
    **dict.fromkeys(("udp_src", "udp_dst"), F.ALIAS_PREREQ["udp_src"]),
}


def resolve(name: str) -> str:
    """The canonical field or view for a spelling; KeyError if none."""
    if name in NXM:
        return NXM[name]
    low = name.lower()
    low = _TP_AS_TCP.get(low, low)
    if low in VIRTUAL:
        return low
    low = EXTRA_ALIASES.get(low, low)
    low = F.ALIASES.get(low, low)
    if low in FIELD_BY_NAME and low not in F.PACKET_ONLY:
        return low
    raise KeyError(name)


def width(name: str) -> int:
    if name in VIRTUAL:
        return VIRTUAL[name][2]
    return FIELD_BY_NAME[name].width


def prereq(name: str) -> F.Prerequisite | None:
    if name in VIRTUAL:
        return _VIEW_PREREQ.get(name)
    return FIELD_BY_NAME[name].prereq


def packet_has(name: str, fields: dict[str, int]) -> bool:
    """Whether a packet carries the field (OVS: set_field only if it does)."""
    pre = prereq(name)
    return pre is None or pre.holds_for(fields)


def read(fields: dict[str, int], name: str) -> int:
    if name in VIRTUAL:
        base, ofs, n = VIRTUAL[name]
        return (fields.get(base, 0) >> ofs) & ((1 << n) - 1)
    return fields.get(name, 0)


def write(fields: dict[str, int], name: str, value: int, mask: int | None = None) -> None:
    """Write `value` (under `mask`, in the field's own bits) into a fields dict."""
    full = (1 << width(name)) - 1
    mask = full if mask is None else mask & full
    new = (read(fields, name) & ~mask) | (value & mask)
    if name in VIRTUAL:
        base, ofs, n = VIRTUAL[name]
        cur = fields.get(base, 0)
        cur = (cur & ~(((1 << n) - 1) << ofs)) | (new << ofs)
        if name in ("vlan_pcp", "dl_vlan_pcp", "dl_vlan"):
            cur |= F.VLAN_CFI
        fields[base] = cur
    else:
        fields[name] = new


@dataclass(frozen=True)
class SubField:
    """Bits `ofs`..`ofs+nbits-1` of a field (canonical or view)."""
    name: str
    ofs: int
    nbits: int
    spelled: str = field(default="", compare=False)

    @property
    def whole(self) -> bool:
        return self.ofs == 0 and self.nbits == width(self.name)

    def get(self, fields: dict[str, int]) -> int:
        return (read(fields, self.name) >> self.ofs) & ((1 << self.nbits) - 1)

    def put(self, fields: dict[str, int], value: int) -> None:
        m = (1 << self.nbits) - 1
        write(fields, self.name, (value & m) << self.ofs, m << self.ofs)

    def to_text(self) -> str:
        if self.spelled:
            return self.spelled
        if self.whole:
            return f"{self.name}[]"
        if self.nbits == 1:
            return f"{self.name}[{self.ofs}]"
        return f"{self.name}[{self.ofs}..{self.ofs + self.nbits - 1}]"


_SUB_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\[(?:(\d+)(?:\.\.(\d+))?)?\]$")


def parse_subfield(text: str, what: str = "field") -> SubField:
    """`reg0[0..15]`, `NXM_OF_ETH_SRC[]`, `reg0[3]`, or a bare field name (all of it)."""
    text = text.strip()
    m = _SUB_RE.match(text)
    name = m.group(1) if m else text
    try:
        canon = resolve(name)
    except KeyError:
        raise ValueError(f"{what}: unknown field {name!r}") from None
    w = width(canon)
    if not m or m.group(2) is None:
        return SubField(canon, 0, w, text)
    lo = int(m.group(2))
    hi = int(m.group(3)) if m.group(3) is not None else lo
    if hi < lo or hi >= w:
        raise ValueError(f"{what}: bits {lo}..{hi} are outside {name} ({w} bits)")
    return SubField(canon, lo, hi - lo + 1, text)
