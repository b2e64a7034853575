"""Pick the address for "make static": the lease's own, else the first free one outside the pools.

Pure. The settings document does not let a static lease sit inside a pool
(Kea would hand the address to someone else meanwhile), so a device leased
from the pool is offered the lowest address that no pool, box address or
other static lease uses.
"""
from __future__ import annotations

from ipaddress import IPv4Address

from appliance.box.settings import Settings


def static_address(settings: Settings, ip: str) -> str | None:
    lan = settings.lan.prefix
    taken = {settings.gateway.ip, settings.admin.address, settings.vproxy.address}
    taken |= {s.ip for s in settings.dhcp.static_leases}

    def free(a: IPv4Address) -> bool:
        return (a in lan and a not in (lan.network_address, lan.broadcast_address) and a not in taken
                and not any(a in p for p in settings.dhcp.pools))

    want = IPv4Address(ip)
    if free(want):
        return str(want)
    return next((str(a) for a in lan.hosts() if free(a)), None)
