"""Trace input in the datapath's own syntax, as OVS's tests write it.

`ovs-appctl ofproto/trace` also takes a datapath flow:
``in_port(1),eth(src=50:54:00:00:00:05,dst=50:54:00:00:00:07),eth_type(0x0800),
ipv4(src=192.168.0.1,dst=192.168.0.2,proto=1,tos=0,ttl=64,frag=no),icmp(type=8,code=0)``,
with a VLAN as ``eth_type(0x8100),vlan(vid=5,pcp=0),encap(eth_type(0x0800),...)``.
Datapath port N is OpenFlow port N here (each port is its own device).
Keys that only the datapath has (recirc_id, skb_mark, ct_state, ...) are
read past; `fields()` returns the packet's canonical fields.
"""
from __future__ import annotations

import ipaddress

from . import fields as F

ODP_KEYS = ("in_port(", "eth(", "eth_type(", "recirc_id(", "skb_priority(", "skb_mark(")


def looks_like_odp(text: str) -> bool:
    return text.strip().startswith(ODP_KEYS)


def _items(s: str) -> list[tuple[str, str]]:
    out, depth, cur = [], 0, ""
    for ch in s + ",":
        if ch == "," and depth == 0:
            cur = cur.strip()
            if cur:
                name, _, rest = cur.partition("(")
                out.append((name.strip(), rest[:-1] if rest.endswith(")") else rest))
            cur = ""
            continue
        depth += (ch == "(") - (ch == ")")
        cur += ch
    return out


def _kv(args: str) -> dict[str, str]:
    return dict(p.split("=", 1) for p in args.split(",") if "=" in p)


def _mac(v: str) -> int:
    return int(v.split("/")[0].replace(":", ""), 16)


def _int(v: str) -> int:
    return int(v.split("/")[0], 0)


def fields(text: str) -> dict[str, int]:
    """The canonical fields of a datapath flow; ValueError names what is wrong."""
    f: dict[str, int] = {}
    _fill(f, _items(text.strip()))
    if f.get("dl_type") in (F.ETH_TYPE_IP, F.ETH_TYPE_IPV6):
        f.setdefault("nw_ttl", 64)
    return f


def _fill(f: dict[str, int], items: list[tuple[str, str]]) -> None:
    for name, args in items:
        kv = _kv(args)
        try:
            if name == "in_port":
                f["in_port"] = _int(args)
            elif name == "eth":
                f["dl_src"] = _mac(kv.get("src", "0:0:0:0:0:0"))
                f["dl_dst"] = _mac(kv.get("dst", "0:0:0:0:0:0"))
            elif name == "eth_type":
                f["dl_type"] = _int(args)
            elif name == "vlan":
                tci = F.VLAN_CFI | (_int(kv.get("vid", "0")) & 0xFFF) | (_int(kv.get("pcp", "0")) << 13)
                if "vlan_tci" in f:
                    f["vlan_tci1"] = tci
                else:
                    f["vlan_tci"] = tci
            elif name == "encap":
                f.pop("dl_type", None)
                _fill(f, _items(args))
            elif name == "ipv4":
                f["nw_src"] = int(ipaddress.IPv4Address(kv.get("src", "0.0.0.0").split("/")[0]))
                f["nw_dst"] = int(ipaddress.IPv4Address(kv.get("dst", "0.0.0.0").split("/")[0]))
                f["nw_proto"] = _int(kv.get("proto", "0"))
                f["nw_tos"] = _int(kv.get("tos", "0")) & 0xFC
                f["nw_ttl"] = _int(kv.get("ttl", "64"))
            elif name == "ipv6":
                f["ipv6_src"] = int(ipaddress.IPv6Address(kv.get("src", "::").split("/")[0]))
                f["ipv6_dst"] = int(ipaddress.IPv6Address(kv.get("dst", "::").split("/")[0]))
                f["nw_proto"] = _int(kv.get("proto", "0"))
                f["nw_tos"] = _int(kv.get("tclass", "0")) & 0xFC
                f["nw_ttl"] = _int(kv.get("hlimit", "64"))
                f["ipv6_label"] = _int(kv.get("label", "0")) & 0xFFFFF
            elif name in ("tcp", "udp", "sctp"):
                f["tp_src"] = _int(kv.get("src", "0"))
                f["tp_dst"] = _int(kv.get("dst", "0"))
            elif name in ("icmp", "icmpv6"):
                f["icmp_type"] = _int(kv.get("type", "0"))
                f["icmp_code"] = _int(kv.get("code", "0"))
            elif name == "arp":
                f["arp_spa"] = int(ipaddress.IPv4Address(kv.get("sip", "0.0.0.0").split("/")[0]))
                f["arp_tpa"] = int(ipaddress.IPv4Address(kv.get("tip", "0.0.0.0").split("/")[0]))
                f["arp_op"] = _int(kv.get("op", "0"))
                f["arp_sha"] = _mac(kv.get("sha", "0:0:0:0:0:0"))
                f["arp_tha"] = _mac(kv.get("tha", "0:0:0:0:0:0"))
            elif name == "nd":
                f["nd_target"] = int(ipaddress.IPv6Address(kv.get("target", "::").split("/")[0]))
                f["nd_sll"] = _mac(kv.get("sll", "0:0:0:0:0:0"))
                f["nd_tll"] = _mac(kv.get("tll", "0:0:0:0:0:0"))
            # recirc_id, dp_hash, skb_priority, skb_mark, ct_*, tunnel...: datapath only
        except ValueError as e:
            raise ValueError(f"datapath flow: {name}({args}): {e}") from None
