"""Where the relay learns a fake address's domain and route, and pins it.

Two directories with one interface (`lookup`, `pin`, `unpin`):

- `PoolDirectory` wraps the DNS server's `FakeIpPool` itself; for a relay
  running in the DNS server's process (and for tests).
- `StoreDirectory` reads the DNS server's persisted store (the `fakeip`
  table of its SQLite file, written on every allocation, so a fresh mapping
  is visible at once) for a relay in its own process. Pins go to a
  `fakeip_pins` table in the same file, one row per pinned address, written
  only when an address goes from 0 to 1 live connections and back, so a
  burst of connections to one site costs two writes. The pool skips these
  addresses when it recycles (see `FakeIpPool._evict_one`). The relay
  clears the table when it starts: pins of a relay that died are void.
"""

from __future__ import annotations

import ipaddress
import logging
import sqlite3
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

PINS_TABLE = "fakeip_pins"


@dataclass(frozen=True, slots=True)
class FakeTarget:
    domain: str
    route: str


class Directory(Protocol):
    def lookup(self, ip: str) -> FakeTarget | None: ...
    def pin(self, ip: str) -> None: ...
    def unpin(self, ip: str) -> None: ...
    def close(self) -> None: ...


class PoolDirectory:
    """The DNS server's pool, in this process."""

    def __init__(self, pool):
        self.pool = pool

    def lookup(self, ip: str) -> FakeTarget | None:
        entry = self.pool.lookup_ip(ip)
        return None if entry is None else FakeTarget(entry.domain, entry.route)

    def pin(self, ip: str) -> None:
        self.pool.pin(ip)

    def unpin(self, ip: str) -> None:
        self.pool.unpin(ip)

    def close(self) -> None:
        pass


class StoreDirectory:
    """The DNS server's SQLite store, from another process."""

    def __init__(self, db_path: str):
        self.db_path = db_path
        self._counts: dict[int, int] = {}
        self._db: sqlite3.Connection | None = None
        self._connect()
        if self._db is not None:
            self._write("DELETE FROM fakeip_pins")

    def _connect(self) -> sqlite3.Connection | None:
        if self._db is not None:
            return self._db
        try:
            db = sqlite3.connect(self.db_path, isolation_level=None, timeout=2.0)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"CREATE TABLE IF NOT EXISTS {PINS_TABLE} (ip INTEGER PRIMARY KEY)")
        except sqlite3.Error as exc:
            # The DNS server may not have created its store yet; try again on the next lookup.
            log.warning("fake-IP store %s not usable yet: %s", self.db_path, exc)
            return None
        self._db = db
        return db

    def _write(self, sql: str, *args) -> None:
        db = self._connect()
        if db is None:
            return
        try:
            db.execute(sql, args)
        except sqlite3.Error as exc:
            log.warning("fake-IP store %s: %s failed: %s", self.db_path, sql.split()[0], exc)

    def lookup(self, ip: str) -> FakeTarget | None:
        db = self._connect()
        if db is None:
            return None
        try:
            row = db.execute("SELECT domain, route FROM fakeip WHERE ip = ?",
                             (int(ipaddress.IPv4Address(ip)),)).fetchone()
        except sqlite3.Error as exc:
            log.warning("fake-IP store %s: lookup of %s failed: %s", self.db_path, ip, exc)
            return None
        return None if row is None else FakeTarget(row[0], row[1])

    def pin(self, ip: str) -> None:
        key = int(ipaddress.IPv4Address(ip))
        count = self._counts.get(key, 0)
        self._counts[key] = count + 1
        if count == 0:
            self._write(f"INSERT OR IGNORE INTO {PINS_TABLE} (ip) VALUES (?)", key)

    def unpin(self, ip: str) -> None:
        key = int(ipaddress.IPv4Address(ip))
        count = self._counts.get(key, 0) - 1
        if count > 0:
            self._counts[key] = count
            return
        self._counts.pop(key, None)
        self._write(f"DELETE FROM {PINS_TABLE} WHERE ip = ?", key)

    def pins(self, ip: str) -> int:
        return self._counts.get(int(ipaddress.IPv4Address(ip)), 0)

    def close(self) -> None:
        if self._db is not None:
            self._write(f"DELETE FROM {PINS_TABLE}")
            self._db.close()
            self._db = None
