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
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct

from .table import Connection
from .upstream import UpstreamError, _socks_address, open_tcp, socks5_handshake

log = logging.getLogger("appliance.relay")

IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
IP_RECVORIGDSTADDR = getattr(socket, "IP_RECVORIGDSTADDR", 20)
IP_ORIGDSTADDR = IP_RECVORIGDSTADDR
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
    __slots__ = ("udp", "conn", "client", "fake", "sock", "control", "queue", "last",
                 "up", "down", "closed", "header", "pinned")

    def __init__(self, udp: "UdpRelay", conn: Connection):
        self.udp, self.conn = udp, conn
        self.client, self.fake = conn.client, conn.fake
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
            if self.udp.reply(self.fake, self.client, data):
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
        self._reply_socks: dict[tuple[str, int], socket.socket] = {}
        self._raw: socket.socket | None = None
        self._no_udp: set[str] = set()  # proxies that answered "command not supported"

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        sock.setsockopt(socket.SOL_IP, IP_RECVORIGDSTADDR, 1)
        sock.bind(self.relay.settings.listen_address())
        sock.setblocking(False)
        self.listener = sock
        self.loop.add_reader(sock.fileno(), self._on_datagram)

    def stop(self) -> None:
        if self.listener is not None:
            self.loop.remove_reader(self.listener.fileno())
            self.listener.close()
            self.listener = None
        for session in list(self.sessions.values()):
            session.close("closed", "relay stopping")
        for sock in self._reply_socks.values():
            sock.close()
        self._reply_socks.clear()

    # -- incoming -------------------------------------------------------------
    def _on_datagram(self) -> None:
        for _ in range(DATAGRAMS_PER_WAKEUP):
            try:
                data, anc, _flags, client = self.listener.recvmsg(65535, 64)
            except BlockingIOError:
                return
            except OSError:
                continue
            fake = None
            for level, kind, value in anc:
                if level == socket.SOL_IP and kind == IP_ORIGDSTADDR and len(value) >= 8:
                    port, = struct.unpack("!H", value[2:4])
                    fake = (socket.inet_ntoa(value[4:8]), port)
            if fake is None or not self.relay.allowed(client[0]):
                continue
            if ipaddress.IPv4Address(fake[0]) not in self.relay.fake_range:
                continue
            session = self.sessions.get((client, fake))
            if session is None:
                session = self._open(client, fake, data)
                if session is None:
                    continue
            session.send(data)

    def _open(self, client, fake, data: bytes) -> UdpSession | None:
        relay = self.relay
        if len(self.sessions) >= relay.settings.max_connections:
            self.refuse(client, fake, data, "connection cap reached")
            return None
        # The row is filled in once the directory has answered; datagrams queue meanwhile.
        conn = relay.table.open("udp", client, fake, None, "-")
        session = UdpSession(self, conn)
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
            self.refuse(conn.client, conn.fake, first, session.conn.error)
            return
        conn.domain, conn.route = target.domain, target.route
        route = target.route
        proxy = relay.settings.proxy(route) if route not in ("direct", "reject") else None
        if route != "direct" and not (proxy and proxy.type == "socks5" and proxy.udp
                                      and proxy.name not in self._no_udp):
            session.close("refused", f"route {route} carries no UDP")
            self.refuse(conn.client, conn.fake, first, f"{target.domain}: {session.conn.error}")
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
            self.refuse(conn.client, conn.fake, queued[0], None)
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
        sock = self._reply_socks.get(fake)
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
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
        if self._raw is None:
            self._raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            self._raw.setblocking(False)
        try:
            self._raw.sendto(port_unreachable(client, fake, data), (client[0], 0))
        except OSError as exc:
            log.warning("udp: ICMP to %s failed: %s", client[0], exc.strerror or exc)

    # -- bookkeeping ----------------------------------------------------------
    def closed(self, session: UdpSession, state: str, error: str | None) -> None:
        if self.sessions.pop((session.client, session.fake), None) is None:
            return
        if session.pinned:
            self.relay.directory.unpin(session.fake[0])
        self.relay.table.close(session.conn, state, error)
        if not any(k[1] == session.fake for k in self.sessions):
            sock = self._reply_socks.pop(session.fake, None)
            if sock is not None:
                sock.close()

    def sweep(self) -> None:
        now = self.loop.time()
        limit = self.relay.settings.udp_idle_timeout
        for session in list(self.sessions.values()):
            if now - session.last > limit:
                session.close("closed", f"idle for {limit:g}s")
