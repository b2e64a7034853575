"""What the DNS server answered, counted per minute for the console's charts.

A sink of the query log (`QueryLog.sinks`): every settled batch, the workers'
entries included, is counted here by (action, from the cache, client) in
one C-speed `Counter` pass, then folded into the series below; every
`FLUSH_EVERY` seconds the counts go into the minute and hour buckets of the
time-series store (`appliance.services.timeseries`), which is pruned hourly.

  dns.queries     every answer               dns.fake_ip    fake-IP answers
  dns.blocked     blocked names              dns.forwarded  asked upstream (not from the cache)
  dns.cached      forwarded names answered from the answer cache
  dns.group.NAME.queries / .blocked          per client group, when there are groups

A batch is settled within a second of its answers, so it is counted in the
minute it was settled in: a minute's edge may move a second's answers over.
Counts the store could not take (a full disk) wait for the next flush, a
day's worth at most.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from operator import itemgetter
from typing import Callable

from appliance.services.timeseries import KEEP, MINUTE, Series

log = logging.getLogger(__name__)

FLUSH_EVERY = 10.0
PRUNE_EVERY = 3600.0
_KEY = itemgetter(4, 6, 1)  # action, cached, client of a LogEntry tuple


class DnsSeries:
    def __init__(self, path: str, group_of: Callable[[str], str | None] | None = None,
                 clock: Callable[[], float] = time.time):
        self.store = Series(path)
        self.group_of = group_of  # client address -> its group's name, None while there are no groups
        self._clock = clock
        self._minutes: dict[int, Counter[str]] = {}
        self._pruned = 0.0
        self.last_error: str | None = None

    def count(self, batch: list[tuple]) -> None:
        now = self._clock()
        minute = int(now) - int(now) % MINUTE
        counts = self._minutes.setdefault(minute, Counter())
        group_of = self.group_of
        groups: dict[str, str] = {}
        for (action, cached, client), n in Counter(map(_KEY, batch)).items():
            counts["dns.queries"] += n
            if action == "block":
                counts["dns.blocked"] += n
            elif action == "fake-ip":
                counts["dns.fake_ip"] += n
            elif action == "direct":
                counts["dns.cached" if cached else "dns.forwarded"] += n
            if group_of is not None:
                if client not in groups:
                    groups[client] = group_of(client)
                group = groups[client]
                if group is None:
                    continue
                counts[f"dns.group.{group}.queries"] += n
                if action == "block":
                    counts[f"dns.group.{group}.blocked"] += n

    def flush(self) -> None:
        """Write the counts so far into the store; prune it once an hour."""
        now = self._clock()
        try:
            for minute in sorted(self._minutes):
                self.store.add(self._minutes[minute], now=minute)
                del self._minutes[minute]
            if now - self._pruned >= PRUNE_EVERY:
                self.store.prune(now)
                self._pruned = now
            self.last_error = None
        except Exception as exc:  # noqa: BLE001 - sqlite3.Error, OSError: kept for the next flush
            if self.last_error is None:
                log.error("DNS series not written to %s: %s", self.store.path, exc)
            self.last_error = str(exc)
            horizon = now - KEEP[MINUTE]
            for minute in [m for m in self._minutes if m < horizon]:
                del self._minutes[minute]

    def close(self) -> None:
        self.flush()
        self.store.close()
