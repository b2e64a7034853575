"""Opening the relay's outgoing leg: direct, SOCKS5 or HTTP CONNECT.

Each function returns a connected non-blocking socket plus any bytes that
arrived after the proxy's reply (a server that speaks first, like SSH, may
have its greeting in the same segment), or raises `UpstreamError` with a
reason fit for the log. The handshakes read exactly what the protocol says
and no further where the protocol allows it (SOCKS5); HTTP replies are read
up to the blank line and the rest handed back.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import socket
import struct

from .settings import ProxySettings

SOCKS_REPLIES = {
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}
MAX_HTTP_REPLY = 16384


class UpstreamError(Exception):
    """The outgoing leg could not be opened; the message says why."""


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int,
                        what: str) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await loop.sock_recv(sock, n - len(buf))
        if not chunk:
            raise UpstreamError(f"{what}: connection closed by the proxy")
        buf += chunk
    return bytes(buf)


async def open_tcp(loop: asyncio.AbstractEventLoop, address: tuple[str, int],
                   timeout: float) -> socket.socket:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, address), timeout)
    except asyncio.TimeoutError:
        sock.close()
        raise UpstreamError(f"connect to {address[0]}:{address[1]} timed out after {timeout:g}s") from None
    except OSError as exc:
        sock.close()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise UpstreamError(f"connect to {address[0]}:{address[1]}: {reason}") from None
    return sock


def _socks_address(host: str, port: int) -> bytes:
    try:
        return b"\x01" + ipaddress.IPv4Address(host).packed + struct.pack("!H", port)
    except ValueError:
        name = host.encode("idna")
        return b"\x03" + bytes([len(name)]) + name + struct.pack("!H", port)


async def _socks_reply_address(loop, sock) -> tuple[str, int]:
    atyp = (await _recv_exactly(loop, sock, 1, "SOCKS5 reply"))[0]
    if atyp == 1:
        raw = await _recv_exactly(loop, sock, 6, "SOCKS5 reply")
        return str(ipaddress.IPv4Address(raw[:4])), struct.unpack("!H", raw[4:])[0]
    if atyp == 4:
        raw = await _recv_exactly(loop, sock, 18, "SOCKS5 reply")
        return str(ipaddress.IPv6Address(raw[:16])), struct.unpack("!H", raw[16:])[0]
    if atyp == 3:
        size = (await _recv_exactly(loop, sock, 1, "SOCKS5 reply"))[0]
        raw = await _recv_exactly(loop, sock, size + 2, "SOCKS5 reply")
        # Not "idna": that codec refuses any error handler but "strict", and
        # the name is only shown (the UDP relay uses the proxy's address then).
        return raw[:size].decode("ascii", "replace"), struct.unpack("!H", raw[size:])[0]
    raise UpstreamError(f"SOCKS5 reply: unknown address type {atyp}")


async def socks5_handshake(loop, sock: socket.socket, proxy: ProxySettings, command: int,
                           host: str, port: int) -> tuple[str, int]:
    """Greeting, RFC 1929 auth, one request; returns the reply's bound address."""
    methods = b"\x00\x02" if proxy.username is not None else b"\x00"
    await loop.sock_sendall(sock, b"\x05" + bytes([len(methods)]) + methods)
    version, method = await _recv_exactly(loop, sock, 2, "SOCKS5 greeting")
    if version != 5:
        raise UpstreamError(f"SOCKS5 greeting: not a SOCKS5 server (version {version})")
    if method == 0xFF:
        raise UpstreamError("SOCKS5 greeting: the proxy accepts none of our auth methods"
                            + ("" if proxy.username else " (it wants a username/password)"))
    if method == 2:
        if proxy.username is None:
            raise UpstreamError("SOCKS5: the proxy asks for a password and none is configured")
        user, password = proxy.username.encode(), proxy.password.encode()
        await loop.sock_sendall(sock, b"\x01" + bytes([len(user)]) + user
                                + bytes([len(password)]) + password)
        _, status = await _recv_exactly(loop, sock, 2, "SOCKS5 auth")
        if status != 0:
            raise UpstreamError(f"SOCKS5 auth: username/password rejected (status {status})")
    elif method != 0:
        raise UpstreamError(f"SOCKS5 greeting: the proxy chose method {method} we did not offer")
    await loop.sock_sendall(sock, b"\x05" + bytes([command]) + b"\x00" + _socks_address(host, port))
    version, reply, _ = await _recv_exactly(loop, sock, 3, "SOCKS5 reply")
    if reply != 0:
        reason = SOCKS_REPLIES.get(reply, f"reply code {reply}")
        raise UpstreamError(f"SOCKS5 {'CONNECT' if command == 1 else 'UDP ASSOCIATE'} "
                            f"{host}:{port}: {reason}")
    return await _socks_reply_address(loop, sock)


async def open_socks5(loop, proxy: ProxySettings, host: str, port: int) -> socket.socket:
    sock = await open_tcp(loop, (proxy.address, proxy.port), proxy.connect_timeout)
    try:
        await asyncio.wait_for(socks5_handshake(loop, sock, proxy, 1, host, port),
                               proxy.connect_timeout)
    except asyncio.TimeoutError:
        sock.close()
        raise UpstreamError(f"SOCKS5 proxy {proxy.name}: no reply within {proxy.connect_timeout:g}s") from None
    except (UpstreamError, OSError) as exc:
        sock.close()
        raise UpstreamError(f"proxy {proxy.name}: {exc}") from None
    return sock


async def open_http_connect(loop, proxy: ProxySettings, host: str,
                            port: int) -> tuple[socket.socket, bytes]:
    sock = await open_tcp(loop, (proxy.address, proxy.port), proxy.connect_timeout)
    authority = f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.username is not None:
        token = base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()
        lines.append(f"Proxy-Authorization: Basic {token}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def exchange() -> tuple[bytes, bytes]:
        await loop.sock_sendall(sock, request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                raise UpstreamError("HTTP CONNECT: connection closed by the proxy before a reply")
            buf += chunk
            if len(buf) > MAX_HTTP_REPLY:
                raise UpstreamError("HTTP CONNECT: reply header too long")
        head, _, rest = buf.partition(b"\r\n\r\n")
        return head, rest

    try:
        head, rest = await asyncio.wait_for(exchange(), proxy.connect_timeout)
    except asyncio.TimeoutError:
        sock.close()
        raise UpstreamError(f"HTTP proxy {proxy.name}: no reply within {proxy.connect_timeout:g}s") from None
    except (UpstreamError, OSError) as exc:
        sock.close()
        raise UpstreamError(f"proxy {proxy.name}: {exc}") from None
    try:
        connect_accepted(head, proxy.name, authority)
    except UpstreamError:
        sock.close()
        raise
    return sock, rest


def connect_accepted(head: bytes, proxy: str, authority: str) -> None:
    """An HTTP proxy's reply head to CONNECT: nothing if 200, else UpstreamError."""
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or parts[1] != "200":
        raise UpstreamError(f"proxy {proxy}: CONNECT {authority} answered {status_line!r}")
