"""Where the relay learns a fake address's domain and route, and pins it.

One interface (`await lookup(ip)`, `pin(ip)`, `unpin(ip)`, `close()`), two
implementations:

- `PoolDirectory` wraps the DNS server's `FakeIpPool` itself, for a relay
  running in the DNS server's process (and for tests without a server).
- `DnsDirectory` is the relay process's: it talks to the DNS server's
  control socket (`appliance.services.dns.control`: ops `lookup_fake_ip`,
  `pin`, `unpin`) over one long-lived connection, requests pipelined and
  answered in order. The DNS server ties pins to that connection, so pins of
  a relay that dies are released by themselves; when the relay reconnects
  (the DNS server restarted) it pins its live addresses again. While the
  control socket is unreachable, lookups fall back to the DNS server's
  persisted store (the `fakeip` table of its SQLite file, read-only), so
  relaying goes on; pins then wait for the reconnection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import sqlite3
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("appliance.relay")

LOOKUP_TIMEOUT = 2.0
RECONNECT_EVERY = 1.0


@dataclass(frozen=True, slots=True)
class FakeTarget:
    domain: str
    route: str


class Directory(Protocol):
    async def lookup(self, ip: str) -> FakeTarget | None: ...
    def pin(self, ip: str) -> None: ...
    def unpin(self, ip: str) -> None: ...
    def close(self) -> None: ...


class PoolDirectory:
    """The DNS server's pool, in this process."""

    def __init__(self, pool):
        self.pool = pool

    async def lookup(self, ip: str) -> FakeTarget | None:
        entry = self.pool.lookup_ip(ip)
        return None if entry is None else FakeTarget(entry.domain, entry.route)

    def pin(self, ip: str) -> None:
        self.pool.pin(ip)

    def unpin(self, ip: str) -> None:
        self.pool.unpin(ip)

    def close(self) -> None:
        pass


class StoreReader:
    """Read-only look-ups in the DNS server's SQLite store."""

    def __init__(self, db_path: str | None):
        self.db_path = db_path
        self._db: sqlite3.Connection | None = None

    def lookup(self, ip: str) -> FakeTarget | None:
        if not self.db_path:
            return None
        try:
            if self._db is None:
                self._db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=1.0)
            row = self._db.execute("SELECT domain, route FROM fakeip WHERE ip = ?",
                                   (int(ipaddress.IPv4Address(ip)),)).fetchone()
        except sqlite3.Error as exc:
            log.warning("fake-IP store %s: lookup of %s failed: %s", self.db_path, ip, exc)
            self.close()
            return None
        return None if row is None else FakeTarget(row[0], row[1])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class DnsDirectory:
    """The DNS server's control socket, with the persisted store as fallback."""

    def __init__(self, control_socket: str | None, db_path: str | None):
        self.path = control_socket
        self.store = StoreReader(db_path)
        self.pins: Counter[str] = Counter()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._waiters: deque[asyncio.Future | None] = deque()
        self._connecting: asyncio.Task | None = None
        self._next_try = 0.0
        self._warned = False
        self._closed = False

    # -- connection -----------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def _connect(self) -> bool:
        if self.connected:
            return True
        if self.path is None or self._closed or time.monotonic() < self._next_try:
            return False
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            self._connecting = None

    async def _open(self) -> bool:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(self.path), 2.0)
        except (OSError, asyncio.TimeoutError) as exc:
            self._next_try = time.monotonic() + RECONNECT_EVERY
            if not self._warned:
                log.warning("DNS control socket %s: %s; looking fake addresses up in %s, "
                            "pins wait for the DNS server", self.path, exc, self.store.db_path)
                self._warned = True
            return False
        self._reader, self._writer = reader, writer
        self._warned = False
        asyncio.ensure_future(self._read_replies(reader))
        # The server dropped our pins with the old connection: take them again.
        for ip, count in self.pins.items():
            for _ in range(count):
                self._send("pin", ip=ip)
        log.info("DNS control socket %s connected; %d addresses pinned", self.path, len(self.pins))
        return True

    def _send(self, op: str, want_reply: bool = False, **args) -> asyncio.Future | None:
        fut = asyncio.get_running_loop().create_future() if want_reply else None
        self._waiters.append(fut)
        self._writer.write(json.dumps({"op": op, "args": args}).encode() + b"\n")
        return fut

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                fut = self._waiters.popleft() if self._waiters else None
                if fut is not None and not fut.done():
                    fut.set_result(json.loads(line))
        except (OSError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            if self._reader is reader:
                self._drop("connection closed")

    def _drop(self, why: str) -> None:
        if self._writer is not None:
            log.warning("DNS control socket %s: %s", self.path, why)
            self._writer.close()
        self._reader = self._writer = None
        while self._waiters:
            fut = self._waiters.popleft()
            if fut is not None and not fut.done():
                fut.set_exception(ConnectionError(why))

    # -- the directory interface ----------------------------------------------
    async def lookup(self, ip: str) -> FakeTarget | None:
        if await self._connect():
            try:
                reply = await asyncio.wait_for(self._send("lookup_fake_ip", True, ip=ip),
                                               LOOKUP_TIMEOUT)
            except asyncio.TimeoutError:
                self._drop(f"no answer within {LOOKUP_TIMEOUT:g}s")
            except ConnectionError:
                pass
            else:
                result = reply.get("result") if reply.get("ok") else None
                if result is None:
                    return None
                return FakeTarget(result["domain"], result["route"])
        return self.store.lookup(ip)

    def pin(self, ip: str) -> None:
        self.pins[ip] += 1
        if self.connected:
            self._send("pin", ip=ip)
        elif self.path is not None:
            asyncio.ensure_future(self._connect())  # re-pins everything when it connects

    def unpin(self, ip: str) -> None:
        if self.pins[ip] <= 0:
            return
        self.pins[ip] -= 1
        if not self.pins[ip]:
            del self.pins[ip]
        if self.connected:
            self._send("unpin", ip=ip)

    def close(self) -> None:
        self._closed = True
        self._drop("relay stopping") if self.connected else None
        self.store.close()
