"""UDP to fake addresses (QUIC, games): relay it, or refuse it with ICMP.

The same nftables rule hands UDP to the fake range to one transparent UDP
socket; `IP_RECVORIGDSTADDR` tells each datagram's fake destination. A
session per (client, fake address) then carries the datagrams:

- `direct`: a UDP socket connected to the real address;
- a SOCKS5 proxy with ``udp: true``: RFC 1928 UDP ASSOCIATE (a TCP control
  connection plus a UDP socket to the relay address the proxy names; the
  session ends with the control connection);
- anything else (HTTP proxies, SOCKS5 without UDP, `reject`, unknown
  addresses): an ICMP port unreachable from the fake address, so the
  application (a browser trying QUIC) falls back to TCP at once instead of
  waiting for a timeout.

Replies go back from a socket bound to the fake address and port (the fake
range is a local route, so no IP_TRANSPARENT is needed there, and a
non-transparent socket is never chosen by TPROXY, so client datagrams keep
arriving at the one listener).

IPv6 fake addresses (`fake_range6`, with `ipv6.policy: invisible`) have a
listener of their own on [::] (IPV6_TRANSPARENT, IPV6_RECVORIGDSTADDR). A
datagram to a fake IPv6 address is carried under its IPv4 twin (one pool
serves both families: the directory, the pins and the table know the
twin), upstream over IPv4 as for TCP; replies leave from the IPv6 address
the client sent to. IPv6 binds only to addresses on an interface (a local
route is not enough, unlike IPv4), so those reply sockets take
IPV6_FREEBIND, which is not transparency: TPROXY still never picks them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct

from appliance.services.dns.fakeip import twin4

from .table import Connection
from .upstream import UpstreamError, _socks_address, open_tcp, socks5_handshake

log = logging.getLogger("appliance.relay")

IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
IP_RECVORIGDSTADDR = getattr(socket, "IP_RECVORIGDSTADDR", 20)
IP_ORIGDSTADDR = IP_RECVORIGDSTADDR
IPV6_TRANSPARENT = 75  # linux/in6.h
IPV6_RECVORIGDSTADDR = 74
IPV6_ORIGDSTADDR = IPV6_RECVORIGDSTADDR
IPV6_FREEBIND = 78
DATAGRAMS_PER_WAKEUP = 64
MAX_QUEUED = 32  # datagrams held while a session's upstream is being opened


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def port_unreachable(client: tuple[str, int], fake: tuple[str, int], payload: bytes) -> bytes:
    """The IPv4 packet fake -> client: ICMP type 3 code 3 quoting the datagram's headers."""
    src, dst = socket.inet_aton(fake[0]), socket.inet_aton(client[0])
    udp_len = 8 + len(payload)
    # The quoted datagram as it arrived: client -> fake (checksum 0 = not computed).
    quoted_ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, 64, 17, 0, dst, src)
    quoted_ip = quoted_ip[:10] + struct.pack("!H", checksum(quoted_ip)) + quoted_ip[12:]
    quoted = quoted_ip + struct.pack("!HHHH", client[1], fake[1], udp_len, 0) + payload[:32]
    icmp = struct.pack("!BBHI", 3, 3, 0, 0) + quoted
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(icmp), 0, 0, 64, 1, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + icmp


def port_unreachable6(client: tuple[str, int], fake: tuple[str, int], payload: bytes) -> bytes:
    """The IPv6 packet fake -> client: ICMPv6 type 1 code 4 (port unreachable) quoting the datagram."""
    src, dst = socket.inet_pton(socket.AF_INET6, fake[0]), socket.inet_pton(socket.AF_INET6, client[0])
    udp_len = 8 + len(payload)
    quoted = (struct.pack("!IHBB16s16s", 6 << 28, udp_len, 17, 64, dst, src)
              + struct.pack("!HHHH", client[1], fake[1], udp_len, 0) + payload)
    quoted = quoted[:1232 - 8]  # RFC 4443: the error fits the IPv6 minimum MTU
    icmp = struct.pack("!BBHI", 1, 4, 0, 0) + quoted
    pseudo = src + dst + struct.pack("!I3xB", len(icmp), 58)
    icmp = icmp[:2] + struct.pack("!H", checksum(pseudo + icmp)) + icmp[4:]
    return struct.pack("!IHBB16s16s", 6 << 28, len(icmp), 58, 64, src, dst) + icmp


def original_destination(anc) -> tuple[str, int] | None:
    """The (address, port) a TPROXY'd datagram was sent to, from its ancillary data (either family)."""
    for level, kind, value in anc:
        if level == socket.SOL_IP and kind == IP_ORIGDSTADDR and len(value) >= 8:
            return socket.inet_ntoa(value[4:8]), struct.unpack("!H", value[2:4])[0]
        if level == socket.IPPROTO_IPV6 and kind == IPV6_ORIGDSTADDR and len(value) >= 24:
            return socket.inet_ntop(socket.AF_INET6, value[8:24]), struct.unpack("!H", value[2:4])[0]
    return None


def _ipv4_literal(text: str) -> bool:
    # A bound address that is a name (or IPv6) would make connect() resolve it
    # in the event loop, or fail: the proxy's own address serves instead.
    try:
        ipaddress.IPv4Address(text)
        return True
    except ValueError:
        return False


def parse_socks_udp(data: bytes) -> bytes | None:
    """The payload of a SOCKS5 UDP reply (header: RSV RSV FRAG ATYP ADDR PORT)."""
    if len(data) < 4 or data[2] != 0:
        return None  # fragments are not supported (RFC 1928 makes them optional)
    atyp = data[3]
    if atyp == 1:
        start = 4 + 4 + 2
    elif atyp == 4:
        start = 4 + 16 + 2
    elif atyp == 3 and len(data) > 4:
        start = 5 + data[4] + 2
    else:
        return None
    return data[start:] if len(data) >= start else None


class UdpSession:
    __slots__ = ("udp", "conn", "client", "fake", "seen", "sock", "control", "queue", "last",
                 "up", "down", "closed", "header", "pinned")

    def __init__(self, udp: "UdpRelay", conn: Connection, seen: tuple[str, int] | None = None):
        self.udp, self.conn = udp, conn
        self.client, self.fake = conn.client, conn.fake
        self.seen = seen or conn.fake  # where the client sent to: the fake IPv6 address, or the IPv4 one
        self.sock: socket.socket | None = None
        self.control: socket.socket | None = None
        self.queue: list[bytes] | None = []
        self.last = udp.loop.time()
        self.up = self.down = 0
        self.closed = False
        self.header = b""  # SOCKS5 UDP request header, empty for direct
        self.pinned = False
        conn.bytes_fn = lambda: (self.up, self.down)

    def send(self, data: bytes) -> None:
        self.last = self.udp.loop.time()
        if self.queue is not None:
            if len(self.queue) < MAX_QUEUED:
                self.queue.append(data)
            return
        try:
            self.sock.send(self.header + data)
            self.up += len(data)
        except OSError:
            pass  # UDP: the application retries

    def opened(self, sock: socket.socket) -> None:
        self.sock = sock
        self.conn.state = "open"
        self.udp.loop.add_reader(sock.fileno(), self._on_reply)
        queued, self.queue = self.queue, None
        for data in queued:
            self.send(data)

    def _on_reply(self) -> None:
        for _ in range(DATAGRAMS_PER_WAKEUP):
            try:
                data = self.sock.recv(65535)
            except BlockingIOError:
                return
            except OSError:
                continue  # ICMP from the real host (port unreachable...): UDP carries on
            if self.header:
                data = parse_socks_udp(data)
                if data is None:
                    continue
            self.last = self.udp.loop.time()
            if self.udp.reply(self.seen, self.client, data):
                self.down += len(data)

    def close(self, state: str = "closed", error: str | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        for sock in (self.sock, self.control):
            if sock is not None:
                try:
                    self.udp.loop.remove_reader(sock.fileno())
                except (ValueError, OSError):
                    pass
                sock.close()
        self.udp.closed(self, state, error)


class UdpRelay:
    def __init__(self, relay):
        self.relay = relay
        self.loop = relay.loop
        self.sessions: dict[tuple, UdpSession] = {}
        self.listener: socket.socket | None = None
        self.listener6: socket.socket | None = None
        self._reply_socks: dict[tuple[str, int], socket.socket] = {}
        self._raw: socket.socket | None = None
        self._raw6: socket.socket | None = None
        self._no_udp: set[str] = set()  # proxies that answered "command not supported"

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        sock.setsockopt(socket.SOL_IP, IP_RECVORIGDSTADDR, 1)
        sock.bind(self.relay.settings.listen_address())
        sock.setblocking(False)
        self.listener = sock
        self.loop.add_reader(sock.fileno(), self._on_datagram, sock)
        if self.relay.settings.fake_range6 is not None:
            sock6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock6.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
            sock6.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVORIGDSTADDR, 1)
            sock6.bind(("::", self.relay.settings.listen_address()[1]))
            sock6.setblocking(False)
            self.listener6 = sock6
            self.loop.add_reader(sock6.fileno(), self._on_datagram, sock6)

    def stop(self) -> None:
        for listener in (self.listener, self.listener6):
            if listener is not None:
                self.loop.remove_reader(listener.fileno())
                listener.close()
        self.listener = self.listener6 = None
        for session in list(self.sessions.values()):
            session.close("closed", "relay stopping")
        for sock in self._reply_socks.values():
            sock.close()
        self._reply_socks.clear()

    # -- incoming -------------------------------------------------------------
    def _on_datagram(self, listener: socket.socket) -> None:
        settings = self.relay.settings
        for _ in range(DATAGRAMS_PER_WAKEUP):
            try:
                data, anc, _flags, client = listener.recvmsg(65535, 64)
            except BlockingIOError:
                return
            except OSError:
                continue
            client = client[:2]
            seen = original_destination(anc)
            if seen is None or not self.relay.allowed(client[0]):
                continue
            fake = seen
            if listener is self.listener6:
                # Carried under its IPv4 twin, as a TCP connection to a fake IPv6 address is.
                twin = twin4(seen[0], settings.fake_range, settings.fake_range6)
                if twin is None:
                    continue
                fake = (twin, seen[1])
            if ipaddress.IPv4Address(fake[0]) not in self.relay.fake_range:
                continue
            session = self.sessions.get((client, fake))
            if session is None:
                session = self._open(client, fake, data, seen)
                if session is None:
                    continue
            session.send(data)

    def _open(self, client, fake, data: bytes, seen=None) -> UdpSession | None:
        relay = self.relay
        if len(self.sessions) >= relay.settings.max_connections:
            self.refuse(client, seen or fake, data, "connection cap reached")
            return None
        # The row is filled in once the directory has answered; datagrams queue meanwhile.
        conn = relay.table.open("udp", client, fake, None, "-")
        session = UdpSession(self, conn, seen)
        self.sessions[(client, fake)] = session
        self.loop.create_task(self._connect(session))
        return session

    async def _connect(self, session: UdpSession) -> None:
        conn = session.conn
        relay = self.relay
        target = await relay.directory.lookup(conn.fake[0])
        if session.closed:
            return
        first = (session.queue or [b""])[0]
        if target is None:
            session.close("refused", f"no domain for fake address {conn.fake[0]}")
            self.refuse(conn.client, session.seen, first, session.conn.error)
            return
        conn.domain, conn.route = target.domain, target.route
        route = target.route
        proxy = relay.settings.proxy(route) if route not in ("direct", "reject") else None
        if route != "direct" and not (proxy and proxy.type == "socks5" and proxy.udp
                                      and proxy.name not in self._no_udp):
            session.close("refused", f"route {route} carries no UDP")
            self.refuse(conn.client, session.seen, first, f"{target.domain}: {session.conn.error}")
            return
        relay.directory.pin(conn.fake[0])
        session.pinned = True
        try:
            if proxy is None:
                real = await self.relay.resolver.resolve(conn.domain)
                conn.real = f"{real}:{conn.fake[1]}"
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setblocking(False)
                sock.connect((real, conn.fake[1]))
            else:
                conn.real = f"proxy {proxy.name} ({proxy.address}:{proxy.port})"
                control = await open_tcp(self.loop, (proxy.address, proxy.port), proxy.connect_timeout)
                session.control = control
                bound = await asyncio.wait_for(
                    socks5_handshake(self.loop, control, proxy, 3, "0.0.0.0", 0),
                    proxy.connect_timeout)
                host = bound[0] if _ipv4_literal(bound[0]) and bound[0] != "0.0.0.0" else proxy.address
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setblocking(False)
                sock.connect((host, bound[1]))
                session.header = b"\0\0\0" + _socks_address(conn.domain, conn.fake[1])
                # The association lives as long as its control connection.
                self.loop.add_reader(control.fileno(), self._control_readable, session)
        except (UpstreamError, OSError, asyncio.TimeoutError, Exception) as exc:
            reason = str(exc) or type(exc).__name__
            if proxy is not None and "command not supported" in reason:
                self._no_udp.add(proxy.name)
            log.warning("udp %s:%d -> %s:%d via %s failed: %s", *conn.client, conn.domain,
                        conn.fake[1], conn.route, reason)
            queued = session.queue or [b""]
            session.close("failed", reason)
            self.refuse(conn.client, session.seen, queued[0], None)
            return
        if session.closed:
            sock.close()
            return
        session.opened(sock)

    def _control_readable(self, session: UdpSession) -> None:
        try:
            data = session.control.recv(512)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            session.close("closed", "SOCKS5 control connection closed")

    # -- outgoing -------------------------------------------------------------
    def reply(self, fake: tuple[str, int], client: tuple[str, int], data: bytes) -> bool:
        """Send `data` to `client` from `fake` (the address the client sent to, IPv4 or IPv6)."""
        sock = self._reply_socks.get(fake)
        if sock is None:
            six = ":" in fake[0]
            sock = socket.socket(socket.AF_INET6 if six else socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            if six:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
            sock.setblocking(False)
            try:
                sock.bind(fake)
            except OSError as exc:
                log.warning("udp reply socket %s:%d: %s", *fake, exc.strerror or exc)
                sock.close()
                return False
            self._reply_socks[fake] = sock
        try:
            sock.sendto(data, client)
            return True
        except OSError:
            return False

    def refuse(self, client, fake, data: bytes, reason: str | None) -> None:
        """ICMP port unreachable from the fake address: the client gives up UDP at once."""
        if reason:
            log.info("udp %s:%d -> %s:%d refused (ICMP): %s", *client, *fake, reason)
        six = ":" in fake[0]
        raw = self._raw6 if six else self._raw
        if raw is None:
            # IPPROTO_RAW: the header is ours (the source is the fake address, not vproxy's).
            raw = socket.socket(socket.AF_INET6 if six else socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            raw.setblocking(False)
            if six:
                self._raw6 = raw
            else:
                self._raw = raw
        try:
            if six:
                raw.sendto(port_unreachable6(client, fake, data), (client[0], 0))
            else:
                raw.sendto(port_unreachable(client, fake, data), (client[0], 0))
        except OSError as exc:
            log.warning("udp: ICMP to %s failed: %s", client[0], exc.strerror or exc)

    # -- bookkeeping ----------------------------------------------------------
    def closed(self, session: UdpSession, state: str, error: str | None) -> None:
        if self.sessions.pop((session.client, session.fake), None) is None:
            return
        if session.pinned:
            self.relay.directory.unpin(session.fake[0])
        self.relay.table.close(session.conn, state, error)
        if not any(other.seen == session.seen for other in self.sessions.values()):
            sock = self._reply_socks.pop(session.seen, None)
            if sock is not None:
                sock.close()

    def sweep(self) -> None:
        now = self.loop.time()
        limit = self.relay.settings.udp_idle_timeout
        for session in list(self.sessions.values()):
            if now - session.last > limit:
                session.close("closed", f"idle for {limit:g}s")
