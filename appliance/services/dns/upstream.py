"""Upstream resolvers: plain UDP/TCP, DNS-over-TLS, DNS-over-HTTPS; failover.

Everything here speaks wire format (bytes in, bytes out); nothing parses a
whole message. An answer is accepted only if it carries the query's ID, the
QR bit and the same question.

Plain UDP is pipelined: each upstream has a few connected sockets
(`UdpChannels`) with many queries in flight on each, told apart by a random
ID (a dict look-up per answer, no socket or task per query). A socket is
replaced after `RENEW_AFTER` queries, so source ports keep changing for an
off-path spoofer to guess; its late answers are still read until its last
query is settled. An ICMP "port unreachable" fails every query in flight on
that socket at once (the upstream is not there). A truncated answer is asked
again over TCP. TCP, TLS and HTTPS keep idle connections for reuse;
DNS-over-HTTPS speaks HTTP/1.1 POST (RFC 8484 with application/dns-message),
which every public DoH service accepts, so no HTTP/2 library is needed.

`UpstreamSet.fetch` tries upstreams in order with callbacks (the server's
forwarding path creates no task per query), marks a failing one down with a
backoff, answers "all down" at once instead of waiting, and sends one probe
at a time in the background so recovery is noticed. `resolve` is the same
as a coroutine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from .wire import HEADER, QR, REFUSED, SERVFAIL, TC, question_end, upstream_query

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"udp": 53, "tcp": 53, "tls": 853, "https": 443}
_U16 = struct.Struct(">H")


class _RandomIds:
    """Query IDs from the kernel's random source, read 8 KB at a time (a syscall per ID would cost more than the query)."""

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def __call__(self) -> int:
        pos = self._pos
        if pos >= len(self._buf):
            self._buf, pos = os.urandom(8192), 0
        self._pos = pos + 2
        return (self._buf[pos] << 8) | self._buf[pos + 1]


_random16 = _RandomIds()


@dataclass(frozen=True)
class UpstreamTarget:
    scheme: str
    host: str
    port: int
    path: str

    @property
    def host_is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
            return True
        except ValueError:
            return False


def parse_upstream_url(url: str) -> UpstreamTarget:
    """Parse ``udp://ip[:port]``, ``tcp://``, ``tls://``, ``https://host/path``; a bare IP is UDP."""
    text = url.strip()
    if "://" not in text:
        text = "udp://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"unknown upstream scheme {scheme!r}; expected udp, tcp, tls or https")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise ValueError(f"bad port in {url!r}: {exc}") from None
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in upstream {url!r}")
    target = UpstreamTarget(scheme, host, port, parts.path or "/dns-query")
    if scheme in ("udp", "tcp") and not target.host_is_ip:
        raise ValueError(f"plain DNS upstream {url!r} must be an IP address")
    return target


class UpstreamError(Exception):
    pass


class AllUpstreamsDown(UpstreamError):
    pass


def question_key(query: bytes) -> bytes:
    """A query's question (name lower-cased, type, class): what its answer must repeat."""
    end = question_end(query)
    name = query[12:end - 4]
    return name.lower() + query[end - 4:end]


def same_question(got: bytes, key: bytes) -> bool:
    """`got` (from an answer) is `key`, the name compared without regard to case."""
    return got == key or (len(got) == len(key) and got[:-4].lower() == key[:-4]
                          and got[-4:] == key[-4:])


def check_answer(query: bytes, answer: bytes) -> bytes:
    """`answer` if it answers `query` (ID, QR, question); else UpstreamError."""
    key = question_key(query)
    if (len(answer) < 12 + len(key) or answer[:2] != query[:2] or not answer[2] & (QR >> 8)
            or not same_question(answer[12:12 + len(key)], key)):
        raise UpstreamError("answer does not match the query")
    return answer


class _Channel:
    """One connected UDP socket to an upstream and the queries in flight on it."""

    __slots__ = ("owner", "sock", "pending", "sent", "retired")

    def __init__(self, owner: "UdpChannels", sock: socket.socket):
        self.owner = owner
        self.sock = sock
        self.pending: dict[int, tuple[bytes, object]] = {}
        self.sent = 0
        self.retired = False

    def send(self, tail: bytes, key: bytes, waiter, deadline: float) -> int:
        pending = self.pending
        qid = _random16()
        while qid in pending:
            qid = _random16()
        self.sock.send(_U16.pack(qid) + tail)
        pending[qid] = (key, waiter, deadline)
        self.sent += 1
        return qid

    def expire(self, now: float) -> None:
        """Fail the queries whose deadline passed (oldest first: they were sent in order)."""
        pending = self.pending
        late = []
        for qid, item in pending.items():
            if item[2] > now:
                break
            late.append(qid)
        for qid in late:
            item = pending.pop(qid)
            item[1].failed(asyncio.TimeoutError())

    def forget(self, qid: int) -> None:
        self.pending.pop(qid, None)
        if self.retired and not self.pending:
            self.owner.close_channel(self)

    def readable(self) -> None:
        pending = self.pending
        recv = self.sock.recv
        for _ in range(64):
            try:
                data = recv(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                # ICMP unreachable for one of our queries: nobody answers at that address.
                waiting = list(pending.values())
                pending.clear()
                for item in waiting:
                    item[1].failed(exc)
                break
            if len(data) < 12:
                continue
            item = pending.get((data[0] << 8) | data[1])
            if item is None:
                continue  # late (timed out) or forged
            key = item[0]
            if not data[2] & 0x80 or not same_question(data[12:12 + len(key)], key):
                continue  # forged or garbled: keep waiting for the real one
            del pending[(data[0] << 8) | data[1]]
            item[1].answered(data)
        if self.retired and not pending:
            self.owner.close_channel(self)


class UdpChannels:
    """A few connected UDP sockets to one upstream, many queries in flight on each.

    Timeouts are not a timer per query: every `SWEEP` seconds, while queries
    are in flight, each socket fails those past their deadline (so a
    timeout fires up to `SWEEP` late).
    """

    SOCKETS = 4
    RENEW_AFTER = 4096
    SWEEP = 0.05

    def __init__(self, address: str, port: int, loop: asyncio.AbstractEventLoop):
        self.peer = (address, port)
        self.family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.loop = loop
        self._slots = [self._open() for _ in range(self.SOCKETS)]
        self._next = 0
        self._retiring: list[_Channel] = []
        self._sweeper: asyncio.TimerHandle | None = None

    def _open(self) -> _Channel:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        # Answers to a burst of queries arrive together: let them queue.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024 * 1024)
        try:
            sock.connect(self.peer)
        except OSError:
            sock.close()
            raise
        channel = _Channel(self, sock)
        self.loop.add_reader(sock.fileno(), channel.readable)
        return channel

    def send(self, tail: bytes, key: bytes, waiter, deadline: float) -> tuple[_Channel, int]:
        """Send a query (everything after its ID); `waiter.answered(wire)` or `.failed(exc)`
        follows, the latter with a TimeoutError once `deadline` (time.monotonic) has passed."""
        index = self._next
        self._next = (index + 1) % self.SOCKETS
        channel = self._slots[index]
        if channel.sent >= self.RENEW_AFTER:
            channel.retired = True
            if channel.pending:
                self._retiring.append(channel)
            else:
                self.close_channel(channel)
            channel = self._slots[index] = self._open()
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self.SWEEP, self._sweep)
        return channel, channel.send(tail, key, waiter, deadline)

    def _sweep(self) -> None:
        now = time.monotonic()
        busy = False
        for channel in self._slots + self._retiring:
            channel.expire(now)
            if channel.retired and not channel.pending:
                self.close_channel(channel)
            busy = busy or bool(channel.pending)
        self._sweeper = self.loop.call_later(self.SWEEP, self._sweep) if busy else None

    def close_channel(self, channel: _Channel) -> None:
        if channel.sock.fileno() >= 0:
            self.loop.remove_reader(channel.sock.fileno())
            channel.sock.close()
        if channel in self._retiring:
            self._retiring.remove(channel)

    def in_flight(self) -> int:
        return sum(len(c.pending) for c in self._slots + self._retiring)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for channel in self._slots + list(self._retiring):
            channel.pending.clear()
            self.close_channel(channel)


class _OneShot:
    """A waiter for one UDP query as a future (`Upstream.exchange`)."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future):
        self.future = future

    def answered(self, wire: bytes) -> None:
        if not self.future.done():
            self.future.set_result(wire)

    def failed(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class Upstream:
    """One upstream; `exchange` sends a query (wire) and returns the checked answer (wire)."""

    def __init__(self, url: str, address: str | None = None, server_name: str | None = None,
                 ca_file: str | None = None, timeout: float = 1.0, name: str | None = None):
        self.target = parse_upstream_url(url)
        self.url = url
        self.name = name or url
        self.address = address or self.target.host
        self.server_name = server_name or (None if self.target.host_is_ip else self.target.host)
        self.timeout = timeout
        self._ssl: ssl.SSLContext | None = None
        if self.target.scheme in ("tls", "https"):
            ctx = ssl.create_default_context(cafile=ca_file)
            if self.server_name is None:
                # An IP-only TLS upstream: the certificate must carry the IP.
                ctx.check_hostname = True
            if self.target.scheme == "https":
                ctx.set_alpn_protocols(["http/1.1"])
            self._ssl = ctx
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._channels: UdpChannels | None = None
        # Health, read by UpstreamSet.
        self.failures = 0
        self.down_until = 0.0
        self.last_error: str | None = None
        self.answered = 0

    @property
    def pipelined(self) -> bool:
        """Queries go out on the shared UDP sockets (`channels`), not one exchange each."""
        return self.target.scheme == "udp"

    def channels(self) -> UdpChannels:
        channels = self._channels
        # Not asyncio.get_running_loop() per query: it makes a getpid() syscall each time. A
        # closed loop is the only other one these sockets can belong to (tests run one loop
        # after another).
        if channels is None or channels.loop.is_closed():
            if channels is not None:
                channels.close()
            channels = self._channels = UdpChannels(self.address, self.target.port,
                                                    asyncio.get_running_loop())
        return channels

    async def exchange(self, wire: bytes, timeout: float) -> bytes:
        scheme = self.target.scheme
        if scheme == "udp":
            answer = await self._udp(wire, timeout)
            if answer[2] & (TC >> 8):
                answer = await self.stream_exchange(wire, timeout)
            return answer
        if scheme in ("tcp", "tls"):
            return await self.stream_exchange(wire, timeout)
        return await self._https(wire, timeout)

    async def _udp(self, wire: bytes, timeout: float) -> bytes:
        future = asyncio.get_running_loop().create_future()
        channel, qid = self.channels().send(wire[2:], question_key(wire), _OneShot(future),
                                            time.monotonic() + timeout + UdpChannels.SWEEP)
        try:
            answer = await asyncio.wait_for(future, timeout)
        finally:
            channel.forget(qid)
        return wire[:2] + answer[2:]  # the channel chose its own ID

    async def stream_exchange(self, wire: bytes, timeout: float) -> bytes:
        """One query over TCP (or TLS for a tls:// upstream)."""
        tls = self.target.scheme == "tls"

        async def once(conn):
            reader, writer = conn
            writer.write(_U16.pack(len(wire)) + wire)
            await writer.drain()
            length = _U16.unpack(await reader.readexactly(2))[0]
            return check_answer(wire, await reader.readexactly(length))

        return await asyncio.wait_for(self._with_connection(once, tls, self.target.port), timeout)

    async def _connect(self, tls: bool, port: int, fresh: bool = False):
        if self._idle and not fresh:
            return self._idle.pop(), True
        reader, writer = await asyncio.open_connection(
            self.address, port, ssl=self._ssl if tls else None,
            server_hostname=(self.server_name or self.address) if tls else None,
        )
        return (reader, writer), False

    def _release(self, conn) -> None:
        if len(self._idle) < 4 and not conn[1].is_closing():
            self._idle.append(conn)
        else:
            conn[1].close()

    async def _with_connection(self, once, tls: bool, port: int):
        for attempt in (0, 1):
            conn, reused = await self._connect(tls, port, fresh=attempt > 0)
            try:
                result = await once(conn)
            except (OSError, asyncio.IncompleteReadError, UpstreamError, ssl.SSLError):
                conn[1].close()
                if reused and attempt == 0:
                    continue  # the server closed an idle connection: once more, on a new one
                raise
            except BaseException:
                conn[1].close()
                raise
            self._release(conn)
            return result
        raise UpstreamError("unreachable")

    async def _https(self, wire: bytes, timeout: float) -> bytes:
        host = self.target.host
        if self.target.port != 443:
            host = f"{host}:{self.target.port}"

        async def once(conn):
            reader, writer = conn
            head = (
                f"POST {self.target.path} HTTP/1.1\r\nHost: {host}\r\n"
                "Content-Type: application/dns-message\r\nAccept: application/dns-message\r\n"
                f"Content-Length: {len(wire)}\r\n\r\n"
            ).encode()
            writer.write(head + wire)
            await writer.drain()
            status = await reader.readline()
            parts = status.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise UpstreamError(f"not an HTTP answer: {status[:40]!r}")
            headers = {}
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            if headers.get("transfer-encoding", "").lower() == "chunked":
                body = b""
                while True:
                    size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        await reader.readline()
                        break
                    body += await reader.readexactly(size)
                    await reader.readline()
            else:
                body = await reader.readexactly(int(headers.get("content-length", "0")))
            if parts[1] != b"200":
                raise UpstreamError(f"HTTP status {parts[1].decode(errors='replace')}")
            if headers.get("connection", "").lower() == "close":
                writer.close()
            return check_answer(wire, body)

        return await asyncio.wait_for(self._with_connection(once, True, self.target.port), timeout)

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()
        if self._channels is not None:
            self._channels.close()
            self._channels = None


Done = Callable[[bytes | None, BaseException | None], None]


class _Attempt:
    """One question through the upstreams in order, until one answers or time is up."""

    __slots__ = ("ups", "key", "candidates", "index", "deadline", "done", "upstream",
                 "ticket", "last", "finished", "streamed")

    def __init__(self, ups: "UpstreamSet", key: bytes, candidates: list[Upstream], deadline: float,
                 done: Done):
        self.ups = ups
        self.key = key
        self.candidates = candidates
        self.index = 0
        self.deadline = deadline
        self.done = done
        self.upstream: Upstream | None = None
        self.ticket: tuple[_Channel, int] | None = None
        self.last: BaseException | None = None
        self.finished = False
        self.streamed = False

    def next(self) -> None:
        ups = self.ups
        candidates = self.candidates
        while self.index < len(candidates):
            upstream = candidates[self.index]
            self.index += 1
            remaining = self.deadline - ups._clock()
            if remaining <= 0:
                break
            # Leave later upstreams some of the time when this one is slow.
            share = remaining if self.index == len(candidates) else min(upstream.timeout, remaining)
            self.upstream = upstream
            self.streamed = False
            if upstream.pipelined:
                try:
                    self.ticket = upstream.channels().send(ups.tail(self.key), self.key, self,
                                                           time.monotonic() + share)
                except BlockingIOError:  # our send buffer is full: overload, not the upstream's fault
                    self.last = UpstreamError(f"{upstream.name}: send buffer full")
                    continue
                except OSError as exc:  # refused at once (an earlier ICMP error), or no route
                    self.last = ups._failed(upstream, exc)
                    continue
            else:
                ups._track(asyncio.get_running_loop().create_task(
                    self._exchange(upstream, share, stream=False)))
            return
        self._finish(None, self.last or UpstreamError("deadline passed"))

    async def _exchange(self, upstream: Upstream, timeout: float, stream: bool) -> None:
        wire = upstream_query(_random16(), self.key, self.ups.payload)
        try:
            if stream:
                answer = await upstream.stream_exchange(wire, timeout)
            else:
                answer = await asyncio.wait_for(upstream.exchange(wire, timeout), timeout)
        except Exception as exc:  # noqa: BLE001 - whatever it was, this upstream gave no answer
            if upstream is self.upstream and not self.finished:
                self.failed(exc)
            return
        if upstream is self.upstream and not self.finished:
            self.streamed = True
            self.answered(answer)

    def _settle(self) -> None:
        if self.ticket is not None:
            channel, qid = self.ticket
            self.ticket = None
            channel.forget(qid)

    def answered(self, wire: bytes) -> None:
        if self.finished:
            return
        if self.ticket is not None:
            self.ticket = None  # the socket dropped it when the answer came
        upstream = self.upstream
        if not (wire[2] & (TC >> 8) or (wire[3] & 0xF) in (SERVFAIL, REFUSED)):
            # The usual: a complete answer.
            if upstream.failures:
                self.ups._answered(upstream)
            else:
                upstream.answered += 1
            self.finished = True
            self.done(wire, None)
            return
        if wire[2] & (TC >> 8) and not self.streamed:
            # Truncated: the same upstream again over TCP, in the time left.
            remaining = self.deadline - self.ups._clock()
            if remaining > 0:
                self.ups._track(asyncio.get_running_loop().create_task(
                    self._exchange(upstream, remaining, stream=True)))
                return
        rcode = wire[3] & 0xF
        if rcode in (SERVFAIL, REFUSED) and len(self.ups.upstreams) > 1:
            # Another upstream may do better; not a health failure.
            self.last = UpstreamError(f"{upstream.name}: rcode {rcode}")
            self.next()
            return
        self.ups._answered(upstream)
        self._finish(wire, None)

    def failed(self, exc: BaseException) -> None:
        if self.finished:
            return
        self._settle()
        self.last = self.ups._failed(self.upstream, exc)
        self.next()

    def _finish(self, wire: bytes | None, exc: BaseException | None) -> None:
        if self.finished:
            return
        self.finished = True
        self._settle()
        self.done(wire, exc)


class UpstreamSet:
    """Ordered upstreams with failover, backoff and background probing."""

    MAX_BACKOFF = 10.0

    def __init__(self, upstreams: list[Upstream], clock=time.monotonic, payload: int = 1232):
        self.upstreams = upstreams
        self._clock = clock
        self.payload = payload
        self._head = HEADER.pack(0, 0x0100, 1, 0, 0, 1)[2:]
        self._opt = b"\x00\x00\x29" + _U16.pack(payload) + b"\x00" * 6
        self._tasks: set[asyncio.Task] = set()
        self._probe: _Attempt | None = None
        self._next_probe = 0.0

    # A refused or unreachable upstream is down at once; timeouts may be one
    # slow name, so only several in a row mark it down.
    TIMEOUTS_BEFORE_DOWN = 3

    def tail(self, key: bytes) -> bytes:
        """The upstream query for `key`, without its ID (each socket picks one)."""
        return self._head + key + self._opt

    def _track(self, task: asyncio.Task) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _failed(self, upstream: Upstream, exc: BaseException) -> UpstreamError:
        upstream.failures += 1
        upstream.last_error = type(exc).__name__ + (f": {exc}" if str(exc) else "")
        error = UpstreamError(f"{upstream.name}: {upstream.last_error}")
        if isinstance(exc, asyncio.TimeoutError) and upstream.failures < self.TIMEOUTS_BEFORE_DOWN:
            return error
        backoff = min(0.5 * (2 ** (upstream.failures - 1)), self.MAX_BACKOFF)
        upstream.down_until = self._clock() + backoff
        log.info("upstream %s failed (%s); down for %.1fs", upstream.name, upstream.last_error, backoff)
        return error

    def _answered(self, upstream: Upstream) -> None:
        if upstream.failures:
            log.info("upstream %s answers again", upstream.name)
        upstream.failures = 0
        upstream.down_until = 0.0
        upstream.answered += 1

    def fetch(self, key: bytes, deadline: float, done: Done) -> None:
        """Ask the upstreams for `key` (a question); `done(answer_wire, None)` or `done(None, error)`.

        `done` may be called before this returns (every upstream down).
        """
        now = self._clock()
        candidates = [u for u in self.upstreams if u.down_until <= now]
        if not candidates:
            self._start_probe(key)
            done(None, AllUpstreamsDown("every upstream is down"))
            return
        _Attempt(self, key, candidates, deadline, done).next()

    async def resolve(self, query: bytes, deadline: float) -> bytes:
        """The answer (wire, with `query`'s ID) from the first upstream that gives one before `deadline`."""
        future = asyncio.get_running_loop().create_future()

        def done(wire, exc):
            if future.done():
                return
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(query[:2] + wire[2:])

        self.fetch(question_key(query), deadline, done)
        return await future

    PROBE_INTERVAL = 0.25

    def _start_probe(self, key: bytes) -> None:
        if self._probe is not None and not self._probe.finished:
            return
        now = self._clock()
        if now < self._next_probe:
            return
        self._next_probe = now + self.PROBE_INTERVAL
        upstream = min(self.upstreams, key=lambda u: u.down_until)
        self._probe = _Attempt(self, key, [upstream], now + upstream.timeout, lambda *_: None)
        self._probe.next()

    def health(self) -> list[dict]:
        now = self._clock()
        return [{"name": u.name, "url": u.url, "up": u.down_until <= now, "failures": u.failures,
                 "answered": u.answered, "last_error": u.last_error} for u in self.upstreams]

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for upstream in self.upstreams:
            upstream.close()
