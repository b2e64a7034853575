"""The setup wizard's proposal: the seed's transparent topology for the detected hardware.

Pure: it takes what was observed (NICs, default route, addresses) and returns
a settings document; `detect` does the observing through the kernel boundary.
The proposal follows the seed: the modem stays the gateway, the box takes
the 8th and 9th addresses of the LAN for admin and vproxy and hands out the
middle half of the LAN by DHCP.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from appliance.box.plan import derived_mac
from appliance.box.settings import RESERVED_LINK_NAMES

# Links the box or the lab make themselves; never offered as a NIC.
_NOT_NICS = RESERVED_LINK_NAMES | {"lo", "gw0", "vproxy0"}


@dataclass
class Detected:
    nics: list[str] = field(default_factory=list)
    gateway: str | None = None  # the default route's next hop
    gateway_dev: str | None = None
    addresses: dict[str, list[str]] = field(default_factory=dict)  # nic -> ["192.168.1.20/24"]
    gateway_port: str | None = None  # the NIC the gateway's MAC was learnt on (a bridge's FDB)
    applied_ports: tuple[str, str] | None = None  # (uplink, downlink) of the applied settings


def detect(kernel, host_ns: str | None) -> Detected:
    links = [l for l in kernel.links(host_ns) if l.kind in ("device", "veth") and l.name not in _NOT_NICS]
    d = Detected(nics=sorted(l.name for l in links))
    for r in kernel.routes(host_ns):
        if r.dst == "default" and r.via:
            d.gateway, d.gateway_dev = r.via, r.dev
            break
    for name in [*d.nics, *([d.gateway_dev] if d.gateway_dev and d.gateway_dev not in d.nics else [])]:
        try:
            d.addresses[name] = list(kernel.addresses(host_ns, name))
        except Exception:  # noqa: BLE001 - a link that vanished has no addresses
            d.addresses[name] = []
    # Bridged (the factory bridge), the default route names the bridge, not a NIC: the NIC is
    # the port whose forwarding database learnt the gateway's MAC from the modem's own frames.
    if d.gateway and d.gateway_dev not in d.nics:
        try:
            mac = kernel.neighbour_mac(host_ns, d.gateway)
            port = kernel.bridge_port_of(host_ns, mac) if mac else None
        except Exception:  # noqa: BLE001 - the wizard still works by hand
            port = None
        d.gateway_port = port if port in d.nics else None
    return d


def propose(d: Detected) -> dict:
    """A settings document for the detected hardware (may still need the person's choice).

    The uplink: the applied settings' when there are some, else the NIC the gateway was seen
    on (its route's device, or the bridge port its MAC was learnt on), else the first NIC."""
    if d.applied_ports and all(p in d.nics for p in d.applied_ports):
        uplink, downlink = d.applied_ports
    else:
        uplink = next((p for p in (d.gateway_port, d.gateway_dev) if p in d.nics), d.nics[0] if d.nics else "eth0")
        others = [n for n in d.nics if n != uplink]
        downlink = others[0] if others else "eth1"
    lan = IPv4Network("192.168.1.0/24")
    for cidr in [*d.addresses.get(uplink, []), *d.addresses.get(d.gateway_dev or "", [])]:
        iface = IPv4Interface(cidr)
        if d.gateway and IPv4Address(d.gateway) in iface.network:
            lan = iface.network
            break
    gateway = d.gateway if d.gateway and IPv4Address(d.gateway) in lan else str(lan.network_address + 1)
    return topology(uplink, downlink, gateway, str(lan))


def topology(uplink: str, downlink: str, gateway: str, lan_prefix: str) -> dict:
    lan = IPv4Network(lan_prefix, strict=False)
    base, size = lan.network_address, lan.num_addresses
    gw = IPv4Address(gateway)
    taken = {gw}
    free = (base + i for i in range(8, size - 1))
    admin = next(a for a in free if a not in taken)
    taken.add(admin)
    vproxy = next(a for a in free if a not in taken)
    start, end = base + max(size // 4, int(vproxy) - int(base) + 1), base + max(size * 3 // 4 - 1, 1)
    if start <= gw <= end:
        start = gw + 1
    return {
        "ports": {"uplink": uplink, "downlink": downlink},
        "gateway": {"ip": str(gw)},
        "lan": {"prefix": str(lan)},
        "admin": {"address": str(admin)},
        "vproxy": {"address": str(vproxy), "mac": derived_mac("vproxy")},
        "dhcp": {"pools": [{"start": str(start), "end": str(end)}], "lease_time": 86400},
    }
