"""The DHCPv6 leases dhcpkit handed out, read from its leasequery SQLite store.

dhcpkit records every address it gives (and renews) in the store its
`<leasequery>` section names (`appliance.services.dhcp.dhcpkit_config`):
a `clients` row per DUID and link, an `addresses` row per address with its
lifetimes as deadlines (unix time). Stateless clients get no row: they hold
no lease. Read only (the server writes it with WAL, so a reader never
blocks it), without dhcpkit: the console and the CLI read it too.
"""
from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass
from ipaddress import IPv6Address
from pathlib import Path

DUID_LLT, DUID_LL = 1, 3
ETHERNET = 1
RELAY_FORW = 12


@dataclass(frozen=True)
class Lease6:
    ip: IPv6Address
    duid: str  # hex
    mac: str  # from a DUID-LL/LLT, else ""
    client_address: str  # the link-local address the request came from, "" if unknown
    expires: int  # unix time: the valid lifetime's end
    preferred_until: int
    last_seen: int

    def to_json(self) -> dict:
        d = asdict(self)
        d["ip"] = str(self.ip)
        return d


def mac_of_duid(duid: bytes) -> str:
    """The Ethernet address in a DUID-LL or DUID-LLT; "" for other DUIDs."""
    if len(duid) < 4:
        return ""
    kind, hw = int.from_bytes(duid[:2], "big"), int.from_bytes(duid[2:4], "big")
    address = duid[8:] if kind == DUID_LLT else duid[4:] if kind == DUID_LL else b""
    if hw != ETHERNET or len(address) != 6:
        return ""
    return ":".join(f"{b:02x}" for b in address)


def _peer(relay_data: bytes) -> str:
    # The server keeps the request's relay-forward wrapper (its own, for a
    # client on the link): type, hop count, link address, peer address.
    if len(relay_data) >= 34 and relay_data[0] == RELAY_FORW:
        return str(IPv6Address(relay_data[18:34]))
    return ""


def read_leases(path: str | Path, now: float | None = None) -> list[Lease6]:
    """The store's leases still valid at `now`, by address. A missing store is an empty one."""
    path = Path(path)
    if not path.exists():
        return []
    now = time.time() if now is None else now
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=2.0)
    try:
        rows = db.execute(
            "SELECT a.address, c.client_id, c.relay_data, a.valid_lifetime_end, a.preferred_lifetime_end, "
            "c.last_interaction FROM addresses a JOIN clients c ON a.client_fk = c.id "
            "WHERE a.valid_lifetime_end >= ?", (int(now),)).fetchall()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):  # created by the server's first start
            return []
        raise
    finally:
        db.close()
    leases = [Lease6(ip=IPv6Address(address), duid=client_id, mac=mac_of_duid(bytes.fromhex(client_id)),
                     client_address=_peer(bytes(relay_data or b"")), expires=int(valid_end),
                     preferred_until=int(preferred_end), last_seen=int(last))
              for address, client_id, relay_data, valid_end, preferred_end, last in rows]
    return sorted(leases, key=lambda lease: lease.ip)
