"""Upstream resolvers: plain UDP/TCP, DNS-over-TLS, DNS-over-HTTPS; failover.

Each transport exchanges one wire-format query for one answer. UDP uses a
fresh socket (a random source port) per query and falls back to TCP when the
answer is truncated. TCP, TLS and HTTPS keep idle connections for reuse.
DNS-over-HTTPS speaks HTTP/1.1 POST (RFC 8484 with application/dns-message),
which every public DoH service accepts, so no HTTP/2 library is needed.

`UpstreamSet` tries upstreams in order, marks a failing one down with a
backoff, answers "all down" at once instead of waiting, and sends one probe
at a time in the background so recovery is noticed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import dns.exception
import dns.flags
import dns.message
import dns.rcode

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"udp": 53, "tcp": 53, "tls": 853, "https": 443}


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


def _check_answer(query: dns.message.Message, wire: bytes) -> dns.message.Message:
    response = dns.message.from_wire(wire, ignore_trailing=True)
    if not query.is_response(response):
        raise UpstreamError("answer does not match the query")
    return response


class Upstream:
    """One upstream; `exchange` sends a query message and returns the answer."""

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
        # Health, read by UpstreamSet.
        self.failures = 0
        self.down_until = 0.0
        self.last_error: str | None = None
        self.answered = 0

    async def exchange(self, query: dns.message.Message, timeout: float) -> dns.message.Message:
        scheme = self.target.scheme
        if scheme == "udp":
            response = await self._udp(query, timeout)
            if response.flags & dns.flags.TC:
                response = await self._stream(query, timeout, tls=False, port=self.target.port)
            return response
        if scheme == "tcp":
            return await self._stream(query, timeout, tls=False, port=self.target.port)
        if scheme == "tls":
            return await self._stream(query, timeout, tls=True, port=self.target.port)
        return await self._https(query, timeout)

    async def _udp(self, query: dns.message.Message, timeout: float) -> dns.message.Message:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            sock.connect((self.address, self.target.port))
            wire = query.to_wire()
            await loop.sock_sendall(sock, wire)
            deadline = loop.time() + timeout
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise asyncio.TimeoutError
                data = await asyncio.wait_for(loop.sock_recv(sock, 65535), remaining)
                try:
                    return _check_answer(query, data)
                except Exception:
                    continue  # spoofed or garbled: keep waiting for the real one
        finally:
            sock.close()

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

    async def _stream(self, query, timeout, tls: bool, port: int) -> dns.message.Message:
        async def once(conn):
            reader, writer = conn
            wire = query.to_wire()
            writer.write(struct.pack(">H", len(wire)) + wire)
            await writer.drain()
            length = struct.unpack(">H", await reader.readexactly(2))[0]
            return _check_answer(query, await reader.readexactly(length))

        return await asyncio.wait_for(self._with_connection(once, tls, port), timeout)

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

    async def _https(self, query, timeout) -> dns.message.Message:
        host = self.target.host
        if self.target.port != 443:
            host = f"{host}:{self.target.port}"

        async def once(conn):
            reader, writer = conn
            wire = query.to_wire()
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
            return _check_answer(query, body)

        return await asyncio.wait_for(self._with_connection(once, True, self.target.port), timeout)

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


class AllUpstreamsDown(UpstreamError):
    pass


class UpstreamSet:
    """Ordered upstreams with failover, backoff and background probing."""

    MAX_BACKOFF = 10.0

    def __init__(self, upstreams: list[Upstream], clock=time.monotonic):
        self.upstreams = upstreams
        self._clock = clock
        self._probe: asyncio.Task | None = None
        self._next_probe = 0.0

    # A refused or unreachable upstream is down at once; timeouts may be one
    # slow name, so only several in a row mark it down.
    TIMEOUTS_BEFORE_DOWN = 3

    def _failed(self, upstream: Upstream, exc: BaseException) -> None:
        upstream.failures += 1
        upstream.last_error = type(exc).__name__ + (f": {exc}" if str(exc) else "")
        if isinstance(exc, asyncio.TimeoutError) and upstream.failures < self.TIMEOUTS_BEFORE_DOWN:
            return
        backoff = min(0.5 * (2 ** (upstream.failures - 1)), self.MAX_BACKOFF)
        upstream.down_until = self._clock() + backoff
        log.info("upstream %s failed (%s); down for %.1fs", upstream.name, upstream.last_error, backoff)

    def _answered(self, upstream: Upstream) -> None:
        if upstream.failures:
            log.info("upstream %s answers again", upstream.name)
        upstream.failures = 0
        upstream.down_until = 0.0
        upstream.answered += 1

    async def _try(self, upstream: Upstream, query, timeout) -> dns.message.Message:
        try:
            response = await upstream.exchange(query, timeout)
        except (OSError, asyncio.TimeoutError, EOFError, UpstreamError, ssl.SSLError,
                dns.exception.DNSException, ValueError) as exc:
            self._failed(upstream, exc)
            raise UpstreamError(f"{upstream.name}: {exc!r}") from None
        if response.rcode() in (dns.rcode.SERVFAIL, dns.rcode.REFUSED) and len(self.upstreams) > 1:
            # Another upstream may do better; not a health failure.
            raise UpstreamError(f"{upstream.name}: {dns.rcode.to_text(response.rcode())}")
        self._answered(upstream)
        return response

    async def resolve(self, query: dns.message.Message, deadline: float) -> dns.message.Message:
        """Answer from the first upstream that gives one before `deadline` (a clock value)."""
        now = self._clock()
        candidates = [u for u in self.upstreams if u.down_until <= now]
        if not candidates:
            self._start_probe(query)
            raise AllUpstreamsDown("every upstream is down")
        last: Exception | None = None
        for index, upstream in enumerate(candidates):
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            # Leave later upstreams some of the time when this one is slow.
            share = remaining if index == len(candidates) - 1 else min(upstream.timeout, remaining)
            try:
                return await self._try(upstream, query, share)
            except UpstreamError as exc:
                last = exc
        raise last or UpstreamError("deadline passed")

    PROBE_INTERVAL = 0.25

    def _start_probe(self, query: dns.message.Message) -> None:
        if self._probe is not None and not self._probe.done():
            return
        now = self._clock()
        if now < self._next_probe:
            return
        self._next_probe = now + self.PROBE_INTERVAL
        upstream = min(self.upstreams, key=lambda u: u.down_until)

        async def probe():
            probe_query = dns.message.make_query(query.question[0].name, query.question[0].rdtype)
            probe_query.id = random.getrandbits(16)
            try:
                await self._try(upstream, probe_query, upstream.timeout)
            except UpstreamError:
                pass

        self._probe = asyncio.get_running_loop().create_task(probe())

    def health(self) -> list[dict]:
        now = self._clock()
        return [{"name": u.name, "url": u.url, "up": u.down_until <= now, "failures": u.failures,
                 "answered": u.answered, "last_error": u.last_error} for u in self.upstreams]

    def close(self) -> None:
        for upstream in self.upstreams:
            upstream.close()

