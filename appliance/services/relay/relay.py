"""The transparent relay: one TPROXY socket for every fake-IP connection.

The nftables rule of netns vproxy (`nft.tproxy_rules`) hands every TCP
connection to the fake range to one listening socket (IP_TRANSPARENT,
bound to loopback so nothing reaches it directly). For each connection the
relay:

1. checks the source is on the home side (`allow_clients`, not
   `deny_clients`) and the connection cap; otherwise resets it at once;
2. reads the fake address it was sent to (the socket's local address) and
   asks the directory for the domain and the route the DNS rule chose;
3. pins the fake address for as long as the connection lives;
4. opens the outgoing leg by that route (`direct`: resolve the domain
   upstream and connect; a named proxy: SOCKS5 or HTTP CONNECT with the
   domain; `reject`: reset at once), resetting the client with a logged
   reason when that fails;
5. relays both directions with `Pump`s (splice, half-close, backpressure)
   and an idle timeout, keeping the connection table up to date.

`Relay` is also the Python interface the console uses in-process:
`connections()`, `history()`, `counters()`, `stats()`; the control socket
(`control.py`) serves the same to other processes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import resource
import socket
import struct
import time

from appliance.services.dns.fakeip import twin4

from .directory import Directory, DnsDirectory
from .fastpath import FastPath
from .pump import Pump
from .resolve import ResolveError, Resolver
from .settings import RelaySettings
from .table import Connection, ConnectionTable
from .upstream import UpstreamError, open_http_connect, open_socks5, open_tcp

log = logging.getLogger("appliance.relay")

IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
LINGER_RESET = struct.pack("ii", 1, 0)
ACCEPTS_PER_WAKEUP = 64


def reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN: the peer learns at once that it is refused."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    except OSError:
        pass
    sock.close()


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class ClientFilter:
    """Is a source on the home side? (`allow_clients` minus `deny_clients`)"""

    def __init__(self, allow: list[str], deny: list[str], ipv6: bool = False):
        self.allow = [ipaddress.IPv4Network(n) for n in allow]
        self.deny = [ipaddress.IPv4Network(n) for n in deny]
        # IPv6 sources reach the relay only from the home-side interfaces
        # (the ip6 TPROXY rule's iifname; the flows drop the fake range from
        # the modem side), whatever the modem's prefix is today.
        self.ipv6 = ipv6

    def __call__(self, ip: str) -> bool:
        try:
            addr = ipaddress.IPv4Address(ip)
        except ValueError:
            return self.ipv6 and _is_ipv6(ip)
        return any(addr in n for n in self.allow) and not any(addr in n for n in self.deny)


def _is_ipv6(ip: str) -> bool:
    try:
        return ipaddress.IPv6Address(ip).ipv4_mapped is None
    except ValueError:
        return False


IPV6_TRANSPARENT = 75  # linux/in6.h


class TcpSession:
    """A relayed TCP connection: both sockets, both pumps, its table row."""

    __slots__ = ("relay", "conn", "client", "upstream", "up", "down", "last", "early", "closed", "fake6")

    def __init__(self, relay: "Relay", conn: Connection, client: socket.socket, fake6: str | None = None):
        self.relay, self.conn, self.client = relay, conn, client
        self.fake6 = fake6  # the fake IPv6 address the client used (conn.fake is its IPv4 twin)
        self.upstream: socket.socket | None = None
        self.up = self.down = None
        self.last = relay.loop.time()
        self.early = 0
        self.closed = False

    def touch(self) -> None:
        self.last = self.relay.loop.time()

    def bytes(self) -> tuple[int, int]:
        return (self.up.bytes if self.up else 0), (self.down.bytes if self.down else 0) + self.early

    def start(self, upstream: socket.socket) -> None:
        relay = self.relay
        s = relay.settings
        self.upstream = upstream
        self.conn.state = "open"
        self.conn.bytes_fn = self.bytes
        self.up = Pump(relay.loop, self.client, upstream, self._pump_done, self.touch,
                       s.pipe_size, s.splice)
        self.down = Pump(relay.loop, upstream, self.client, self._pump_done, self.touch,
                         s.pipe_size, s.splice)
        self.up.start()
        self.down.start()

    def _pump_done(self, pump: Pump, error: OSError | None) -> None:
        if error is not None:
            side = "client" if pump is self.up else "server"
            self.abort(f"{side} side: {error.strerror or error}")
        elif self.up.finished and self.down.finished:
            self.finish()

    def finish(self, state: str = "closed", error: str | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        for pump in (self.up, self.down):
            if pump is not None:
                pump.stop()
        self.client.close()
        if self.upstream is not None:
            self.upstream.close()
        self.relay._session_closed(self, state, error)

    def abort(self, reason: str) -> None:
        """Reset both sides (an error on one side is passed on as a reset)."""
        if self.closed:
            return
        for pump in (self.up, self.down):
            if pump is not None:
                pump.stop()
        for sock in (self.client, self.upstream):
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
                except OSError:
                    pass
        self.finish("closed", reason)


class Relay:
    def __init__(self, settings: RelaySettings, directory: Directory | None = None,
                 loop: asyncio.AbstractEventLoop | None = None):
        self.loop = loop or asyncio.get_event_loop()
        self.settings = settings
        self.directory = directory if directory is not None else DnsDirectory(
            settings.dns_control, settings.fakeip_db)
        self._own_directory = directory is None
        self.table = ConnectionTable(settings.history_size)
        self.resolver = Resolver(settings.resolver_addresses())
        self.allowed = ClientFilter(settings.allow_clients, settings.deny_clients, settings.fake_range6 is not None)
        self.fake_range = ipaddress.IPv4Network(settings.fake_range)
        self.listener6: socket.socket | None = None
        self.sessions: dict[int, TcpSession] = {}
        self.pending = 0  # accepted, domain not yet looked up
        self.listener: socket.socket | None = None
        self.udp = None
        self.control = None
        self.started = time.time()
        self.rejected_sources = 0
        self._sweeper: asyncio.Task | None = None
        self._fastpath_restart: asyncio.Task | None = None
        self.fastpath = FastPath(self)

    # -- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        raise_fd_limit()
        # Before the first connection: a dead predecessor's map must not outlive this start.
        await self.fastpath.start()
        self._listen()
        from .udp import UdpRelay

        self.udp = UdpRelay(self)
        self.udp.start()
        if self.settings.control_socket:
            from .control import ControlServer

            self.control = ControlServer(self, self.settings.control_socket)
            await self.control.start()
        self._sweeper = self.loop.create_task(self._sweep())
        log.info("relay listening on %s (tcp+udp), fake range %s, routes %s",
                 self.settings.listen, self.settings.fake_range, ", ".join(self.settings.route_names()))

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        sock.bind(self.settings.listen_address())
        sock.listen(4096)
        sock.setblocking(False)
        self.listener = sock
        self.loop.add_reader(sock.fileno(), self._on_accept)
        if self.settings.fake_range6 is not None:
            # The IPv6 fake range's TPROXY target: the same port on [::].
            sock6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock6.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
            sock6.bind(("::", self.settings.listen_address()[1]))
            sock6.listen(4096)
            sock6.setblocking(False)
            self.listener6 = sock6
            self.loop.add_reader(sock6.fileno(), self._on_accept, sock6)

    def _unlisten(self) -> None:
        if self.listener is not None:
            self.loop.remove_reader(self.listener.fileno())
            self.listener.close()
            self.listener = None
        if self.listener6 is not None:
            self.loop.remove_reader(self.listener6.fileno())
            self.listener6.close()
            self.listener6 = None

    async def stop(self) -> None:
        self._unlisten()
        if self._sweeper:
            self._sweeper.cancel()
        if self.udp:
            self.udp.stop()
        if self.control:
            await self.control.stop()
        for session in list(self.sessions.values()):
            session.abort("relay stopping")
        if self._fastpath_restart is not None:
            # A restart under way would make its tables again after this stop.
            await asyncio.gather(self._fastpath_restart, return_exceptions=True)
        await self.fastpath.stop()
        if self._own_directory:
            self.directory.close()

    def reload(self, settings: RelaySettings) -> None:
        """Take new settings; live connections keep running."""
        old = self.settings
        self.settings = settings
        self.allowed = ClientFilter(settings.allow_clients, settings.deny_clients, settings.fake_range6 is not None)
        self.fake_range = ipaddress.IPv4Network(settings.fake_range)
        self.table.resize_history(settings.history_size)
        if settings.resolvers != old.resolvers:
            self.resolver = Resolver(settings.resolver_addresses())
        if (settings.dns_control, settings.fakeip_db) != (old.dns_control, old.fakeip_db) \
                and self._own_directory:
            # Live connections keep their pins on the old connection until they end.
            log.warning("dns_control/fakeip_db changed; they take effect at the next restart")
        if (settings.listen, settings.fake_range6) != (old.listen, old.fake_range6):
            self._unlisten()
            self._listen()
            self.udp.stop()
            self.udp.start()
        if settings.fast_path != old.fast_path or (
                settings.fast_path.enabled and (settings.allow_clients, settings.deny_clients,
                                                settings.fake_range, settings.fake_range6, settings.direct6)
                != (old.allow_clients, old.deny_clients, old.fake_range, old.fake_range6, old.direct6)):
            self._fastpath_restart = self.loop.create_task(self._restart_fastpath())
        if settings.control_socket != old.control_socket:
            log.warning("control_socket changed; it moves at the next restart")
        log.info("relay settings reloaded: routes %s, max_connections %d",
                 ", ".join(settings.route_names()), settings.max_connections)

    async def _restart_fastpath(self) -> None:
        # The old entries were made under the old rules: start again empty.
        await self.fastpath.stop()
        self.fastpath = FastPath(self)
        await self.fastpath.start()

    # -- accepting ------------------------------------------------------------
    def _on_accept(self, listener: socket.socket | None = None) -> None:
        listener = listener or self.listener
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                sock, client = listener.accept()
                fake6 = None
            except BlockingIOError:
                return
            except OSError as exc:
                # Out of descriptors: leave the rest in the backlog, try again shortly.
                log.error("accept: %s", exc.strerror or exc)
                self.loop.remove_reader(listener.fileno())
                self.loop.call_later(0.2, self._resume_accept, listener)
                return
            client = client[:2]
            sock.setblocking(False)
            if not self.allowed(client[0]):
                self.rejected_sources += 1
                log.warning("refused %s:%d: not a home-side source", *client)
                reset(sock)
                continue
            try:
                fake = sock.getsockname()[:2]
            except OSError:
                sock.close()
                continue
            if listener is self.listener6:
                # Its IPv4 twin names the mapping: directory, pins and table as for IPv4.
                fake6 = fake[0]
                twin = twin4(fake6, self.settings.fake_range, self.settings.fake_range6)
                fake = (twin or "0.0.0.0", fake[1])
            if ipaddress.IPv4Address(fake[0]) not in self.fake_range:
                log.warning("refused %s:%d -> %s:%d: not a fake address", *client, *fake)
                reset(sock)
                continue
            if len(self.sessions) + self.pending >= self.settings.max_connections:
                log.warning("refused %s:%d -> %s:%d: connection cap %d reached",
                            *client, *fake, self.settings.max_connections)
                self.table.totals["refused"] += 1
                reset(sock)
                continue
            self.pending += 1
            self.loop.create_task(self._serve(sock, client, fake, fake6))

    def _resume_accept(self, listener: socket.socket | None = None) -> None:
        listener = listener or self.listener
        if listener is not None and listener in (self.listener, self.listener6):
            self.loop.add_reader(listener.fileno(), self._on_accept, listener)

    async def _serve(self, sock: socket.socket, client: tuple[str, int], fake: tuple[str, int],
                     fake6: str | None = None) -> None:
        try:
            target = await self.directory.lookup(fake[0])
        except Exception:  # noqa: BLE001 - a bug must not kill the relay
            log.exception("look-up of %s failed", fake[0])
            target = None
        finally:
            self.pending -= 1
        if target is None:
            conn = self.table.open("tcp", client, fake, None, "-")
            self._refuse(sock, conn, f"no domain for fake address {fake[0]} (unknown or recycled)")
            return
        conn = self.table.open("tcp", client, fake, target.domain, target.route)
        if target.route == "reject":
            self._refuse(sock, conn, "route reject", level=logging.INFO)
            return
        proxy = None
        if target.route != "direct":
            proxy = self.settings.proxy(target.route)
            if proxy is None:
                self._refuse(sock, conn, f"unknown route {target.route!r} (no such proxy)")
                return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        session = TcpSession(self, conn, sock, fake6)
        self.sessions[conn.id] = session
        self.directory.pin(fake[0])
        await self._connect(session, proxy)

    def _refuse(self, sock: socket.socket, conn: Connection, reason: str,
                level: int = logging.WARNING) -> None:
        log.log(level, "refused %s:%d -> %s (%s:%d): %s", *conn.client, conn.domain or "?",
                *conn.fake, reason)
        reset(sock)
        self.table.close(conn, "refused", reason)

    async def _connect(self, session: TcpSession, proxy) -> None:
        conn = session.conn
        host, port = conn.domain, conn.fake[1]
        try:
            if proxy is None:
                real = await self._resolve_direct(host, session.fake6 is not None)
                conn.real = f"[{real}]:{port}" if ":" in real else f"{real}:{port}"
                upstream = await open_tcp(self.loop, (real, port), self.settings.connect_timeout)
                early = b""
            elif proxy.type == "socks5":
                conn.real = f"proxy {proxy.name} ({proxy.address}:{proxy.port})"
                upstream, early = await open_socks5(self.loop, proxy, host, port), b""
            else:
                conn.real = f"proxy {proxy.name} ({proxy.address}:{proxy.port})"
                upstream, early = await open_http_connect(self.loop, proxy, host, port)
        except (UpstreamError, ResolveError) as exc:
            log.warning("failed %s:%d -> %s:%d via %s: %s", *conn.client, host, port, conn.route, exc)
            session.closed = True
            reset(session.client)
            self._session_closed(session, "failed", str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the relay
            log.exception("failed %s:%d -> %s:%d: internal error", *conn.client, host, port)
            session.closed = True
            reset(session.client)
            self._session_closed(session, "failed", f"internal error: {exc}")
            return
        if session.closed:  # stopped while connecting
            upstream.close()
            return
        if early:
            try:
                await self.loop.sock_sendall(session.client, early)
                session.early = len(early)
            except OSError as exc:
                upstream.close()
                session.abort(f"client side: {exc.strerror or exc}")
                return
        session.start(upstream)
        if proxy is None:
            # Later connections to this name need no relay: let the kernel NAT them
            # (within the family the relay connected over: a real IPv6 address for
            # the fake IPv6 one the client used, a real IPv4 one for the IPv4 twin).
            fake = session.fake6 if ":" in real else conn.fake[0]
            self.loop.create_task(self.fastpath.offer(fake, real, conn.domain, conn.client[0]))

    async def _resolve_direct(self, host: str, client6: bool) -> str:
        """The real address a direct route connects to: IPv6 for an IPv6 client with
        `direct6` when the name has one, else IPv4."""
        if client6 and self.settings.direct6:
            try:
                return await self.resolver.resolve(host, 6)
            except ResolveError:
                pass  # no AAAA: over IPv4, as without direct6
        return await self.resolver.resolve(host)

    def _session_closed(self, session: TcpSession, state: str, error: str | None) -> None:
        if self.sessions.pop(session.conn.id, None) is None:
            return
        self.directory.unpin(session.conn.fake[0])
        self.table.close(session.conn, state, error)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.settings.idle_timeout / 4))
            now = self.loop.time()
            limit = self.settings.idle_timeout
            for session in list(self.sessions.values()):
                if session.conn.state == "open" and now - session.last > limit:
                    log.info("idle %s:%d -> %s:%d: closed after %gs without a byte",
                             *session.conn.client, session.conn.domain, session.conn.fake[1], limit)
                    session.abort(f"idle for {limit:g}s")
            if self.udp:
                self.udp.sweep()

    # -- the console's interface ---------------------------------------------
    def connections(self) -> list[dict]:
        """Live connections: client, domain, fake IP, real address, route, bytes, age."""
        return self.table.live()

    def history(self, limit: int | None = None) -> list[dict]:
        """Ended connections, oldest first (bounded by `history_size`)."""
        return self.table.history(limit)

    def counters(self) -> dict:
        """Bytes up/down and connections per domain and per client, and totals."""
        return self.table.counters()

    def stats(self) -> dict:
        return {"pid": os.getpid(), "uptime": round(time.time() - self.started, 1),
                "listen": self.settings.listen, "live_tcp": len(self.sessions),
                "live_udp": len(self.udp.sessions) if self.udp else 0,
                "max_connections": self.settings.max_connections,
                "refused_sources": self.rejected_sources, "totals": dict(self.table.totals),
                "fast_path": self.fastpath.stats(),
                "routes": self.settings.route_names()}
