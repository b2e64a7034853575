"""How full the DHCP pools are, and which clients got no lease because they were full.

Pure: the settings' pools, Kea's leases and the tail of Kea's log in; the
reading the console and `./manage.py status` show out. Kea logs a client
that gets no address by its MAC (`ALLOC_ENGINE_V4_ALLOC_FAIL*`, a WARN line
with `[hwtype=1 MAC]`); those lines are what `no_lease` picks out.
"""
from __future__ import annotations

import ipaddress
import re

_FAIL = re.compile(r"^(?:(?P<at>\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d)\S*\s+)?.*?ALLOC_ENGINE_V4_ALLOC_FAIL\w*\s+"
                   r"\[hwtype=\d+ (?P<mac>[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5})\]", re.M)


def size(pools) -> int:
    return sum(int(p.end) - int(p.start) + 1 for p in pools)


def in_pools(ip: str, pools) -> bool:
    try:
        a = ipaddress.IPv4Address(ip)
    except ValueError:
        return False
    return any(p.start <= a <= p.end for p in pools)


def no_lease(log_text: str) -> list[dict]:
    """The clients Kea gave no address to, by the last time each was turned away, oldest first:
    {"mac", "at" (Kea's time, "" if its lines carry none)}. Kea logs a few lines per refused
    DISCOVER, and a client asks again and again: one entry per MAC."""
    last: dict[str, str] = {}
    for m in _FAIL.finditer(log_text):
        mac = m["mac"].lower()
        last.pop(mac, None)
        last[mac] = m["at"] or ""
    return [{"mac": mac, "at": at} for mac, at in last.items()]


def usage(pools, leases: list[dict], warn_percent: int, log_text: str = "") -> dict:
    """The pools' use: leased of size, the percent, whether to warn, and who got nothing.

    `leases` are Kea's (state 0: assigned; expired and declined ones do not count).
    """
    total = size(pools)
    leased = len({l["ip"] for l in leases if l.get("state", 0) == 0 and in_pools(l["ip"], pools)})
    percent = 100.0 * leased / total if total else 100.0
    failed = no_lease(log_text)
    exhausted = leased >= total
    out = {"size": total, "leased": leased, "free": max(0, total - leased), "percent": round(percent, 1),
           "warn_percent": warn_percent, "exhausted": exhausted, "no_lease": failed[-20:], "warning": ""}
    if exhausted:
        who = failed[-1] if failed else None
        out["warning"] = (f"The DHCP pool is full: {leased} of {total} addresses leased; new devices get no address"
                          + (f" (the last turned away: {who['mac']}{' at ' + who['at'] if who['at'] else ''})"
                             if who else "")
                          + ". Widen the pool or shorten the lease time.")
    elif percent >= warn_percent:
        out["warning"] = (f"The DHCP pool is nearly full: {leased} of {total} addresses leased "
                          f"({percent:.0f}%, the warning is at {warn_percent}%).")
    return out
