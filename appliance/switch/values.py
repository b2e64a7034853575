"""Values in flow text: numbers, MACs, addresses, value/mask pairs and ports.

Shared by the match parser (`parser.py`) and the action parser
(`actionparse.py`); every function raises ValueError with a message that
names what was being read.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Mapping

from . import fields as F
from . import flows as FL


def _int(text: str, what: str, lo: int, hi: int) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        try:
            v = int(text, 10)  # leading zeros: "010" is 10, as strtol base 10 reads it
        except ValueError:
            raise ValueError(f"{what}: {text!r} is not a number") from None
    if not lo <= v <= hi:
        raise ValueError(f"{what}: {v} is out of range {lo}..{hi}")
    return v


def _mac(text: str, what: str) -> int:
    if not re.fullmatch(r"[0-9A-Fa-f]{1,2}(:[0-9A-Fa-f]{1,2}){5}", text):
        raise ValueError(f"{what}: {text!r} is not a MAC address (xx:xx:xx:xx:xx:xx)")
    return int("".join(p.zfill(2) for p in text.split(":")), 16)


def _ipv4(text: str, what: str) -> int:
    try:
        return int(ipaddress.IPv4Address(text))
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not an IPv4 address") from None


def _ipv6(text: str, what: str) -> int:
    try:
        return int(ipaddress.IPv6Address(text))
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not an IPv6 address") from None


def _value_mask(fld: F.Field, text: str, name: str) -> tuple[int, int]:
    """Parse 'value' or 'value/mask' for a field into ints (mask not yet applied)."""
    if "/" in text:
        if not fld.maskable:
            raise ValueError(f"{name} does not take a mask")
        vtext, mtext = text.split("/", 1)
    else:
        vtext, mtext = text, None
    full = fld.full_mask
    if fld.kind == F.MAC:
        v = _mac(vtext, name)
        m = full if mtext is None else _mac(mtext, f"{name} mask")
    elif fld.kind == F.IPV4:
        v = _ipv4(vtext, name)
        if mtext is None:
            m = full
        elif mtext.isdigit():
            plen = int(mtext)
            if plen > 32:
                raise ValueError(f"{name}: prefix length /{plen} is more than 32")
            m = (full << (32 - plen)) & full
        else:
            m = _ipv4(mtext, f"{name} mask")
    elif fld.kind == F.IPV6:
        v = _ipv6(vtext, name)
        if mtext is None:
            m = full
        elif mtext.isdigit():
            plen = int(mtext)
            if plen > 128:
                raise ValueError(f"{name}: prefix length /{plen} is more than 128")
            m = (full << (128 - plen)) & full
        else:
            m = _ipv6(mtext, f"{name} mask")
    else:
        v = _int(vtext, name, 0, full)
        m = full if mtext is None else _int(mtext, f"{name} mask", 0, full)
    return v, m


def parse_port(text: str, port_map: Mapping[str, int] | None, what: str = "port") -> int:
    """A port: a reserved name (any case), a name from port_map, or a number."""
    up = text.upper()
    if up in FL.RESERVED_PORTS:
        return FL.RESERVED_PORTS[up]
    if port_map and text in port_map:
        return port_map[text]
    if text.isdigit() or text.lower().startswith("0x"):
        v = _int(text, what, 0, 0xFFFF)
        if v == 0 or (FL.OFPP_MAX <= v and v not in FL.RESERVED_NAMES):
            raise ValueError(f"{what}: {v} is not a valid OpenFlow port (1..{FL.OFPP_MAX - 1} or a reserved name)")
        return v
    known = ", ".join(sorted(port_map)) if port_map else "none (no bridge given)"
    raise ValueError(f"{what}: unknown port {text!r} (known ports: {known})")
