"""The answer cache: upstream answers by (name, type, class), honouring TTLs.

Positive answers live for their smallest TTL (clamped to min/max), negative
ones (NXDOMAIN, NODATA) for the SOA's negative TTL as RFC 2308 says, capped.
Expired entries are kept `stale_max_age` more seconds so the server can serve
them while the upstream is slow or down (RFC 8767). Least recently used
entries go first when the cache is full.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

Key = tuple[str, int, int]  # (lower-case name without dot, qtype, qclass)

# Without an SOA there is no negative TTL to honour; cache briefly anyway so a
# storm of lookups for a missing name does not all go upstream.
NO_SOA_NEGATIVE_TTL = 30


@dataclass(slots=True)
class CachedAnswer:
    rcode: int
    answer: list[dns.rrset.RRset]
    authority: list[dns.rrset.RRset]
    additional: list[dns.rrset.RRset]
    stored: float
    ttl: int

    @property
    def expires(self) -> float:
        return self.stored + self.ttl

    def remaining(self, now: float) -> int:
        return max(0, int(self.expires - now))


def _aged(rrsets: list[dns.rrset.RRset], age: int, floor: int = 0,
          fixed: int | None = None) -> list[dns.rrset.RRset]:
    out = []
    for rrset in rrsets:
        ttl = fixed if fixed is not None else max(floor, rrset.ttl - age)
        out.append(dns.rrset.from_rdata_list(rrset.name, ttl, list(rrset)))
    return out


def fill_response(response: dns.message.Message, entry: CachedAnswer, now: float,
                  stale_ttl: int | None = None) -> None:
    """Copy a cached answer into `response` with TTLs aged (or set to the stale TTL)."""
    age = int(now - entry.stored)
    response.set_rcode(entry.rcode)
    response.answer = _aged(entry.answer, age, fixed=stale_ttl)
    response.authority = _aged(entry.authority, age, fixed=stale_ttl)
    response.additional = _aged(entry.additional, age, fixed=stale_ttl)


class DnsCache:
    def __init__(self, size: int = 20000, min_ttl: int = 0, max_ttl: int = 86400,
                 negative_ttl: int = 300, stale_max_age: int = 86400,
                 clock: Callable[[], float] = time.monotonic):
        self.size = size
        self.min_ttl, self.max_ttl = min_ttl, max_ttl
        self.negative_ttl = negative_ttl
        self.stale_max_age = stale_max_age
        self._clock = clock
        self._entries: OrderedDict[Key, CachedAnswer] = OrderedDict()
        self.hits = self.misses = self.stale_hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def get(self, key: Key) -> tuple[CachedAnswer, bool] | None:
        """(entry, fresh) or None. A stale entry is returned with fresh=False."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self._clock()
        if now < entry.expires:
            self._entries.move_to_end(key)
            return entry, True
        if now < entry.expires + self.stale_max_age:
            return entry, False
        del self._entries[key]
        return None

    def ttl_for(self, message: dns.message.Message) -> int | None:
        rcode = message.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return None  # SERVFAIL, REFUSED...: not cached (RFC 2308 allows 5 minutes; we retry)
        if message.answer and rcode == dns.rcode.NOERROR:
            ttl = min(r.ttl for r in message.answer)
            return min(max(ttl, self.min_ttl), self.max_ttl)
        for rrset in message.authority:
            if rrset.rdtype == dns.rdatatype.SOA:
                return min(rrset.ttl, rrset[0].minimum, self.negative_ttl)
        return min(NO_SOA_NEGATIVE_TTL, self.negative_ttl)

    def put(self, key: Key, message: dns.message.Message) -> CachedAnswer | None:
        ttl = self.ttl_for(message)
        if ttl is None:
            return None
        entry = CachedAnswer(
            message.rcode(), list(message.answer), list(message.authority),
            [r for r in message.additional if r.rdtype != dns.rdatatype.OPT],
            self._clock(), ttl,
        )
        if self.size <= 0:
            return entry
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return entry
