"""The answer cache: upstream answers by (name, type, class), honouring TTLs.

Entries are `wire.Prepared` answers (the records' bytes, ready to send to
any client). Positive answers live for their smallest answer TTL (clamped
to min/max), negative ones (NXDOMAIN, NODATA) for the SOA's negative TTL as
RFC 2308 says, capped. Expired entries are kept `stale_max_age` more
seconds so the server can serve them while the upstream is slow or down
(RFC 8767). Least recently used entries go first when the cache is full.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

from .wire import NOERROR, NXDOMAIN, Prepared

Key = tuple[str, int, int]  # (lower-case name without dot, qtype, qclass)

# Without an SOA there is no negative TTL to honour; cache briefly anyway so a
# storm of lookups for a missing name does not all go upstream.
NO_SOA_NEGATIVE_TTL = 30


class AnswerCache:
    def __init__(self, size: int = 20000, min_ttl: int = 0, max_ttl: int = 86400,
                 negative_ttl: int = 300, stale_max_age: int = 86400,
                 clock: Callable[[], float] = time.monotonic):
        self.size = size
        self.min_ttl, self.max_ttl = min_ttl, max_ttl
        self.negative_ttl = negative_ttl
        self.stale_max_age = stale_max_age
        self._clock = clock
        self._entries: OrderedDict[Key, Prepared] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def drop_where(self, doomed: Callable[[Key, Prepared], bool]) -> int:
        """Forget the entries `doomed` says so of; how many."""
        keys = [key for key, entry in self._entries.items() if doomed(key, entry)]
        for key in keys:
            del self._entries[key]
        return len(keys)

    def lookup(self, key: Key, now: float) -> tuple[Prepared | None, bool]:
        """(entry, fresh) in one look-up: a fresh entry, a stale one (fresh False), or (None, False)."""
        entry = self._entries.get(key)
        if entry is None:
            return None, False
        expires = entry.stored + entry.lifetime
        if now < expires:
            self._entries.move_to_end(key)
            return entry, True
        if now < expires + self.stale_max_age:
            return entry, False
        del self._entries[key]
        return None, False

    def get(self, key: Key) -> tuple[Prepared, bool] | None:
        """(entry, fresh) or None. A stale entry is returned with fresh=False."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self._clock()
        expires = entry.stored + entry.lifetime
        if now < expires:
            self._entries.move_to_end(key)
            return entry, True
        if now < expires + self.stale_max_age:
            return entry, False
        del self._entries[key]
        return None

    def ttl_for(self, answer: Prepared) -> int | None:
        rcode = answer.rcode
        if rcode not in (NOERROR, NXDOMAIN):
            return None  # SERVFAIL, REFUSED...: not cached (RFC 2308 allows 5 minutes; we retry)
        if answer.an and rcode == NOERROR:
            return min(max(answer.answer_ttl, self.min_ttl), self.max_ttl)
        if answer.negative_ttl is not None:
            return min(answer.negative_ttl, self.negative_ttl)
        return min(NO_SOA_NEGATIVE_TTL, self.negative_ttl)

    def put(self, key: Key, answer: Prepared) -> bool:
        """Keep `answer` (stamped now, with its lifetime); False if it is not cacheable."""
        ttl = self.ttl_for(answer)
        answer.stored = self._clock()
        if ttl is None:
            return False
        answer.lifetime = ttl
        if self.size <= 0:
            return True
        entries = self._entries
        entries[key] = answer
        entries.move_to_end(key)
        if len(entries) > self.size:
            entries.popitem(last=False)
        return True
