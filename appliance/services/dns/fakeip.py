"""The fake-IP pool: domain <-> address, stable, persisted, recycled by LRU.

A domain's address is a hash of its name into the pool, probing forward on
collision (as vproxy does), so the same name gets the same address even
without the database; the SQLite file makes probed choices and the mapping
survive restarts, so answers clients still hold stay valid.

When the pool is full the least recently used mapping is recycled, except
addresses pinned by live connections: the relay (issue 7) calls
`pin(ip)` when it accepts a connection to a fake address and `unpin(ip)`
when that connection ends (a count, so several connections can pin one).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

PROBES = 64


@dataclass(slots=True)
class FakeIpEntry:
    ip: str
    domain: str
    route: str
    created: float
    last_used: float


class FakeIpPool:
    def __init__(self, network: str = "100.96.0.0/11", db_path: str | None = None,
                 max_entries: int | None = None, clock: Callable[[], float] = time.time):
        self.network = ipaddress.IPv4Network(network)
        # Neither the network nor the broadcast address of the pool is handed out.
        self._first = int(self.network.network_address) + 1
        self._size = self.network.num_addresses - 2
        self.capacity = min(max_entries or self._size, self._size)
        self._clock = clock
        self._by_ip: OrderedDict[int, FakeIpEntry] = OrderedDict()  # LRU order
        self._by_domain: dict[str, int] = {}
        self._pins: dict[int, int] = {}
        self._dirty: set[int] = set()
        self.recycled = 0
        self._db: sqlite3.Connection | None = None
        if db_path:
            self._open(db_path)

    # -- persistence ---------------------------------------------------------
    def _open(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS fakeip (ip INTEGER PRIMARY KEY, domain TEXT UNIQUE NOT NULL,"
            " route TEXT NOT NULL, created REAL NOT NULL, last_used REAL NOT NULL)"
        )
        self._db = db
        rows = db.execute(
            "SELECT ip, domain, route, created, last_used FROM fakeip ORDER BY last_used"
        ).fetchall()
        stale = []
        for ip, domain, route, created, last_used in rows:
            if not self._in_pool(ip) or len(self._by_ip) >= self.capacity:
                stale.append((ip,))  # pool shrank or moved: forget what no longer fits
                continue
            self._by_ip[ip] = FakeIpEntry(str(ipaddress.IPv4Address(ip)), domain, route,
                                          created, last_used)
            self._by_domain[domain] = ip
        if stale:
            db.executemany("DELETE FROM fakeip WHERE ip = ?", stale)

    def flush(self) -> None:
        """Write last-used times (kept in memory between flushes: they change on every hit)."""
        if self._db is None or not self._dirty:
            return
        rows = [(self._by_ip[i].last_used, i) for i in self._dirty if i in self._by_ip]
        self._dirty.clear()
        self._db.executemany("UPDATE fakeip SET last_used = ? WHERE ip = ?", rows)

    def close(self) -> None:
        if self._db is not None:
            self.flush()
            self._db.close()
            self._db = None

    # -- allocation ----------------------------------------------------------
    def _in_pool(self, ip: int) -> bool:
        return self._first <= ip < self._first + self._size

    def _slot(self, domain: str) -> int:
        digest = hashlib.blake2b(domain.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % self._size

    def _evict_one(self) -> int | None:
        for ip in self._by_ip:
            if not self._pins.get(ip):
                entry = self._by_ip.pop(ip)
                del self._by_domain[entry.domain]
                self._dirty.discard(ip)
                if self._db is not None:
                    self._db.execute("DELETE FROM fakeip WHERE ip = ?", (ip,))
                self.recycled += 1
                return ip
        return None

    def allocate(self, domain: str, route: str = "direct") -> str | None:
        """The fake address of `domain`; None if the pool is full of pinned addresses."""
        now = self._clock()
        ip = self._by_domain.get(domain)
        if ip is not None:
            entry = self._by_ip[ip]
            self._by_ip.move_to_end(ip)
            entry.last_used = now
            self._dirty.add(ip)
            if entry.route != route:
                entry.route = route
                if self._db is not None:
                    self._db.execute("UPDATE fakeip SET route = ? WHERE ip = ?", (route, ip))
            return entry.ip
        freed = None
        if len(self._by_ip) >= self.capacity:
            freed = self._evict_one()
            if freed is None:
                return None
        start = self._slot(domain)
        chosen = None
        for step in range(PROBES):
            candidate = self._first + (start + step) % self._size
            if candidate not in self._by_ip:
                chosen = candidate
                break
        if chosen is None:
            chosen = freed if freed is not None else self._evict_one()
            if chosen is None:
                return None
        entry = FakeIpEntry(str(ipaddress.IPv4Address(chosen)), domain, route, now, now)
        self._by_ip[chosen] = entry
        self._by_domain[domain] = chosen
        if self._db is not None:
            self._db.execute(
                "INSERT OR REPLACE INTO fakeip (ip, domain, route, created, last_used)"
                " VALUES (?, ?, ?, ?, ?)", (chosen, domain, route, now, now))
        return entry.ip

    def touch(self, ip: str) -> None:
        """Mark a mapping used (a cached fake answer was served again)."""
        key = int(ipaddress.IPv4Address(ip))
        entry = self._by_ip.get(key)
        if entry is not None:
            self._by_ip.move_to_end(key)
            entry.last_used = self._clock()
            self._dirty.add(key)

    # -- the relay's interface ----------------------------------------------
    def lookup_ip(self, ip: str) -> FakeIpEntry | None:
        try:
            return self._by_ip.get(int(ipaddress.IPv4Address(ip)))
        except ValueError:
            return None

    def lookup_domain(self, domain: str) -> FakeIpEntry | None:
        ip = self._by_domain.get(domain.lower().rstrip("."))
        return None if ip is None else self._by_ip[ip]

    def pin(self, ip: str) -> bool:
        """A live connection uses `ip`: never recycle it until unpinned. False if unmapped."""
        key = int(ipaddress.IPv4Address(ip))
        if key not in self._by_ip:
            return False
        self._pins[key] = self._pins.get(key, 0) + 1
        return True

    def unpin(self, ip: str) -> None:
        key = int(ipaddress.IPv4Address(ip))
        count = self._pins.get(key, 0) - 1
        if count > 0:
            self._pins[key] = count
        else:
            self._pins.pop(key, None)

    def pins(self, ip: str) -> int:
        return self._pins.get(int(ipaddress.IPv4Address(ip)), 0)

    def __contains__(self, ip: str) -> bool:
        try:
            return self._in_pool(int(ipaddress.IPv4Address(ip)))
        except ValueError:
            return False

    def __len__(self) -> int:
        return len(self._by_ip)

    def table(self, limit: int | None = None) -> list[dict]:
        """Mappings, most recently used first, with their pin counts."""
        out = []
        for key in reversed(self._by_ip):
            entry = self._by_ip[key]
            out.append({"ip": entry.ip, "domain": entry.domain, "route": entry.route,
                        "created": entry.created, "last_used": entry.last_used,
                        "pins": self._pins.get(key, 0)})
            if limit is not None and len(out) >= limit:
                break
        return out
