"""The query log, bounded by entries and age, and the statistics over it.

Kept in memory only (AdGuard Home's on-disk log is what fills flash); the
oldest entries fall off when the log is full or too old. Statistics over the
retained window (top domains, top clients, blocked share) are kept as running
counters, so reading them does not scan the log.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from operator import itemgetter
from typing import Callable, NamedTuple

import dns.rdatatype


class LogEntry(NamedTuple):
    time: float
    client: str
    qname: str
    qtype: int
    action: str  # block | direct | fake-ip | rewrite | local | cache-only | refused ...
    rcode: int
    cached: bool
    origin: str  # the rule or list that decided

    def as_dict(self) -> dict:
        return {
            "time": self.time, "client": self.client, "qname": self.qname,
            "qtype": dns.rdatatype.to_text(self.qtype) if 0 <= self.qtype < 65536 else str(self.qtype),
            "action": self.action, "rcode": self.rcode, "cached": self.cached, "origin": self.origin,
        }


class QueryLog:
    """The log and its counters.

    Answering a query only appends a tuple (the LogEntry fields) to
    `pending`; `settle()` (on every read, and every `SETTLE_EVERY` seconds
    from the server) counts them in bulk and trims the log. The list object
    stays the same, so the server may keep `pending.append` bound.
    """

    SETTLE_EVERY = 1.0

    def __init__(self, max_entries: int = 20000, max_age: float = 86400,
                 clock: Callable[[], float] = time.time):
        self.max_entries = max_entries
        self.max_age = max_age
        self._clock = clock
        self.pending: list[tuple] = []
        self._entries: deque[tuple] = deque()
        self._domains: Counter[str] = Counter()
        self._clients: Counter[str] = Counter()
        self._blocked_domains: Counter[str] = Counter()
        self._actions: Counter[str] = Counter()
        self._total = 0  # settled, since start, including entries no longer retained
        self._total_blocked = 0
        self.dropped = Counter()  # not answered: rate-limited, not allowed

    def add(self, client: str, qname: str, qtype: int, action: str, rcode: int,
            cached: bool = False, origin: str = "", now: float | None = None) -> None:
        self.pending.append((self._clock() if now is None else now, client, qname, qtype, action,
                             rcode, cached, origin))

    def add_batch(self, entries: list[tuple]) -> None:
        """Entries another process logged (a worker's batch): LogEntry fields, in order."""
        self.pending.extend(entries)

    @property
    def total(self) -> int:
        return self._total + len(self.pending)

    @property
    def total_blocked(self) -> int:
        self.settle()
        return self._total_blocked

    def settle(self) -> None:
        """Count the pending entries into the log and its counters; trim it."""
        pending = self.pending
        if pending:
            batch = pending[:]
            pending.clear()
            self._total += len(batch)
            blocked = [e[2] for e in batch if e[4] == "block"]
            self._total_blocked += len(blocked)
            if self.max_entries > 0:
                if len(batch) > self.max_entries:
                    del batch[:len(batch) - self.max_entries]
                    blocked = [e[2] for e in batch if e[4] == "block"]
                self._entries.extend(batch)
                self._clients.update(map(itemgetter(1), batch))
                self._domains.update(map(itemgetter(2), batch))
                self._actions.update(map(itemgetter(4), batch))
                self._blocked_domains.update(blocked)
        self._trim(self._clock())

    def _trim(self, now: float) -> None:
        entries = self._entries
        gone = []
        excess = len(entries) - self.max_entries
        for _ in range(max(0, excess)):
            gone.append(entries.popleft())
        horizon = now - self.max_age
        while entries and entries[0][0] < horizon:
            gone.append(entries.popleft())
        if gone:
            _decrement(self._clients, map(itemgetter(1), gone))
            _decrement(self._domains, map(itemgetter(2), gone))
            _decrement(self._actions, map(itemgetter(4), gone))
            _decrement(self._blocked_domains, (e[2] for e in gone if e[4] == "block"))

    def __len__(self) -> int:
        self.settle()
        return len(self._entries)

    def search(self, client: str | None = None, domain: str | None = None,
               action: str | None = None, since: float | None = None,
               limit: int = 100) -> list[dict]:
        """Newest first. `domain` is a substring; `client` and `action` are exact."""
        self.settle()
        domain = domain.lower().rstrip(".") if domain else None
        out = []
        for entry in reversed(self._entries):
            when, who, qname, _, what, _, _, _ = entry
            if since is not None and when < since:
                break
            if client and who != client:
                continue
            if action and what != action:
                continue
            if domain and domain not in qname:
                continue
            out.append(LogEntry._make(entry).as_dict())
            if len(out) >= limit:
                break
        return out

    def stats(self, top: int = 10) -> dict:
        self.settle()
        retained = len(self._entries)
        blocked = self._actions.get("block", 0)
        return {
            "queries_total": self.total,
            "blocked_total": self.total_blocked,
            "window_seconds": self.max_age,
            "queries": retained,
            "blocked": blocked,
            "blocked_share": (blocked / retained) if retained else 0.0,
            "by_action": dict(self._actions),
            "top_domains": self._domains.most_common(top),
            "top_blocked": self._blocked_domains.most_common(top),
            "top_clients": self._clients.most_common(top),
            "not_answered": dict(self.dropped),
        }


def _decrement(counter: Counter, keys) -> None:
    for key in keys:
        left = counter[key] - 1
        if left > 0:
            counter[key] = left
        else:
            del counter[key]
