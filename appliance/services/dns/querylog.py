"""The query log, bounded by entries and age, and the statistics over it.

The newest entries are kept in memory (what the console reads first); the
oldest fall off when the log is full or too old. Statistics over the
retained window (top domains, top clients, blocked share) are kept as running
counters, so reading them does not scan the log. Every settled batch also
goes to the `sinks`: the log on disk (`querydisk.DiskLog`, bounded by size
and age) and the per-minute counts for the charts (`series.DnsSeries`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter, deque
from operator import itemgetter
from typing import Callable, NamedTuple, Optional

import dns.rdatatype

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=256)
def _type_text(qtype: int) -> str:
    # dnspython's to_text goes through an enum each time: a fifth of a query-log search's cost.
    return dns.rdatatype.to_text(qtype) if 0 <= qtype < 65536 else str(qtype)


class LogEntry(NamedTuple):
    time: float
    client: str
    qname: str
    qtype: int
    action: str  # block | direct | fake-ip | rewrite | local | cache-only | refused ...
    rcode: int
    cached: bool
    origin: str  # the rule or list that decided
    mac: str = ""  # the client's MAC when the box knows it (neighbour table, DHCP lease)

    def as_dict(self) -> dict:
        return {
            "time": self.time, "client": self.client, "mac": self.mac or None, "qname": self.qname,
            "qtype": _type_text(self.qtype),
            "action": self.action, "rcode": self.rcode, "cached": self.cached, "origin": self.origin,
        }


def matches(entry: tuple, client: str | None, mac: str | None, domain: str | None,
            action: str | None) -> bool:
    """The search's filters on one entry (LogEntry fields): `domain` a lower-case substring."""
    return (not client or entry[1] == client) and (not action or entry[4] == action) and \
        (not domain or domain in entry[2]) and (not mac or entry[8] == mac)


class QueryLog:
    """The log and its counters.

    Answering a query only appends a tuple (the LogEntry fields) to
    `pending`; `settle()` (on every read, and every `SETTLE_EVERY` seconds
    from the server) counts them in bulk and trims the log. The list object
    stays the same, so the server may keep `pending.append` bound.
    """

    # Every settle holds the event loop for its batch, ~1.8 us an entry (its disk line, the
    # counters), and the queries that come meanwhile wait: at 5,000 q/s a 1-s batch held it 2-6 ms,
    # a 0.2-s batch ~1.8 ms, a 0.05-s batch ~0.45 ms. Settled whole, not in chunks between the
    # queries: a chunk per event-loop turn falls behind a saturated server and the backlog grows.
    SETTLE_EVERY = 0.05

    MACS_FOR = 60.0  # seconds a client's MAC is remembered (the ARP table is a file read)

    def __init__(self, max_entries: int = 20000, max_age: float = 86400,
                 clock: Callable[[], float] = time.time,
                 mac_of: Callable[[str], Optional[str]] | None = None):
        self.max_entries = max_entries
        self._mac_of = mac_of
        self._macs: dict[str, str] = {}
        self._macs_at = 0.0
        # Called with every settled batch (LogEntry tuples, MAC included), before the memory's bounds.
        self.sinks: list[Callable[[list[tuple]], None]] = []
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
            batch = self._with_macs(pending[:])
            pending.clear()
            for sink in self.sinks:
                try:
                    sink(batch)
                except Exception:  # noqa: BLE001 - a full disk costs the disk log, never the answers
                    log.exception("query log sink %s failed", getattr(sink, "__qualname__", sink))
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

    def _with_macs(self, batch: list[tuple]) -> list[tuple]:
        now = self._clock()
        if now - self._macs_at > self.MACS_FOR:
            self._macs, self._macs_at = {}, now
        macs = self._macs
        mac_of = self._mac_of
        for client in {e[1] for e in batch} - macs.keys():
            macs[client] = (mac_of(client) if mac_of else None) or ""
        return [e + (macs[e[1]],) for e in batch]

    def oldest(self) -> float | None:
        """The time of the oldest entry in memory (older ones are only on disk), None when empty."""
        self.settle()
        return self._entries[0][0] if self._entries else None

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
               limit: int = 100, mac: str | None = None) -> list[dict]:
        """Newest first. `domain` is a substring; `client`, `mac` and `action` are exact."""
        self.settle()
        domain = domain.lower().rstrip(".") if domain else None
        mac = mac.lower() if mac else None
        out = []
        for entry in reversed(self._entries):
            if since is not None and entry[0] < since:
                break
            if not matches(entry, client, mac, domain, action):
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
    # Counted first (at C speed): a Python step per distinct key, not per entry. The clients and
    # the actions of a batch are a handful.
    for key, n in Counter(keys).items():
        left = counter[key] - n
        if left > 0:
            counter[key] = left
        else:
            del counter[key]
