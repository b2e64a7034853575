"""The relay's bookkeeping: live connections, bounded history, byte counters.

Pure data, no I/O: the relay adds a `Connection` when it accepts one and
calls `close` when it ends; the console reads `live()`, `history()` and
`counters()` (through `Relay` in-process, or the control socket).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

MAX_COUNTER_KEYS = 50000  # per table; beyond it the smallest entries are dropped


@dataclass(slots=True, eq=False)
class Connection:
    id: int
    proto: str  # "tcp" | "udp"
    client: tuple[str, int]
    fake: tuple[str, int]
    domain: str | None
    route: str
    started: float  # wall clock
    real: str | None = None  # "ip:port" for direct, "proxy NAME" otherwise
    state: str = "connecting"  # connecting | open | closed | failed | refused
    path: str = "relay"  # "kernel": NATed by the fast path, never seen by the relay
    counted: bool = True  # False: the counters get its bytes from elsewhere
    error: str | None = None
    ended: float | None = None
    up: int = 0  # client -> internet
    down: int = 0  # internet -> client
    counted_up: int = 0  # already added to the counters
    counted_down: int = 0
    bytes_fn: Callable[[], tuple[int, int]] | None = field(default=None, repr=False)

    def current(self) -> tuple[int, int]:
        if self.bytes_fn is not None:
            self.up, self.down = self.bytes_fn()
        return self.up, self.down

    def as_dict(self, now: float) -> dict:
        up, down = self.current()
        return {
            "id": self.id, "proto": self.proto,
            "client": f"{self.client[0]}:{self.client[1]}",
            "domain": self.domain, "fake_ip": self.fake[0], "port": self.fake[1],
            "real": self.real, "route": self.route, "path": self.path,
            "state": self.state, "error": self.error,
            "bytes_up": up, "bytes_down": down,
            "started": self.started,
            "age": round((self.ended or now) - self.started, 3),
        }


class ByteCounters:
    """Bytes and connections per key (a domain or a client address)."""

    def __init__(self, max_keys: int = MAX_COUNTER_KEYS):
        self.max_keys = max_keys
        self.data: dict[str, list[int]] = {}  # key -> [up, down, connections]

    def add(self, key: str, up: int, down: int, connections: int = 0) -> None:
        entry = self.data.get(key)
        if entry is None:
            if len(self.data) >= self.max_keys:
                self._trim()
            entry = self.data[key] = [0, 0, 0]
        entry[0] += up
        entry[1] += down
        entry[2] += connections

    def _trim(self) -> None:
        keep = sorted(self.data.items(), key=lambda kv: kv[1][0] + kv[1][1], reverse=True)
        self.data = dict(keep[: self.max_keys * 3 // 4])

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {k: {"bytes_up": v[0], "bytes_down": v[1], "connections": v[2]}
                for k, v in self.data.items()}


class ConnectionTable:
    def __init__(self, history_size: int = 1000, clock: Callable[[], float] = time.time):
        self.clock = clock
        self._ids = itertools.count(1)
        self.live_connections: dict[int, Connection] = {}
        self.history_entries: deque[dict] = deque(maxlen=history_size)
        self.by_domain = ByteCounters()
        self.by_client = ByteCounters()
        # "fast_path": connections the kernel NATed (counted from its own counters).
        self.totals = {"accepted": 0, "refused": 0, "failed": 0, "closed": 0, "fast_path": 0}

    def resize_history(self, size: int) -> None:
        if size != self.history_entries.maxlen:
            self.history_entries = deque(self.history_entries, maxlen=size)

    def open(self, proto: str, client: tuple[str, int], fake: tuple[str, int],
             domain: str | None, route: str, counted: bool = True) -> Connection:
        """A new live row; `counted=False`: its bytes reach the counters another way."""
        conn = Connection(next(self._ids), proto, client, fake, domain, route, self.clock())
        conn.counted = counted
        self.live_connections[conn.id] = conn
        if not counted:
            return conn
        self.totals["accepted"] += 1
        self.by_client.add(client[0], 0, 0, 1)
        if domain:
            self.by_domain.add(domain, 0, 0, 1)
        return conn

    def _count(self, conn: Connection) -> None:
        up, down = conn.current()
        if not conn.counted:
            return
        du, dd = up - conn.counted_up, down - conn.counted_down
        if du or dd:
            conn.counted_up, conn.counted_down = up, down
            self.by_client.add(conn.client[0], du, dd)
            if conn.domain:
                self.by_domain.add(conn.domain, du, dd)

    def close(self, conn: Connection, state: str = "closed", error: str | None = None) -> None:
        if self.live_connections.pop(conn.id, None) is None:
            return
        self._count(conn)
        conn.bytes_fn = None
        conn.state, conn.error, conn.ended = state, error, self.clock()
        if conn.counted:
            self.totals[state if state in self.totals else "closed"] += 1
        self.history_entries.append(conn.as_dict(conn.ended))

    # -- queries --------------------------------------------------------------
    def live(self) -> list[dict]:
        now = self.clock()
        return [c.as_dict(now) for c in self.live_connections.values()]

    def history(self, limit: int | None = None) -> list[dict]:
        items = list(self.history_entries)
        return items[-limit:] if limit else items

    def counters(self) -> dict:
        for conn in self.live_connections.values():
            self._count(conn)
        return {"domains": self.by_domain.as_dict(), "clients": self.by_client.as_dict(),
                "totals": dict(self.totals), "live": len(self.live_connections)}
