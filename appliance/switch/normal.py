"""`NORMAL`: the L2 learning switch, as Open vSwitch's xlate_normal does it.

Every port is a trunk carrying every VLAN (no port has a `tag`), so a frame
keeps its tag and its VLAN is its VID (0 untagged). The MAC table maps
(VLAN, MAC) to the port the MAC was last seen on:

- a frame from a port that is not on the bridge is dropped (no input bundle);
- a frame to a reserved multicast address (802.1D's 01:80:c2:00:00:0x,
  Cisco's and Extreme's protocol addresses) is dropped;
- the source is learned (only when side effects are allowed: real traffic,
  or a trace with -generate; a plain ofproto/trace learns nothing, as in OVS);
- a multicast or unknown destination floods to every port but the input
  (LOCAL included); a known one goes to its port, or nowhere if that is
  the input port.

Entries age out after `MAC_AGING` seconds (OVS's default mac-aging-time).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from . import fields as F

MAC_AGING = 300

_RESERVED = {0x0180C2000000 + i for i in range(16)} | {
    0x00E02B000000, 0x00E02B000004, 0x00E02B000006,
    0x01000C000000, 0x01000CCCCCCC, 0x01000CCCCCCD, 0x01000CCDCDCD,
} | {0x01000CCCCCC0 + i for i in range(8)}

BROADCAST = 0xFFFFFFFFFFFF


def is_reserved(mac: int) -> bool:
    return mac in _RESERVED


def is_multicast(mac: int) -> bool:
    return bool(mac & 0x010000000000)


def vlan_of(tci: int) -> int:
    return tci & F.VLAN_VID_MASK if tci & F.VLAN_CFI else 0


@dataclass
class MacTable:
    """(vlan, mac) -> (port, last seen as time.time())."""
    entries: dict[tuple[int, int], tuple[int, float]] = field(default_factory=dict)
    aging: int = MAC_AGING

    def lookup(self, vlan: int, mac: int, now: float | None = None) -> int | None:
        hit = self.entries.get((vlan, mac))
        if hit is None:
            return None
        now = time.time() if now is None else now
        if now - hit[1] > self.aging:
            return None
        return hit[0]

    def learn(self, vlan: int, mac: int, port: int, now: float | None = None) -> bool:
        """Record `mac` on `port`; True if that changed the table."""
        if is_multicast(mac):
            return False
        now = time.time() if now is None else now
        old = self.entries.get((vlan, mac))
        self.entries[(vlan, mac)] = (port, now)
        return old is None or old[0] != port

    def expire(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.entries = {k: v for k, v in self.entries.items() if now - v[1] <= self.aging}

    def flush(self) -> None:
        self.entries.clear()

    def to_json(self) -> list:
        return [[vlan, F.format_mac(mac), port, seen]
                for (vlan, mac), (port, seen) in sorted(self.entries.items())]

    @classmethod
    def from_json(cls, data: list) -> "MacTable":
        t = cls()
        for vlan, mac, port, seen in data or []:
            t.entries[(int(vlan), int(mac.replace(":", ""), 16))] = (int(port), float(seen))
        return t

    def show(self, port_names=None, now: float | None = None) -> str:
        """`ovs-appctl fdb/show` output."""
        now = time.time() if now is None else now
        lines = [" port  VLAN  MAC                Age"]
        for (vlan, mac), (port, seen) in sorted(self.entries.items(), key=lambda kv: kv[1][1]):
            if now - seen > self.aging:
                continue
            name = (port_names or {}).get(port, str(port))
            lines.append(f"{name:>5}  {vlan:4d}  {F.format_mac(mac)}  {int(now - seen):3d}")
        return "\n".join(lines) + "\n"


@dataclass
class Decision:
    """What NORMAL did: the ports (in order) and OVS's words for it."""
    ports: list[int]
    note: str


def decide(table: MacTable, fields: dict[str, int], ports: list[int], learn: bool,
           now: float | None = None) -> Decision:
    """Where NORMAL sends a packet. `ports` are the bridge's ports with
    LOCAL, in flooding order."""
    in_port = fields.get("in_port", 0)
    if in_port not in ports:
        return Decision([], f">> no input bundle (port {in_port} is not on the bridge), dropping")
    dst = fields.get("dl_dst", 0)
    if is_reserved(dst):
        return Decision([], "-> packet has reserved destination MAC, dropping")
    vlan = vlan_of(fields.get("vlan_tci", 0))
    if learn:
        table.learn(vlan, fields.get("dl_src", 0), in_port, now)
    flood = [p for p in ports if p != in_port]
    if is_multicast(dst):
        return Decision(flood, "-> no learned MAC for destination, flooding")
    port = table.lookup(vlan, dst, now)
    if port is None or port not in ports:
        return Decision(flood, "-> no learned MAC for destination, flooding")
    if port == in_port:
        return Decision([], "-> learned port is input port, dropping")
    return Decision([port], "-> forwarding to learned port")
