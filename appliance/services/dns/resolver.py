"""What the DNS server answers: policy, local names, fake IPs, cache, upstreams.

`Resolver.answer(wire, client, max_size)` takes a query as received and
returns the answer's bytes (or None: no answer at all). It knows nothing of
sockets, so tests and the fuzzer drive it directly.

Two paths. The fast path answers a repeated question from the bytes of an
earlier answer, patching the ID and the ageing TTLs: no dnspython parse, no
policy walk. Everything else takes the slow path, which parses with
dnspython, decides by policy, resolves, renders, and leaves bytes for the
fast path. The fast path's key includes the client's group, so two groups
never share an answer; a policy swap or a local-names change empties it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from dataclasses import dataclass
from typing import Callable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from .cache import CachedAnswer, DnsCache, fill_response
from .fakeip import FakeIpPool
from .localnames import LocalNames
from .policy import Decision, Policy
from .querylog import QueryLog
from .settings import DnsSettings
from .upstream import UpstreamError, UpstreamSet
from .wire import QR, patch, read_query_head, ttl_offsets

log = logging.getLogger(__name__)

A, AAAA, PTR, CNAME = dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.PTR, dns.rdatatype.CNAME
EMPTY_FOR_FAKE = {dns.rdatatype.AAAA, dns.rdatatype.HTTPS, dns.rdatatype.SVCB}
FIXED_LIFETIME = 10.0  # seconds a fixed (policy-made) answer stays on the fast path
FAST_MIN = 1000  # the fast path holds at most max(cache size, this) answers
GROUP_LIFETIME = 30.0  # seconds a client's group (its MAC may change) is remembered


@dataclass(slots=True)
class FastEntry:
    wire: bytes
    ttls: list[tuple[int, int]]
    stored: float
    expires: float
    qname: str
    action: str
    rcode: int
    origin: str
    fake_ip: str | None
    pool_generation: int


@dataclass(slots=True)
class Outcome:
    action: str
    origin: str = ""
    lifetime: float | None = None  # seconds on the fast path; None: not cacheable
    fixed: bool = False  # the TTLs do not age (policy-made answer)
    fake_ip: str | None = None
    cached: bool = False


def read_neighbour_mac(ip: str, path: str = "/proc/net/arp") -> str | None:
    """The MAC of an IPv4 neighbour of this namespace, from the ARP table."""
    try:
        with open(path) as fh:
            next(fh, None)
            for line in fh:
                parts = line.split()
                if len(parts) >= 4 and parts[0] == ip and parts[3] != "00:00:00:00:00:00":
                    return parts[3].lower()
    except OSError:
        pass
    return None


# TTL of a real answer given for a fake-IP name while the relay is down: the
# client asks again soon, and gets a fake address once the relay is back.
RELAY_DOWN_TTL = 10


class Resolver:
    def __init__(self, settings: DnsSettings, policy: Policy, upstreams: UpstreamSet,
                 fakeips: FakeIpPool, local_names: LocalNames, querylog: QueryLog,
                 cache: DnsCache | None = None, clock: Callable[[], float] = time.monotonic,
                 neighbour_mac: Callable[[str], str | None] = read_neighbour_mac):
        self.settings = settings
        self.policy = policy
        self.upstreams = upstreams
        self.fakeips = fakeips
        self.local_names = local_names
        self.querylog = querylog
        c = settings.cache
        self.cache = cache or DnsCache(c.size, c.min_ttl, c.max_ttl, c.negative_ttl,
                                       c.stale_max_age if c.serve_stale else 0, clock)
        self._clock = clock
        self._neighbour_mac = neighbour_mac
        self._fast: dict[tuple, FastEntry] = {}
        self._fast_max = max(FAST_MIN, settings.cache.size)
        self._groups: dict[str, tuple[int, float]] = {}
        self._inflight: dict[tuple, asyncio.Task] = {}
        self._background: set[asyncio.Task] = set()
        self.fast_hits = 0
        self.slow_answers = 0
        # False while the relay is down (the box's watchdog says so): names a
        # rule sends to a fake address are answered with their real one, for
        # a short while at a time, so nothing waits on a relay that is not there.
        self.fake_ips_on = True

    def set_relay_up(self, up: bool) -> bool:
        """Fake addresses on (the relay is up) or off; True if that changed anything."""
        if up == self.fake_ips_on:
            return False
        self.fake_ips_on = up
        self._fast = {}
        return True

    # -- state changes --------------------------------------------------------
    def swap_policy(self, policy: Policy, settings: DnsSettings | None = None) -> None:
        """Atomic: the next query sees only the new policy."""
        self.policy = policy
        if settings is not None:
            self.settings = settings
        self._fast = {}
        self._groups = {}

    def forget_fast_answers(self) -> None:
        self._fast = {}

    def client_group(self, client: str) -> int:
        now = self._clock()
        known = self._groups.get(client)
        if known is not None and known[1] > now:
            return known[0]
        mac = None
        if self.policy.needs_mac():
            # The ARP table first; a client that never ARPed for us (it ARPs
            # for the gateway, which is the modem) is known by its DHCP lease.
            mac = self._neighbour_mac(client) or self.local_names.mac_of(client)
        try:
            group = self.policy.group_of(client, mac)
        except ValueError:
            group = 0
        if len(self._groups) > 10000:
            self._groups = {}
        # Unknown MAC: decide again soon, the reply will have taught us the MAC.
        lifetime = GROUP_LIFETIME if mac or not self.policy.needs_mac() else 1.0
        self._groups[client] = (group, now + lifetime)
        return group

    def _udp_limit(self, edns_size: int | None) -> int:
        if edns_size is None:
            return 512
        return max(512, min(edns_size, self.settings.edns_udp_size))

    # -- fast path ------------------------------------------------------------
    def answer_fast(self, data: bytes, client: str, udp: bool) -> bytes | None:
        head = read_query_head(data)
        if head is None:
            return None
        key = (self.client_group(client), head.key_flags(), head.question)
        entry = self._fast.get(key)
        if entry is None:
            return None
        now = self._clock()
        if now >= entry.expires or (
                entry.fake_ip is not None and entry.pool_generation != self.fakeips.recycled):
            self._fast.pop(key, None)
            return None
        if udp and len(entry.wire) > self._udp_limit(head.edns_size):
            return None  # the slow path truncates
        if entry.fake_ip is not None:
            self.fakeips.touch(entry.fake_ip)
        self.fast_hits += 1
        self.querylog.add(client, entry.qname, head.qtype, entry.action, entry.rcode, True, entry.origin)
        return patch(entry.wire, head.qid, entry.ttls, int(now - entry.stored))

    # -- entry point ----------------------------------------------------------
    async def answer(self, data: bytes, client: str, udp: bool = True) -> bytes | None:
        fast = self.answer_fast(data, client, udp)
        if fast is not None:
            return fast
        return await self.answer_slow(data, client, udp)

    async def answer_slow(self, data: bytes, client: str, udp: bool) -> bytes | None:
        try:
            query = dns.message.from_wire(data)
        except dns.message.BadEDNS:
            return _header_only(data, dns.rcode.FORMERR)
        except (dns.exception.DNSException, ValueError, IndexError, UnicodeError):
            return _header_only(data, dns.rcode.FORMERR)
        if query.flags & dns.flags.QR:
            return None  # never answer an answer: that is how reflection loops start
        if query.opcode() != dns.opcode.QUERY:
            return self._error(query, dns.rcode.NOTIMP)
        if len(query.question) != 1:
            return self._error(query, dns.rcode.FORMERR)
        if query.edns > 0:
            return self._error(query, dns.rcode.BADVERS)
        question = query.question[0]
        if question.rdtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR) or question.rdtype == dns.rdatatype.OPT:
            return self._error(query, dns.rcode.REFUSED)
        qname = question.name.to_text(omit_final_dot=True).lower()
        if qname == ".":
            qname = ""
        group = self.client_group(client)
        response = dns.message.make_response(query, our_payload=self.settings.edns_udp_size)
        response.flags |= dns.flags.RA
        self.slow_answers += 1
        outcome = await self._resolve(response, question.name, qname, question.rdtype,
                                      question.rdclass, group)
        wire = response.to_wire()
        limit = self._udp_limit(query.payload if query.edns >= 0 else None)
        if len(self._fast) >= self._fast_max:
            self._fast = {}  # crude but O(1): the next hits refill it
        if outcome.lifetime and outcome.lifetime > 0:
            head = read_query_head(data)
            if head is not None:
                now = self._clock()
                self._fast[(group, head.key_flags(), head.question)] = FastEntry(
                    wire, [] if outcome.fixed else ttl_offsets(wire), now, now + outcome.lifetime,
                    qname, outcome.action, response.rcode(), outcome.origin, outcome.fake_ip,
                    self.fakeips.recycled)
        self.querylog.add(client, qname, question.rdtype, outcome.action, response.rcode(),
                          outcome.cached, outcome.origin)
        if udp and len(wire) > limit:
            return self._truncated(query, response)
        return wire

    def _error(self, query: dns.message.Message, rcode: int) -> bytes:
        response = dns.message.make_response(query, our_payload=self.settings.edns_udp_size)
        response.flags |= dns.flags.RA
        response.set_rcode(rcode)
        return response.to_wire()

    def _truncated(self, query: dns.message.Message, full: dns.message.Message) -> bytes:
        response = dns.message.make_response(query, our_payload=self.settings.edns_udp_size)
        response.flags |= dns.flags.RA | dns.flags.TC
        response.set_rcode(full.rcode())
        return response.to_wire()

    # -- deciding -------------------------------------------------------------
    async def _resolve(self, response: dns.message.Message, name: dns.name.Name, qname: str,
                       qtype: int, qclass: int, group: int) -> Outcome:
        if qclass == dns.rdataclass.IN:
            local = self._local(response, name, qname, qtype)
            if local is not None:
                return local
            decision = self.policy.decide(group, qname)
        else:
            decision = Decision("direct", None, "")
        kind = decision.kind
        if kind == "block":
            return self._block(response, name, qtype, group, decision)
        if kind == "rewrite":
            return await self._rewrite(response, name, qtype, decision)
        if kind == "fake-ip" and not self.fake_ips_on:
            outcome = await self._forward(response, name, qname, qtype, qclass,
                                          _join(decision.origin, "relay down: real address"))
            for rrset in (*response.answer, *response.authority):
                rrset.ttl = min(rrset.ttl, RELAY_DOWN_TTL)
            outcome.lifetime = min(outcome.lifetime or 0, RELAY_DOWN_TTL) or None
            return outcome
        if kind == "fake-ip":
            if qtype == A:
                ip = self.fakeips.allocate(qname, decision.action.route)
                if ip is not None:
                    response.answer.append(dns.rrset.from_text(
                        name, self.settings.fake_ip.ttl, "IN", "A", ip))
                    return Outcome("fake-ip", decision.origin, FIXED_LIFETIME, True, ip)
                log.warning("fake-IP pool full of pinned addresses; %s answered for real", qname)
                decision = Decision("direct", None, decision.origin + " (pool full)")
            elif qtype in EMPTY_FOR_FAKE:
                return Outcome("fake-ip", decision.origin, FIXED_LIFETIME, True)
        return await self._forward(response, name, qname, qtype, qclass, decision.origin)

    def _local(self, response, name, qname: str, qtype: int) -> Outcome | None:
        names = self.local_names
        addresses = names.forward(qname)
        if addresses is not None:
            ttl = self.settings.local_names.ttl
            if not addresses:
                response.set_rcode(dns.rcode.NXDOMAIN)
            wanted = {A: 4, AAAA: 6}.get(qtype)
            if qtype == dns.rdatatype.ANY:
                wanted = 0
            for version, rtype in ((4, "A"), (6, "AAAA")):
                found = [a for a in addresses if ipaddress.ip_address(a).version == version]
                if found and wanted in (version, 0):
                    response.answer.append(dns.rrset.from_text_list(name, ttl, "IN", rtype, found))
            return Outcome("local", "local names", FIXED_LIFETIME, True)
        if qtype == PTR:
            target = names.reverse(qname)
            if target is not None:
                response.answer.append(dns.rrset.from_text(
                    name, self.settings.local_names.ttl, "IN", "PTR", target + "."))
                return Outcome("local", "local names", FIXED_LIFETIME, True)
        return None

    def _block(self, response, name, qtype: int, group: int, decision: Decision) -> Outcome:
        mode = decision.action.mode or self.policy.groups[group].block_mode
        ttl = self.settings.block_ttl
        if mode == "nxdomain":
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif qtype == A:
            response.answer.append(dns.rrset.from_text(name, ttl, "IN", "A", "0.0.0.0"))
        elif qtype == AAAA:
            response.answer.append(dns.rrset.from_text(name, ttl, "IN", "AAAA", "::"))
        return Outcome("block", decision.origin, FIXED_LIFETIME, True)

    async def _rewrite(self, response, name, qtype: int, decision: Decision) -> Outcome:
        answer = decision.action.answer
        ttl = decision.action.ttl
        try:
            first = ipaddress.ip_address(answer[0])
        except ValueError:
            first = None
        if first is not None:
            for version, rtype, code in ((4, "A", A), (6, "AAAA", AAAA)):
                found = [a for a in answer if ipaddress.ip_address(a).version == version]
                if found and qtype in (code, dns.rdatatype.ANY):
                    response.answer.append(dns.rrset.from_text_list(name, ttl, "IN", rtype, found))
            return Outcome("rewrite", decision.origin, FIXED_LIFETIME, True)
        target = dns.name.from_text(answer[0])
        response.answer.append(dns.rrset.from_text(name, ttl, "IN", "CNAME", target.to_text()))
        if qtype != CNAME:
            # Chase the target so clients that do not follow CNAMEs still get addresses.
            sub = dns.message.make_response(dns.message.make_query(target, qtype))
            inner = await self._forward(sub, target, answer[0], qtype, dns.rdataclass.IN, "")
            response.answer.extend(sub.answer)
            if sub.rcode() != dns.rcode.NOERROR:
                response.set_rcode(sub.rcode())
            del inner
        return Outcome("rewrite", decision.origin)

    # -- upstream -------------------------------------------------------------
    async def _forward(self, response, name: dns.name.Name, qname: str, qtype: int,
                       qclass: int, origin: str) -> Outcome:
        key = (qname, qtype, qclass)
        cached = self.cache.get(key)
        now = self._clock()
        if cached is not None and cached[1]:
            entry = cached[0]
            fill_response(response, entry, now)
            return Outcome("direct", origin, entry.expires - now, cached=True)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(key, name))
            self._inflight[key] = task
            task.add_done_callback(lambda _t, k=key: self._inflight.pop(k, None))
        settings = self.settings.cache
        stale = cached[0] if cached is not None else None
        if stale is not None:
            done, _ = await asyncio.wait({task}, timeout=settings.stale_after)
            if not done:
                # Keep the refresh going; this client gets the old answer now.
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                fill_response(response, stale, now, stale_ttl=settings.stale_answer_ttl)
                return Outcome("direct", _join(origin, "stale"), cached=True)
        try:
            entry = await asyncio.shield(task)
        except (UpstreamError, asyncio.TimeoutError, OSError, dns.exception.DNSException) as exc:
            if stale is not None:
                fill_response(response, stale, now, stale_ttl=settings.stale_answer_ttl)
                return Outcome("direct", _join(origin, "stale"), cached=True)
            log.debug("SERVFAIL for %s: %s", qname, exc)
            response.set_rcode(dns.rcode.SERVFAIL)
            return Outcome("direct", _join(origin, "upstream failed"))
        now = self._clock()
        fill_response(response, entry, now)
        return Outcome("direct", origin, entry.expires - now if entry.ttl else None)

    async def _fetch(self, key: tuple, name: dns.name.Name) -> CachedAnswer:
        qname, qtype, qclass = key
        query = dns.message.make_query(name, qtype, qclass, use_edns=0,
                                       payload=self.settings.edns_udp_size)
        query.id = random.getrandbits(16)
        deadline = self._clock() + self.settings.cache.servfail_after
        message = await self.upstreams.resolve(query, deadline)
        entry = self.cache.put(key, message)
        if entry is None:  # not cacheable (SERVFAIL, REFUSED from the last upstream)
            entry = CachedAnswer(message.rcode(), list(message.answer), list(message.authority),
                                 [r for r in message.additional if r.rdtype != dns.rdatatype.OPT],
                                 self._clock(), 0)
        return entry


def _join(origin: str, note: str) -> str:
    return f"{origin} ({note})" if origin else note


def _header_only(data: bytes, rcode: int) -> bytes | None:
    """A bare error answer to a query we cannot parse; nothing for non-queries."""
    if len(data) < 12:
        return None
    flags = int.from_bytes(data[2:4], "big")
    if flags & QR:
        return None
    flags = QR | (flags & 0x7900) | 0x0080 | (rcode & 0xF)  # keep opcode+RD, set RA
    return data[:2] + flags.to_bytes(2, "big") + b"\x00" * 8
