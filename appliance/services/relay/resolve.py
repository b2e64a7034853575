"""Real addresses of fake-IP domains, for the `direct` route.

The relay must not ask the box's own DNS server (it would answer with the
fake address again), so it asks the configured upstream resolvers (the
modem, in the box) with dnspython, or the system resolver when none are
configured: A records, or AAAA for an IPv6 client when the relay connects
those over IPv6 (`direct6`). Answers are cached for their TTL (at least `MIN_TTL` so a burst
of connections to one site costs one query) and lookups of one name in
flight are shared.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from typing import Callable

MIN_TTL = 5.0
MAX_TTL = 3600.0


class ResolveError(Exception):
    pass


class Resolver:
    def __init__(self, servers: list[tuple[str, int]], timeout: float = 3.0,
                 clock: Callable[[], float] = time.monotonic):
        self.servers = servers
        self.timeout = timeout
        self._clock = clock
        self._cache: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._pending: dict[tuple[str, int], asyncio.Future] = {}
        self._resolver = None
        if servers:
            import dns.asyncresolver

            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [host for host, _ in servers]
            resolver.port = servers[0][1]
            resolver.timeout = timeout
            resolver.lifetime = timeout
            resolver.cache = None
            self._resolver = resolver

    async def resolve(self, name: str, version: int = 4) -> str:
        """One IPv4 (`version` 6: IPv6) address of `name` (random among the answers)."""
        now = self._clock()
        key = (name, version)
        cached = self._cache.get(key)
        if cached and cached[0] > now:
            return random.choice(cached[1])
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._query(name, version))
            self._pending[key] = pending
            pending.add_done_callback(lambda _f: self._pending.pop(key, None))
        addresses = await asyncio.shield(pending)
        return random.choice(addresses)

    async def _query(self, name: str, version: int = 4) -> list[str]:
        what = f"IPv{version} address"
        if self._resolver is not None:
            import dns.exception
            import dns.resolver

            try:
                answer = await self._resolver.resolve(name, "A" if version == 4 else "AAAA")
            except dns.resolver.NXDOMAIN:
                raise ResolveError(f"{name}: no such domain (NXDOMAIN)") from None
            except dns.resolver.NoAnswer:
                raise ResolveError(f"{name}: no {what}") from None
            except dns.exception.Timeout:
                raise ResolveError(f"{name}: resolvers did not answer within {self.timeout:g}s") from None
            except dns.exception.DNSException as exc:
                raise ResolveError(f"{name}: {exc}") from None
            addresses = [rr.address for rr in answer]
            ttl = answer.rrset.ttl
        else:
            loop = asyncio.get_running_loop()
            try:
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(name, None, family=socket.AF_INET if version == 4 else socket.AF_INET6, type=socket.SOCK_STREAM),
                    self.timeout)
            except (socket.gaierror, asyncio.TimeoutError) as exc:
                raise ResolveError(f"{name}: {exc or 'timed out'}") from None
            addresses = sorted({info[4][0] for info in infos})
            ttl = MIN_TTL
        if not addresses:
            raise ResolveError(f"{name}: no {what}")
        self._cache[(name, version)] = (self._clock() + min(max(ttl, MIN_TTL), MAX_TTL), addresses)
        if len(self._cache) > 10000:
            self._cache.clear()
        return addresses
