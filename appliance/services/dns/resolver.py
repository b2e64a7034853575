"""What the DNS server answers: policy, local names, fake IPs, cache, upstreams.

`Resolver.handle(data, client, addr, out)` takes a query as received and
sends its answer with `out.send(wire, addr)` (wire None: no answer at all),
at once or when the upstream has answered. `answer(data, client, udp)` is
the same as a coroutine (TCP, tests, the fuzzer). It knows nothing of
sockets.

The usual queries take one path, by hand (`wire`), with no dnspython
message and no task per query:

1. the query is read for its question and EDNS size (`parse_query`);
2. the client's group and the question give the *decision*, memoised in
   `_decided` until the policy, the local names or the fake-IP pool change;
3. the decision gives the answer: records the server made itself (block,
   rewrite, local name, fake IP), the answer cache's entry for a forwarded
   name (TTLs aged), or, on a miss, a callback once the upstream answers.
   Concurrent misses for one question share one upstream query; when the
   upstream is slow, a stale entry answers after `stale_after`.

dnspython is left for the rare: error answers (FORMERR, NOTIMP, BADVERS,
REFUSED), queries of an unusual shape (rewritten into the usual one, then
answered as above), and rewrites to a CNAME, whose answer joins the records
of two names.

In a worker process (`worker.py`) there is no fake-IP pool: a query that
needs an address from it is handed to the main process (`handoff`), which
owns the pool and answers the client itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
import time
from functools import partial
from typing import Callable

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset

from .cache import AnswerCache
from .fakeip import FakeIpPool, twin6
from .kernel_cache import cacheable as kernel_cacheable
from .localnames import LocalNames
from .neighbours import NeighbourTable, eui64_mac
from .policy import NO_MATCH, Decision, Policy
from .querylog import QueryLog
from .ratelimit import RateLimiter
from .rebind import RebindGuard
from .settings import DnsSettings
from .upstream import UpstreamSet
from .wire import (CLASS_IN, EMPTY, HEADER, NXDOMAIN_ANSWER, OPCODE_MASK, QR, REFUSED_ANSWER,
                   SERVFAIL_ANSWER,
                   TC, TYPE_A, TYPE_AAAA, TYPE_ANY, TYPE_CNAME, TYPE_PTR, Prepared, Query,
                   WireError, address_records, answer_addresses, name_wire, opt_record, parse_query,
                   prepare, ptr_record, render, udp_limit)

log = logging.getLogger(__name__)

EMPTY_FOR_FAKE = {TYPE_AAAA, dns.rdatatype.HTTPS, dns.rdatatype.SVCB}
FIXED_LIFETIME = 10.0  # seconds a decision that may soon change is remembered
FAST_MIN = 1000  # at least this many decisions are remembered (else the cache size)
GROUP_LIFETIME = 30.0  # seconds a client's group (its MAC may change) is remembered
# ... and while its MAC is unknown: the answer just sent teaches the neighbour table the MAC.
UNPLACED_LIFETIME = 0.25
NEVER = float("inf")
# Seconds the kernel replays an answer the server made itself (a fake address, a local name,
# a rewrite) before the next query comes up again: the fake-IP pool's LRU sees a name in use
# at least this often. Every change of what those answers say forgets them at once.
FIXED_KERNEL_FOR = 10.0

ANSWER, FORWARD = 0, 1
_HEADER_FROM = HEADER.unpack_from
_NOT_PLAIN = QR | OPCODE_MASK | TC  # header bits that send a query to `parse_query`
_BARE_OPT = b"\x00\x00\x29"  # root owner, type OPT


class Decided:
    """What the policy said for a (group, question), and the answer if it is fixed."""

    __slots__ = ("kind", "action", "origin", "qname", "qtype", "answer", "cache_key", "upstream",
                 "fake_key", "generation", "expires", "ttl_cap")

    def __init__(self, kind: int, action: str, origin: str, q: Query, qname: str,
                 answer: Prepared | None = None, fake_key: int | None = None,
                 generation: int = 0, expires: float = NEVER, ttl_cap: int = 0):
        self.kind = kind
        self.action = action  # for the query log: block | direct | fake-ip | rewrite | local
        self.origin = origin  # the rule or list that decided
        self.qname = qname
        self.qtype = q.qtype
        self.answer = answer  # ANSWER: the records
        self.upstream = q.key  # the question as the upstream is asked (and the kernel's key)
        if kind == FORWARD:
            self.cache_key = (qname, q.qtype, q.qclass)  # the answer cache's key
        self.fake_key = fake_key  # a fake-IP answer: its address (pool key), touched on use
        self.generation = generation  # ...valid while the pool's generation is this one and
        # the address is still qname's (`_fake_current`)
        self.expires = expires
        self.ttl_cap = ttl_cap  # FORWARD: every TTL the client sees set to this (0: as cached)


class _Flight:
    """One question on its way upstream and the clients waiting for it."""

    __slots__ = ("key", "question_len", "waiters", "stale", "stale_answer", "timer")

    def __init__(self, key: tuple, question_len: int, waiters: list, stale: Prepared | None):
        self.key = key
        self.question_len = question_len  # the upstream's answer repeats the question
        self.waiters = waiters
        self.stale = stale
        self.stale_answer: Prepared | None = None  # set once the stale answer went out
        self.timer: asyncio.TimerHandle | None = None


class _FutureOut:
    """`out` for `Resolver.answer`: the answer becomes the future's result."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future):
        self.future = future

    def send(self, wire: bytes | None, addr) -> None:
        if not self.future.done():
            self.future.set_result(wire)


# TTL of a real answer given for a fake-IP name while the relay is down: the
# client asks again soon, and gets a fake address once the relay is back.
RELAY_DOWN_TTL = 10


class Resolver:
    def __init__(self, settings: DnsSettings, policy: Policy, upstreams: UpstreamSet,
                 fakeips: FakeIpPool | None, local_names: LocalNames, querylog: QueryLog,
                 cache: AnswerCache | None = None, clock: Callable[[], float] = time.monotonic,
                 neighbour_mac: Callable[[str], str | None] | None = None,
                 handoff: Callable[[bytes, object, object], None] | None = None):
        self.policy = policy
        self.upstreams = upstreams
        self.fakeips = fakeips
        self.handoff = handoff
        self.local_names = local_names
        self.querylog = querylog
        c = settings.cache
        self.cache = cache or AnswerCache(c.size, c.min_ttl, c.max_ttl, c.negative_ttl,
                                          c.stale_max_age if c.serve_stale else 0, clock)
        self._clock = clock
        self._wall = time.time  # the query log's time
        self._record = querylog.pending.append  # one query-log entry (QueryLog.settle counts it)
        self._neighbour_mac = neighbour_mac or NeighbourTable().mac_of
        self._decided: dict[tuple, Decided] = {}
        self._groups: dict[str, tuple[int, float]] = {}
        self._inflight: dict[tuple, _Flight] = {}
        self._tasks: set[asyncio.Task] = set()
        self.fast_hits = 0
        self.slow_answers = 0
        # The kernel answer cache's writer (kernel_cache.Writer), None while it is off: forwarded
        # answers this process serves from its cache are replayed by the kernel from then on.
        self.kernel = None
        # The writer of the answers this process makes itself (fake IPs, local names,
        # rewrites). The main process's is a second one, forgotten on its own when the fake-IP
        # pool is flushed, so that does not cost the forwarded answers too (a recycled address
        # takes only its own answers away); a worker's (it makes no fake addresses) is `kernel`.
        self.kernel_fixed = None
        self._fixed_generation = 0
        # False while the relay is down (the box's watchdog says so): names a
        # rule sends to a fake address are answered with their real one, for
        # a short while at a time, so nothing waits on a relay that is not there.
        self.fake_ips_on = True
        self.lan_prefixes: tuple[str, ...] = ()
        self.off_macs: frozenset[str] = frozenset()  # devices paused or off by a schedule
        self._use(settings)

    def set_off_devices(self, macs: frozenset[str]) -> None:
        """The devices answered as blocked from the next query on (their groups are decided again)."""
        self.off_macs = macs
        self._groups = {}
        # The kernel forgets where it placed clients: a device just paused must not be
        # answered from its old group's cached answers there.
        self.forget_kernel_answers()

    def set_relay_up(self, up: bool) -> bool:
        """Fake addresses on (the relay is up) or off; True if that changed anything."""
        if up == self.fake_ips_on:
            return False
        self.fake_ips_on = up
        self._decided = {}
        self.forget_kernel_answers()
        return True

    def _use(self, settings: DnsSettings) -> None:
        self.settings = settings
        self._opt = opt_record(settings.edns_udp_size)
        self._edns_max = settings.edns_udp_size
        self._decided_max = max(FAST_MIN, settings.cache.size)
        self._max_inflight = settings.max_inflight
        f = settings.fake_ip
        # New fake-IP mappings per client: a client asking random names under a
        # fake-IP rule would otherwise recycle the whole pool under everyone.
        self._new_fake = RateLimiter(f.new_per_client, f.new_burst, self._clock)
        self._rebind_guard()

    def _rebind_guard(self) -> None:
        r, settings = self.settings.rebind, self.settings
        self._rebind = RebindGuard([*r.networks, *self.lan_prefixes], r.allow,
                                   settings.local_names.domain) if r.enabled else None

    def set_lan_prefixes(self, prefixes: tuple[str, ...]) -> bool:
        """The home's IPv6 prefixes (from the modem's RA) as rebinding networks; True if changed."""
        if prefixes == self.lan_prefixes:
            return False
        self.lan_prefixes = prefixes
        self._rebind_guard()
        if self._rebind is not None:
            # An answer cached before passed a guard that did not know the new prefix: the ones
            # pointing into it go (IPv6 records only: an A record is never in an IPv6 prefix).
            self.cache.drop_where(lambda key, entry: key[1] != TYPE_A and bool(entry.an)
                                  and self._rebinds(key[0], entry))
            self._decided = {}
            self.forget_kernel_answers()
        return True

    # -- state changes --------------------------------------------------------
    def swap_policy(self, policy: Policy, settings: DnsSettings | None = None) -> None:
        """Atomic: the next query sees only the new policy."""
        self.policy = policy
        if settings is not None:
            self._use(settings)
        self._decided = {}
        self._groups = {}
        self.forget_kernel_answers()

    def forget_fast_answers(self) -> None:
        self._decided = {}
        self.forget_kernel_answers()

    def forget_kernel_answers(self) -> None:
        """The kernel stops replaying what this process answered (and where it placed clients)."""
        if self.kernel is not None:
            self.kernel.forget()
            self._groups = {}
        if self.kernel_fixed is not None and self.kernel_fixed is not self.kernel:
            self.kernel_fixed.forget()

    def _fake_current(self, entry: Decided) -> bool:
        """A remembered fake answer's address is its name's still (no flush, no recycle since)."""
        pool = self.fakeips
        return entry.generation == pool.generation and pool.holds(entry.fake_key, entry.qname)

    def _fake_recycled_seen(self) -> None:
        # A recycled address must not be handed out for its old name a moment longer: the
        # kernel's answers that carry it go now (the other names' stay; the memo checks each
        # answer's address on use). A flush forgets through `forget_kernel_answers`, and the
        # generation check then only catches up.
        recycled = self.fakeips.take_recycled()
        if self.kernel_fixed is None:
            return
        if self._fixed_generation != self.fakeips.generation:
            self.kernel_fixed.forget()
            self._fixed_generation = self.fakeips.generation
        for key in recycled:
            self.kernel_fixed.forget_tag(key)

    def _kernel_fill(self, group: int, entry: Decided, answer: Prepared) -> None:
        # Only the plain forwarded case: a decision that holds (no rate-limit, relay-down or
        # pool-full variant with its own expiry or TTL cap) and an answer the cache keeps.
        if (entry.expires == NEVER and not entry.ttl_cap and self.cache.size > 0
                and kernel_cacheable(answer)):
            self.kernel.fill(group, entry.upstream, answer, self._opt, self._edns_max)

    def _kernel_fill_fixed(self, group: int, entry: Decided, now: float) -> None:
        # An answer the server made itself, not a block (blocked queries are logged one by
        # one), for a decision that holds: replayed for FIXED_KERNEL_FOR, after which the next
        # query comes up here (a fake address's last use is that fresh at worst).
        # (A fake address here is current: its entry was checked against the pool
        # (`_fake_current`), and a recycle took the kernel's answers with it as it happened.)
        if entry.action != "block" and entry.expires == NEVER and not entry.answer.ttls:
            self.kernel_fixed.fill(group, entry.upstream, entry.answer, self._opt, self._edns_max,
                                   now + FIXED_KERNEL_FOR, now, tag=entry.fake_key)

    def client_group(self, client: str, now: float | None = None) -> int:
        if now is None:
            now = self._clock()
        known = self._groups.get(client)
        if known is not None and known[1] > now:
            return known[0]
        mac = None
        sure = True
        by_mac = self.policy.needs_mac() or bool(self.off_macs)
        if by_mac:
            # The neighbour tables first (ARP, IPv6 ND); a client that never
            # resolved us (it resolves the gateway, which is the modem) is known
            # by its DHCP lease, or, over IPv6, maybe by its EUI-64 address.
            mac = self._neighbour_mac(client) or self.local_names.mac_of(client.split("%")[0])
            if mac is None and ":" in client:
                mac = eui64_mac(client.split("%")[0])
                sure = False
        if mac is not None and mac in self.off_macs:
            group = self.policy.paused
        else:
            try:
                group = self.policy.group_of(client, mac)
            except ValueError:
                group = 0
        if len(self._groups) > 10000:
            self._groups = {}
        # Unknown MAC (or only guessed): decide again soon, the answer will
        # have taught the neighbour table the MAC.
        placed = (mac and sure) or not by_mac
        lifetime = GROUP_LIFETIME if placed else UNPLACED_LIFETIME
        self._groups[client] = (group, now + lifetime)
        # The kernel never answers an off device: its questions all come up here.
        if placed and self.kernel is not None and group != self.policy.paused:
            # An unknown MAC is not placed: the kernel sends that client's queries up.
            self.kernel.client(client, group, now + lifetime)
        return group

    # -- entry points ---------------------------------------------------------
    def handle(self, data: bytes, client: str, addr, out, udp: bool = True) -> None:
        size = len(data)
        now = group = None
        if size >= 17:
            # The hot path: a question this client's group asked before, in the
            # same letters, plain or with a bare OPT record. The decision is
            # found by the question's bytes, so no parse is needed: only
            # questions `parse_query` accepted are remembered.
            qid, flags, qd, an, ns, ar = _HEADER_FROM(data)
            if not flags & _NOT_PLAIN and qd == 1 and not (an or ns) and ar < 2:
                if not ar:
                    question, edns = data[12:], -1
                elif (data[size - 11:size - 8] == _BARE_OPT and not data[size - 5]
                      and data[size - 2:] == b"\x00\x00"):
                    question = data[12:size - 11]
                    edns = max(512, (data[size - 8] << 8) | data[size - 7])
                else:
                    question = None
                if question is not None:
                    now = self._clock()
                    group = self.client_group(client, now)
                    entry = self._decided.get((group, question))
                    if entry is not None and now < entry.expires and (
                            entry.fake_key is None or self._fake_current(entry)):
                        if entry.kind == FORWARD:
                            answer, fresh = self.cache.lookup(entry.cache_key, now)
                            if not fresh:
                                # Decided before, no fresh answer: upstream, without a parse.
                                q = Query(qid, flags, question, 0, entry.qtype, 0, edns,
                                          entry.upstream, entry.qname)
                                self._forward(entry.cache_key, entry.upstream,
                                              (q, client, addr, out, udp, entry), answer)
                                return
                            body = answer.body_at(int(now - answer.stored))
                            if self.kernel is not None:
                                self._kernel_fill(group, entry, answer)
                        else:
                            answer = entry.answer
                            body = answer.body if not answer.ttls else answer.body_at(
                                int(now - answer.stored))
                            if entry.fake_key is not None:
                                self.fakeips.touch_key(entry.fake_key)
                            if self.kernel_fixed is not None and udp:
                                self._kernel_fill_fixed(group, entry, now)
                        self.fast_hits += 1
                        out.send(render(qid, flags, question, edns, answer, body, self._opt,
                                        udp_limit(edns, self._edns_max) if udp else 0), addr)
                        self._record((self._wall(), client, entry.qname, entry.qtype,
                                      entry.action, answer.rcode, True, entry.origin))
                        return
                    # Not decided yet (or no longer valid): parse, then decide.
                    q = parse_query(data)
                    if q is not None:
                        self.serve(q, data, client, addr, out, udp, now, group, False)
                        return
        q = parse_query(data)
        if q is None:
            self._unusual(data, client, addr, out, udp)
        else:
            self.serve(q, data, client, addr, out, udp, now, group)

    async def answer(self, data: bytes, client: str, udp: bool = True) -> bytes | None:
        future = asyncio.get_running_loop().create_future()
        self.handle(data, client, None, _FutureOut(future), udp)
        return await future

    def serve(self, q: Query, data: bytes, client: str, addr, out, udp: bool,
              now: float | None = None, group: int | None = None, look: bool = True) -> None:
        """Answer a parsed query (what `handle` does when its hot path does not apply).

        `look` false: the caller already found no valid decision for it.
        """
        if now is None:
            now = self._clock()
        if group is None:
            group = self.client_group(client, now)
        entry = self._decided.get((group, q.question)) if look else None
        fresh = entry is None or now >= entry.expires or (
            entry.fake_key is not None and not self._fake_current(entry))
        if fresh:
            entry = self._decide(q, data, group, client, addr, out, udp, now)
            if entry is None:
                return  # handed off, or answered later
        if entry.kind == FORWARD:
            answer, up_to_date = self.cache.lookup(entry.cache_key, now)
            if not up_to_date:
                self._forward(entry.cache_key, entry.upstream, (q, client, addr, out, udp, entry),
                              answer)
                return
            body = _forwarded_body(entry, answer, int(now - answer.stored))
        else:
            answer = entry.answer
            body = answer.body if not answer.ttls else answer.body_at(int(now - answer.stored))
            if not fresh:  # the kernel gets a name on its second ask (DESIGN.md: kernel cache)
                if entry.fake_key is not None:
                    self.fakeips.touch_key(entry.fake_key)
                if self.kernel_fixed is not None and udp:
                    self._kernel_fill_fixed(group, entry, now)
        if fresh:
            self.slow_answers += 1
        else:
            self.fast_hits += 1
        out.send(render(q.qid, q.flags, q.question, q.edns, answer, body, self._opt,
                        udp_limit(q.edns, self._edns_max) if udp else 0), addr)
        self._record((self._wall(), client, entry.qname, q.qtype, entry.action, answer.rcode, True,
                      entry.origin))

    # -- deciding -------------------------------------------------------------
    def _keep(self, group: int, q: Query, entry: Decided) -> Decided:
        if len(self._decided) >= self._decided_max:
            self._decided = {}  # crude but O(1): the next queries refill it
        self._decided[(group, q.question)] = entry
        return entry

    def _decide(self, q: Query, data: bytes, group: int, client: str, addr, out, udp: bool,
                now: float) -> Decided | None:
        qname = q.name
        qtype = q.qtype
        if group == self.policy.paused:
            decision = self.policy.decide(group, qname)  # blocked, whatever it asks
        elif q.qclass == CLASS_IN:
            local = self._local(qname, qtype)
            if local is not None:
                return self._keep(group, q, Decided(ANSWER, "local", "local names", q, qname, local))
            decision = self.policy.decide(group, qname)
        else:
            decision = NO_MATCH
        kind = decision.kind
        if kind == "block":
            return self._keep(group, q, Decided(ANSWER, "block", decision.origin, q, qname,
                                                self._block(qtype, group, decision)))
        if kind == "rewrite":
            answer = decision.action.answer
            if _is_address(answer[0]):  # settings allow addresses or one CNAME target
                return self._keep(group, q, Decided(ANSWER, "rewrite", decision.origin, q, qname,
                                                    self._addresses(answer, qtype, decision.action.ttl)))
            self._spawn(self._rewrite_cname(q, data, group, qname, decision, client, addr, out, udp))
            return None
        if kind == "fake-ip" and not self.fake_ips_on and self.fakeips is not None:
            return self._keep(group, q, Decided(
                FORWARD, "direct", decision.origin + " (relay down: real address)", q, qname,
                expires=now + RELAY_DOWN_TTL, ttl_cap=RELAY_DOWN_TTL))
        if kind == "fake-ip":
            fake = self.settings.fake_ip
            if qtype == TYPE_A or (qtype == TYPE_AAAA and fake.network6 is not None):
                if self.fakeips is None:
                    self.handoff(data, addr, out)
                    return None
                if self.fakeips.lookup_domain(qname) is None and not self._new_fake.allow(client):
                    # Not remembered: the rest of the group still gets its fake address.
                    return Decided(FORWARD, "direct", decision.origin + " (fake-IP rate limit)", q,
                                   qname, expires=now)
                ip = self.fakeips.allocate(qname, decision.action.route)
                self._fake_recycled_seen()
                if ip is not None:
                    answer = ip if qtype == TYPE_A else twin6(ip, fake.network, fake.network6)
                    return self._keep(group, q, Decided(
                        ANSWER, "fake-ip", decision.origin, q, qname,
                        address_records([answer], fake.ttl),
                        fake_key=int.from_bytes(socket.inet_aton(ip), "big"),
                        generation=self.fakeips.generation))
                log.warning("fake-IP pool full of pinned addresses; %s answered for real", qname)
                return self._keep(group, q, Decided(
                    FORWARD, "direct", decision.origin + " (pool full)", q, qname,
                    expires=now + FIXED_LIFETIME))
            if qtype in EMPTY_FOR_FAKE:
                return self._keep(group, q, Decided(ANSWER, "fake-ip", decision.origin, q, qname,
                                                    EMPTY))
        return self._keep(group, q, Decided(FORWARD, "direct", decision.origin, q, qname))

    def _local(self, qname: str, qtype: int) -> Prepared | None:
        names = self.local_names
        addresses = names.forward(qname)
        ttl = self.settings.local_names.ttl
        if addresses is not None:
            if not addresses:
                return NXDOMAIN_ANSWER
            return self._addresses(addresses, qtype, ttl)
        if qtype == TYPE_PTR:
            target = names.reverse(qname)
            if target is not None:
                return ptr_record(target, ttl)
        return None

    @staticmethod
    def _addresses(addresses: list[str], qtype: int, ttl: int) -> Prepared:
        """The records of `addresses` that answer `qtype` (A, AAAA or ANY), IPv4 first."""
        v4 = [a for a in addresses if ":" not in a] if qtype in (TYPE_A, TYPE_ANY) else []
        v6 = [a for a in addresses if ":" in a] if qtype in (TYPE_AAAA, TYPE_ANY) else []
        return address_records(v4 + v6, ttl) if v4 or v6 else EMPTY

    def _block(self, qtype: int, group: int, decision: Decision) -> Prepared:
        mode = decision.action.mode or self.policy.groups[group].block_mode
        if mode == "nxdomain":
            return NXDOMAIN_ANSWER
        if qtype == TYPE_A:
            return address_records(["0.0.0.0"], self.settings.block_ttl)
        if qtype == TYPE_AAAA:
            return address_records(["::"], self.settings.block_ttl)
        return EMPTY

    # -- upstream -------------------------------------------------------------
    def _forward(self, key: tuple, question: bytes, waiter: tuple, stale: Prepared | None) -> None:
        """Answer `waiter` from upstream (one query for all who ask meanwhile); `stale`: the
        expired answer the cache still holds, for when the upstream is slow or fails."""
        flight = self._inflight.get(key)
        if flight is not None:
            if flight.stale_answer is not None:
                self._deliver(waiter, flight.stale_answer, 0, True, "stale")
            else:
                flight.waiters.append(waiter)
            return
        if len(self._inflight) >= self._max_inflight:
            # Bounded: an upstream that never answers must not hold the whole memory.
            self.querylog.dropped["upstream queries at their limit"] += 1
            if stale is not None:
                self._deliver(waiter, stale.with_ttl(self.settings.cache.stale_answer_ttl), 0, True,
                              "stale")
            else:
                self._deliver(waiter, SERVFAIL_ANSWER, 0, False, "upstream queries at their limit")
            return
        flight = _Flight(key, len(question), [waiter], stale)
        self._inflight[key] = flight
        settings = self.settings.cache
        if flight.stale is not None:
            flight.timer = asyncio.get_running_loop().call_later(
                settings.stale_after, self._stale_due, flight)
        self.upstreams.fetch(question, self._clock() + settings.servfail_after,
                             partial(self._fetched, flight))

    def _rebinds(self, name: str, answer: Prepared) -> bool:
        try:
            addresses = answer.addresses  # read by `prepare`, or not yet
            refused = self._rebind.refuses(
                name, answer_addresses(answer) if addresses is None else addresses)
        except WireError:
            return True  # prepare() read it; records it cannot read again are no answer to give
        if refused:
            log.warning("rebinding refused: %s answered with a private address", name)
        return refused

    def _stale_due(self, flight: _Flight) -> None:
        # Keep the refresh going; who waits gets the old answer now.
        flight.timer = None
        flight.stale_answer = flight.stale.with_ttl(self.settings.cache.stale_answer_ttl)
        waiters, flight.waiters = flight.waiters, []
        for waiter in waiters:
            self._deliver(waiter, flight.stale_answer, 0, True, "stale")

    def _fetched(self, flight: _Flight, wire: bytes | None, error: BaseException | None) -> None:
        if self._inflight.get(flight.key) is flight:
            del self._inflight[flight.key]
        if flight.timer is not None:
            flight.timer.cancel()
            flight.timer = None
        answer = None
        if wire is not None:
            try:
                answer = _prepare_answer(wire, flight.question_len)
            except (WireError, dns.exception.DNSException, ValueError) as exc:
                error = exc
        if answer is not None and self._rebind is not None and answer.an and self._rebinds(
                flight.key[0], answer):
            # Not cached: the next query asks again, the upstream may have been fixed.
            answer, age, cached, note = REFUSED_ANSWER, 0, False, "rebinding refused"
        elif answer is not None:
            self.cache.put(flight.key, answer)
            age, cached, note = 0, False, ""
        elif flight.stale is not None:
            answer = flight.stale_answer or flight.stale.with_ttl(self.settings.cache.stale_answer_ttl)
            age, cached, note = 0, True, "stale"
        else:
            log.debug("SERVFAIL for %s: %s", flight.key[0], error)
            answer, age, cached, note = SERVFAIL_ANSWER, 0, False, "upstream failed"
        self.slow_answers += len(flight.waiters)
        for waiter in flight.waiters:
            try:
                self._deliver(waiter, answer, age, cached, note)
            except Exception:  # one bad answer must not starve the other clients
                log.exception("answering %s failed", flight.key[0])

    def _deliver(self, waiter: tuple, answer: Prepared, age: int, cached: bool, note: str) -> None:
        q, client, addr, out, udp, entry = waiter
        if q is None:  # one of ours (`_lookup`)
            out(answer, note)
            return
        out.send(render(q.qid, q.flags, q.question, q.edns, answer, _forwarded_body(entry, answer, age),
                        self._opt, udp_limit(q.edns, self._edns_max) if udp else 0), addr)
        origin = entry.origin if not note else (f"{entry.origin} ({note})" if entry.origin else note)
        self._record((self._wall(), client, entry.qname, q.qtype, entry.action, answer.rcode, cached,
                      origin))

    async def _lookup(self, name: str, qtype: int) -> tuple[Prepared, str]:
        """The answer for `name` from the cache or upstream, for the server itself."""
        key = (name, qtype, CLASS_IN)
        known, up_to_date = self.cache.lookup(key, self._clock())
        if up_to_date:
            return known, ""
        future = asyncio.get_running_loop().create_future()

        def done(answer: Prepared, note: str) -> None:
            if not future.done():
                future.set_result((answer, note))

        self._forward(key, name_wire(name) + struct.pack(">HH", qtype, CLASS_IN),
                      (None, None, None, done, False, None), known)
        return await future

    # -- the rare, with dnspython --------------------------------------------
    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _unusual(self, data: bytes, client: str, addr, out, udp: bool) -> None:
        """A query `parse_query` would not read: an error answer, or the usual path after all."""
        try:
            query = dns.message.from_wire(data)
        except (dns.exception.DNSException, ValueError, IndexError, UnicodeError):
            out.send(_header_only(data, dns.rcode.FORMERR), addr)
            return
        if query.flags & dns.flags.QR:
            out.send(None, addr)  # never answer an answer: that is how reflection loops start
            return
        if query.opcode() != dns.opcode.QUERY:
            out.send(self._error(query, dns.rcode.NOTIMP), addr)
        elif len(query.question) != 1:
            out.send(self._error(query, dns.rcode.FORMERR), addr)
        elif query.edns > 0:
            out.send(self._error(query, dns.rcode.BADVERS), addr)
        elif query.question[0].rdtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR, dns.rdatatype.OPT):
            out.send(self._error(query, dns.rcode.REFUSED), addr)
        else:
            # A compressed name, a TC bit, records in other sections...: ask it the usual way.
            usual = dns.message.Message(id=query.id)
            usual.flags = query.flags & dns.flags.RD
            usual.question = list(query.question)
            if query.edns >= 0:
                usual.use_edns(0, 0, query.payload)
            wire = usual.to_wire()
            q = parse_query(wire)
            if q is None:
                out.send(self._error(query, dns.rcode.FORMERR), addr)
            else:
                self.serve(q, wire, client, addr, out, udp)

    def _error(self, query: dns.message.Message, rcode: int) -> bytes:
        response = dns.message.make_response(query, our_payload=self.settings.edns_udp_size)
        response.flags |= dns.flags.RA
        response.set_rcode(rcode)
        return response.to_wire()

    async def _rewrite_cname(self, q: Query, data: bytes, group: int, qname: str,
                             decision: Decision, client: str, addr, out, udp: bool) -> None:
        """A rewrite to a CNAME: the CNAME, then the target's records (chased for the client)."""
        try:
            action = decision.action
            target = action.answer[0]
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query, our_payload=self.settings.edns_udp_size)
            response.flags |= dns.flags.RA
            response.answer.append(dns.rrset.from_text(
                query.question[0].name, action.ttl, "IN", "CNAME", target + "."))
            lifetime = FIXED_LIFETIME
            if q.qtype != TYPE_CNAME:
                found, note = await self._lookup(target, q.qtype)
                rcode = found.rcode
                lifetime = (found.stored + found.lifetime - self._clock()) if not note else 0
                if found.rcode == dns.rcode.NOERROR or found.an:
                    key = name_wire(target) + struct.pack(">HH", q.qtype, CLASS_IN)
                    try:
                        records = dns.message.from_wire(
                            HEADER.pack(0, QR, 1, found.an, found.ns, found.ar) + key + found.body)
                        response.answer.extend(records.answer)
                    except dns.exception.DNSException as e:
                        # The forwarding path checks only what it relays (compression
                        # pointers are not followed); copying records needs them whole.
                        log.warning("rewrite of %s: the answer for %s is malformed (%s)", qname, target, e)
                        rcode, lifetime = dns.rcode.SERVFAIL, 0
                if rcode != dns.rcode.NOERROR:
                    response.set_rcode(rcode)
            try:
                wire = response.to_wire()
            except dns.exception.TooBig:
                # The target's answer fit in one message, but not behind the CNAME.
                log.warning("rewrite of %s: the answer for %s does not fit behind the CNAME", qname, target)
                del response.answer[1:]
                response.set_rcode(dns.rcode.SERVFAIL)
                lifetime, wire = 0, response.to_wire()
            answer = prepare(wire)
            answer.stored = self._clock()
            entry = Decided(ANSWER, "rewrite", decision.origin, q, qname, answer,
                            expires=answer.stored + lifetime)
            if lifetime > 0:
                self._keep(group, q, entry)
            self.slow_answers += 1
            out.send(render(q.qid, q.flags, q.question, q.edns, answer, answer.body, self._opt,
                            udp_limit(q.edns, self._edns_max) if udp else 0), addr)
            self._record((self._wall(), client, qname, q.qtype, "rewrite", answer.rcode, False,
                          decision.origin))
        except Exception:
            log.exception("rewrite of %s failed", qname)
            out.send(None, addr)


def _forwarded_body(entry: Decided, answer: Prepared, age: int) -> bytes:
    """An upstream answer's records as this client gets them: aged, or capped (relay down)."""
    return answer.with_ttl(entry.ttl_cap).body if entry.ttl_cap else answer.body_at(age)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _prepare_answer(wire: bytes, question_len: int) -> Prepared:
    """`wire.prepare`, or dnspython's reading of an odd but valid answer (OPT not last)."""
    try:
        return prepare(wire, question_len)
    except WireError:
        message = dns.message.from_wire(wire, ignore_trailing=True)
        if message.rcode() > 15:
            raise  # an extended RCODE (BADCOOKIE...) from upstream: a failure to us
        message.use_edns(False)
        return prepare(message.to_wire())


def _header_only(data: bytes, rcode: int) -> bytes | None:
    """A bare error answer to a query we cannot parse; nothing for non-queries."""
    if len(data) < 12:
        return None
    flags = int.from_bytes(data[2:4], "big")
    if flags & QR:
        return None
    flags = QR | (flags & 0x7900) | 0x0080 | (rcode & 0xF)  # keep opcode+RD, set RA
    return data[:2] + flags.to_bytes(2, "big") + b"\x00" * 8
