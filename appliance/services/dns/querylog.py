"""The query log, bounded by entries and age, and the statistics over it.

Kept in memory only (AdGuard Home's on-disk log is what fills flash); the
oldest entries fall off when the log is full or too old. Statistics over the
retained window (top domains, top clients, blocked share) are kept as running
counters, so reading them does not scan the log.
"""

from __future__ import annotations

import time
from collections import Counter, deque
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
    def __init__(self, max_entries: int = 20000, max_age: float = 86400,
                 clock: Callable[[], float] = time.time):
        self.max_entries = max_entries
        self.max_age = max_age
        self._clock = clock
        self._entries: deque[LogEntry] = deque()
        self._domains: Counter[str] = Counter()
        self._clients: Counter[str] = Counter()
        self._blocked_domains: Counter[str] = Counter()
        self._actions: Counter[str] = Counter()
        self.total = 0  # since start, including entries no longer retained
        self.total_blocked = 0
        self.dropped = Counter()  # not answered: rate-limited, not allowed

    def add(self, client: str, qname: str, qtype: int, action: str, rcode: int,
            cached: bool = False, origin: str = "", now: float | None = None) -> None:
        self.total += 1
        if action == "block":
            self.total_blocked += 1
        if self.max_entries == 0:
            return
        now = self._clock() if now is None else now
        entry = LogEntry(now, client, qname, qtype, action, rcode, cached, origin)
        self._entries.append(entry)
        self._domains[qname] += 1
        self._clients[client] += 1
        self._actions[action] += 1
        if action == "block":
            self._blocked_domains[qname] += 1
        self._trim(now)

    def add_batch(self, entries: list[tuple]) -> None:
        """Entries another process logged (a worker's batch): LogEntry fields, in order."""
        add = self.add
        for when, client, qname, qtype, action, rcode, cached, origin in entries:
            add(client, qname, qtype, action, rcode, cached, origin, when)

    def _forget(self, entry: LogEntry) -> None:
        for counter, key in ((self._domains, entry.qname), (self._clients, entry.client),
                             (self._actions, entry.action)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]
        if entry.action == "block":
            self._blocked_domains[entry.qname] -= 1
            if self._blocked_domains[entry.qname] <= 0:
                del self._blocked_domains[entry.qname]

    def _trim(self, now: float) -> None:
        entries = self._entries
        while len(entries) > self.max_entries:
            self._forget(entries.popleft())
        horizon = now - self.max_age
        while entries and entries[0].time < horizon:
            self._forget(entries.popleft())

    def __len__(self) -> int:
        return len(self._entries)

    def search(self, client: str | None = None, domain: str | None = None,
               action: str | None = None, since: float | None = None,
               limit: int = 100) -> list[dict]:
        """Newest first. `domain` is a substring; `client` and `action` are exact."""
        self._trim(self._clock())
        domain = domain.lower().rstrip(".") if domain else None
        out = []
        for entry in reversed(self._entries):
            if since is not None and entry.time < since:
                break
            if client and entry.client != client:
                continue
            if action and entry.action != action:
                continue
            if domain and domain not in entry.qname:
                continue
            out.append(entry.as_dict())
            if len(out) >= limit:
                break
        return out

    def stats(self, top: int = 10) -> dict:
        self._trim(self._clock())
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
