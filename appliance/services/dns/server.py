"""The DNS service: sockets (UDP and TCP), access control, rate limit, reload.

`DnsService` builds everything from `DnsSettings`, listens, and is the
Python interface the console and the relay use (directly in-process, or
through `control.DnsControl` over the Unix control socket):
`stats()`, `query_log(...)`, `fake_ip_table()`, `flush_fake_ips()`,
`lists()`, `upstreams()`, `local_names()`, `lookup_fake_ip(ip)`, `pin(ip)`,
`unpin(ip)`, `reload(...)`.

It is the main process of the service. With `workers` above one it starts
worker processes (`worker.py`) that answer UDP queries beside it on the same
address (SO_REUSEPORT), each query going to the process its name hashes to
(`steer.py`): a name's cache entry and its upstream query live in one
process, so the caches behave as one. What else must stay one lives here:
the fake-IP pool (workers hand it the queries that need an address), the
query log and the statistics (workers send their entries in batches), the
lists (fetched here, sent to the workers with every policy change), TCP,
the control socket. Each process holds its share of the per-client rate
limit (`rate / processes`): a client's names spread over the processes.

Only clients inside `allow_clients` and outside `deny_clients` get an answer;
the others get nothing (no REFUSED: nothing to reflect or amplify).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import sqlite3
import struct
import time
from typing import Callable, Iterable

from .fakeip import WRITE_EVERY, FakeIpPool
from .lists import ListStore, read_lists
from .localnames import LeaseSource, LocalNames, kea_lease_file
from .policy import Policy
from .querydisk import DiskLog
from .querylog import QueryLog
from .series import FLUSH_EVERY as SERIES_FLUSH_EVERY, DnsSeries
from .ratelimit import RateLimiter
from .neighbours import NeighbourTable
from .paused import OFF_EVERY, OffDevices
from .rebind import PREFIXES_EVERY, read_ra_prefixes
from .resolver import Resolver
from . import steer
from .settings import DnsSettings
from .upstream import Upstream, UpstreamSet

log = logging.getLogger(__name__)


class AccessList:
    def __init__(self, allow: Iterable[str], deny: Iterable[str]):
        self.allow = [ipaddress.ip_network(n) for n in allow]
        self.deny = [ipaddress.ip_network(n) for n in deny]
        self._known: dict[str, bool] = {}

    def allowed(self, ip: str) -> bool:
        verdict = self._known.get(ip)
        if verdict is None:
            address = ipaddress.ip_address(ip)
            if address.version == 6 and address.ipv4_mapped:
                address = address.ipv4_mapped
            verdict = any(address in n for n in self.allow if n.version == address.version) and \
                not any(address in n for n in self.deny if n.version == address.version)
            if len(self._known) > 10000:
                self._known = {}
            self._known[ip] = verdict
        return verdict


def _kernel_cache_setting(settings: DnsSettings) -> tuple:
    return (settings.kernel_cache, settings.kernel_cache_device, tuple(settings.kernel_cache_answer_as),
            settings.fake_ip.network)


def build_upstreams(settings: DnsSettings) -> UpstreamSet:
    return UpstreamSet([
        Upstream(u.url, u.address, u.server_name, u.ca_file, u.timeout, u.name)
        for u in settings.upstreams
    ], payload=settings.edns_udp_size)


def process_count(settings: DnsSettings) -> int:
    """Processes answering UDP: `workers`, or one per CPU this process may use (at most 4)."""
    if settings.workers is not None:
        return settings.workers
    return steer.default_processes()


def rate_limiter(settings: DnsSettings, processes: int) -> RateLimiter:
    # A client's queries spread over the processes (by source port): each
    # holds its share of the client's rate and burst.
    r = settings.rate_limit
    return RateLimiter(r.per_client_qps / processes, max(1, r.burst // processes))


def udp_socket(host: str, port: int, shared: bool, steer_over: int = 0) -> socket.socket:
    """A listening UDP socket; `shared`: in a SO_REUSEPORT group, which the first
    socket steers by name over `steer_over` sockets (`steer.py`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if steer_over > 1:
        try:
            steer.attach(sock, steer_over)
        except OSError as exc:
            log.warning("queries not steered by name (%s): each process caches on its own", exc)
    # Bursts of queries must queue in the kernel, not be dropped.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


class UdpListener:
    """A UDP socket read in batches; the `out` the resolver answers through.

    asyncio's datagram transport reads one packet per event-loop turn; at
    tens of thousands of queries a second the epoll call per packet costs
    more than answering. Here one readiness event drains up to BATCH packets,
    and each goes to the resolver at once (no task per query).
    """

    BATCH = 64

    def __init__(self, service, sock: socket.socket, index: int):
        self.service = service
        self.sock = sock
        self.index = index  # which listen address: a handed-off query is answered from the same one
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        service = self.service
        admit = service.admit
        handle = service.resolver.handle
        recvfrom = self.sock.recvfrom
        for _ in range(self.BATCH):
            try:
                data, addr = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # ICMP errors for earlier answers surface here: nothing to do
            client = addr[0]
            if not admit(client):
                continue
            try:
                handle(data, client, addr, self)
            except Exception:  # a bug must cost one answer, never the server
                log.exception("query from %s failed", client)

    def send(self, wire: bytes | None, addr) -> None:
        if wire is None or self.sock.fileno() < 0:
            return
        try:
            self.sock.sendto(wire, addr)
        except (BlockingIOError, InterruptedError):
            self.service.querylog.dropped["send buffer full"] += 1
        except OSError:
            pass

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()

    def get_extra_info(self, name: str):
        return self.sock.getsockname() if name == "sockname" else None


class DnsService:
    def __init__(self, settings: DnsSettings, lease_sources: list[LeaseSource] | None = None,
                 neighbours: NeighbourTable | None = None):
        self.settings = settings
        self.neighbours = neighbours or NeighbourTable()
        self.started = time.time()
        self.lists_store = ListStore(settings.lists_dir)
        errors = read_lists(self.lists_store, settings.lists)
        for error in errors:
            log.error("list not loaded: %s", error)
        self.policy = Policy(settings, self.lists_store.parsed)
        fake = settings.fake_ip
        self.fakeips = FakeIpPool(fake.network, fake.db_path, fake.max_entries)
        self._lease_sources = list(lease_sources or [])
        self.localnames = self._build_local_names(settings)
        q = settings.query_log
        self.querylog = QueryLog(q.max_entries, q.max_age, mac_of=self._mac_of)
        self.disklog = self._disk_log(settings)
        self.series = self._series(settings)
        self.resolver = Resolver(settings, self.policy, build_upstreams(settings), self.fakeips,
                                 self.localnames, self.querylog, neighbour_mac=self.neighbours.mac_of)
        self.refresh_lan_prefixes()
        self.off_devices = OffDevices(settings.paused_files)
        self.refresh_off_devices()
        self.processes = process_count(settings)
        self.access = AccessList(settings.allow_clients, settings.deny_clients)
        self.limiter = rate_limiter(settings, self.processes)
        self.workers = None  # a Workers once started with more than one process
        self.tasks: set[asyncio.Task] = set()
        self._tcp_open: dict[str, int] = {}  # client -> its open TCP connections
        self._tcp_total = 0
        self._servers: list = []
        self._transports: list[UdpListener] = []
        self._periodic: list[asyncio.Task] = []
        self._list_refresh: list[asyncio.Task] = []
        self.last_reload_error: str | None = None
        self.reloads = 0
        self.kernel_cache = None  # a started kernel_cache.KernelCache
        self.kernel_cache_status = "off"

    def _build_local_names(self, settings: DnsSettings) -> LocalNames:
        ln = settings.local_names
        sources = list(self._lease_sources)
        if ln.leases_file:
            sources.append(kea_lease_file(ln.leases_file))
        return LocalNames(ln.domain, sources, [(h.hostname, h.ip, h.mac) for h in ln.static],
                          self.neighbours.ipv6)

    def _mac_of(self, client: str) -> str | None:
        ip = client.split("%")[0]
        return self.neighbours.mac_of(client) or self.localnames.mac_of(ip)

    def _group_of(self, client: str) -> str | None:
        """The client's group's name for the charts; None while there are no groups."""
        policy = self.resolver.policy
        index = self.resolver.client_group(client)
        # Two groups are always there (default, paused): a name only when the user made groups.
        return policy.groups[index].name if len(policy.groups) > 2 or index == policy.paused else None

    def _disk_log(self, settings: DnsSettings) -> DiskLog | None:
        q = settings.query_log
        if not q.dir or not q.max_mb:
            return None
        try:
            disk = DiskLog(q.dir, q.max_mb * 1024 * 1024, q.max_days * 86400)
        except OSError as exc:
            log.error("no query log on disk in %s: %s", q.dir, exc)
            return None
        self.querylog.sinks.append(disk.write)
        return disk

    def _series(self, settings: DnsSettings) -> DnsSeries | None:
        if not settings.series_file:
            return None
        try:
            series = DnsSeries(settings.series_file, self._group_of)
        except (OSError, sqlite3.Error) as exc:
            log.error("no per-minute counts in %s: %s", settings.series_file, exc)
            return None
        self.querylog.sinks.append(series.count)
        return series

    def admit(self, client: str) -> bool:
        if not self.access.allowed(client):
            self.querylog.dropped["not allowed"] += 1
            return False
        if not self.limiter.allow(client):
            self.querylog.dropped["rate limited"] += 1
            return False
        return True

    # -- sockets --------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        shared = self.processes > 1
        bound = []
        for index, (host, port) in enumerate(self.settings.listen_addresses()):
            sock = udp_socket(host, port, shared, self.processes if shared else 0)
            port = sock.getsockname()[1]  # port 0: the workers must join the same one
            bound.append((host, port))
            self._transports.append(UdpListener(self, sock, index))
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            server = await asyncio.start_server(self._tcp_client, host, port, reuse_address=True,
                                                family=family)
            self._servers.append(server)
            log.info("listening on %s port %d (udp, tcp)", host, port)
        # Write-behind of the fake-IP store: new mappings reach SQLite in batches,
        # off the event loop (fakeip.py); stop() writes the rest.
        self._periodic.append(loop.create_task(self._every(WRITE_EVERY, self.fakeips.write_behind)))
        self._periodic.append(loop.create_task(
            self._every(self.settings.local_names.refresh, self.refresh_local_names)))
        self._periodic.append(loop.create_task(self._every(PREFIXES_EVERY, self.refresh_lan_prefixes)))
        self._periodic.append(loop.create_task(self._every(OFF_EVERY, self.refresh_off_devices)))
        self._periodic.append(loop.create_task(self._every(QueryLog.SETTLE_EVERY, self.querylog.settle)))
        if self.series is not None:
            self._periodic.append(loop.create_task(self._every(SERIES_FLUSH_EVERY, self.series.flush)))
        self._refresh_lists(self.settings)
        self._start_kernel_cache()
        if shared:
            from .workers import Workers

            self.workers = Workers(self, bound)
            await self.workers.start(self.processes - 1)

    def _start_kernel_cache(self) -> None:
        s = self.settings
        if s.kernel_cache != "on" or not s.kernel_cache_device:
            self.kernel_cache_status = "off" if s.kernel_cache != "on" else "off: no device"
            return
        from appliance.switch.datapath.build import scratch_dir

        from .kernel_cache import FIXED_WRITER, KernelCache, Unavailable

        cache = KernelCache(s.kernel_cache_device, s.kernel_cache_answer_as, s.fake_ip.network,
                            scratch_dir("appliance-dns-kc-"),
                            fake_network6=s.fake_ip.network6)
        try:
            cache.start()
        except Unavailable as exc:
            self.kernel_cache_status = f"unavailable, the server answers everything: {exc}"
            log.warning("kernel cache %s", self.kernel_cache_status)
            return
        finally:
            import shutil

            shutil.rmtree(cache.build_dir, ignore_errors=True)
        self.kernel_cache = cache
        self.kernel_cache_status = f"on ({cache.attach_mode} on {s.kernel_cache_device})"
        self.resolver.kernel = cache.writer(0)
        self.resolver.kernel_fixed = cache.writer(FIXED_WRITER)

    def kernel_fds(self) -> tuple[int, ...]:
        """The maps a worker writes its answers into (none while the kernel cache is off)."""
        return self.kernel_cache.fds() if self.kernel_cache is not None else ()

    def bound_ports(self) -> list[int]:
        return [t.get_extra_info("sockname")[1] for t in self._transports]

    def handoff(self, out, data: bytes, addr) -> None:
        """A worker's query that needs the fake-IP pool: decide it here, answer through `out`."""
        try:
            self.resolver.handle(data, addr[0], addr, out)
        except Exception:
            log.exception("handed-off query from %s failed", addr[0])

    def send_from(self, index: int, wire: bytes, addr) -> None:
        """Send from listen address `index` (a handed-off query's answer its worker cannot send)."""
        if index < len(self._transports):
            self._transports[index].send(wire, addr)

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = peer[0] if peer else ""
        if not self.access.allowed(client):
            self.querylog.dropped["not allowed"] += 1
            writer.close()
            return
        held = self._tcp_open.get(client, 0)
        if held >= self.settings.tcp_max_per_client or self._tcp_total >= self.settings.tcp_max_clients:
            # Closed at once: a client holding connections open must not use up the descriptors.
            self.querylog.dropped["TCP connections at their limit"] += 1
            writer.close()
            return
        self._tcp_open[client] = held + 1
        self._tcp_total += 1
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readexactly(2),
                                                  self.settings.tcp_idle_timeout)
                    length = struct.unpack(">H", head)[0]
                    data = await asyncio.wait_for(reader.readexactly(length),
                                                  self.settings.tcp_idle_timeout)
                except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                    return
                if not self.limiter.allow(client):
                    self.querylog.dropped["rate limited"] += 1
                    return
                try:
                    wire = await self.resolver.answer(data, client, udp=False)
                except Exception:
                    log.exception("TCP query from %s failed", client)
                    return
                if wire is None:
                    return
                writer.write(struct.pack(">H", len(wire)) + wire)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            self._tcp_total -= 1
            left = self._tcp_open[client] - 1
            if left:
                self._tcp_open[client] = left
            else:
                del self._tcp_open[client]

    async def _every(self, seconds: float, action: Callable[[], object]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                action()
            except Exception:
                log.exception("periodic %s failed", getattr(action, "__name__", action))

    def _refresh_lists(self, settings: DnsSettings) -> None:
        loop = asyncio.get_running_loop()
        for task in self._list_refresh:
            task.cancel()
        self._list_refresh = [loop.create_task(self._refresh_list(item.name, item.refresh))
                              for item in settings.lists if item.enabled and item.refresh > 0]

    async def _refresh_list(self, name: str, seconds: int) -> None:
        while True:
            await asyncio.sleep(seconds)
            item = next((i for i in self.settings.lists if i.name == name), None)
            if item is None:
                return
            changed = await asyncio.to_thread(self.lists_store.load, item)
            if changed:
                self.resolver.swap_policy(Policy(self.settings, self.lists_store.parsed))
                self.policy = self.resolver.policy
                if self.workers is not None:
                    await self.workers.send_policy(self.settings, self.lists_store.parsed)
            else:
                log.warning("list %s kept its previous version: %s", name,
                            self.lists_store.status[name].error)

    def refresh_local_names(self) -> None:
        before = self.localnames.table()
        self.localnames.refresh()
        if self.localnames.table() != before:
            self.resolver.forget_fast_answers()

    def refresh_lan_prefixes(self) -> None:
        path = self.settings.rebind.prefixes_file
        if self.resolver.set_lan_prefixes(read_ra_prefixes(path) if path else ()):
            log.info("rebinding networks: the home's IPv6 prefixes are now %s",
                     ", ".join(self.resolver.lan_prefixes) or "none")

    def refresh_off_devices(self) -> None:
        if self.off_devices.refresh():
            # Off devices are found by MAC: the leases as they are now (a lease taken since the
            # last read, by a device the kernel cache answered so far, is in no neighbour table).
            self.refresh_local_names()
            self.resolver.set_off_devices(self.off_devices.macs)
            log.info("devices off (every name blocked): %s", ", ".join(sorted(self.off_devices.macs)) or "none")

    async def stop(self) -> None:
        if self.workers is not None:
            await self.workers.stop()
        for task in self._periodic + self._list_refresh:
            task.cancel()
        for transport in self._transports:
            transport.close()
        for server in self._servers:
            server.close()
            await server.wait_closed()
        for task in list(self.tasks):
            task.cancel()
        self.resolver.upstreams.close()
        self.fakeips.close()
        self.querylog.settle()  # the last second's entries, to disk and the series
        if self.series is not None:
            self.series.close()
        if self.disklog is not None:
            self.disklog.close()
        self._stop_kernel_cache()

    def _stop_kernel_cache(self) -> None:
        if self.kernel_cache is not None:
            self.resolver.kernel = self.resolver.kernel_fixed = None
            self.kernel_cache.close()
            self.kernel_cache = None
        self.kernel_cache_status = "off"

    # -- reload ---------------------------------------------------------------
    async def reload(self, settings: DnsSettings) -> list[str]:
        """Swap in new settings. Returns the errors; on errors the old policy stays.

        Listen addresses, the number of workers, the fake-IP pool and the
        control socket need a restart.
        """
        store = self.lists_store
        store.lists_dir = settings.lists_dir
        errors = await asyncio.to_thread(read_lists, store, settings.lists, True)
        if errors:
            self.last_reload_error = "; ".join(errors)
            return errors
        store.forget_except({i.name for i in settings.lists})
        try:
            policy = Policy(settings, store.parsed)
        except (ValueError, KeyError) as exc:
            self.last_reload_error = str(exc)
            return [str(exc)]
        old = self.settings
        self.settings = settings
        self.policy = policy
        if settings.upstreams != old.upstreams or settings.edns_udp_size != old.edns_udp_size:
            self.resolver.upstreams.close()
            self.resolver.upstreams = build_upstreams(settings)
            self.resolver.cache.clear()
        self.localnames = self._build_local_names(settings)
        self.resolver.local_names = self.localnames
        self.access = AccessList(settings.allow_clients, settings.deny_clients)
        self.limiter = rate_limiter(settings, self.processes)
        self.querylog.max_entries = settings.query_log.max_entries
        self.querylog.max_age = settings.query_log.max_age
        if settings.query_log != old.query_log:
            if self.disklog is not None:
                self.querylog.sinks.remove(self.disklog.write)
                self.disklog.close()
            self.disklog = self._disk_log(settings)
        self.resolver.swap_policy(policy, settings)
        if _kernel_cache_setting(settings) != _kernel_cache_setting(old):
            # Workers keep writing into the maps they were started with until they restart; the
            # new program's maps are filled by this process alone meanwhile.
            self._stop_kernel_cache()
            self._start_kernel_cache()
        self.refresh_lan_prefixes()
        if settings.paused_files != self.off_devices.paths:
            self.off_devices = OffDevices(settings.paused_files)
            self.off_devices.refresh()
            self.resolver.set_off_devices(self.off_devices.macs)
        self.refresh_off_devices()
        self.reloads += 1
        self.last_reload_error = None
        self._refresh_lists(settings)
        if self.workers is not None:
            await self.workers.send_policy(settings, store.parsed)
        return []

    # -- the interface for the console and the relay ---------------------------
    def stats(self, top: int = 10) -> dict:
        out = self.querylog.stats(top)
        fast, slow, cached = self.resolver.fast_hits, self.resolver.slow_answers, len(self.resolver.cache)
        workers = []
        if self.workers is not None:
            for counters in self.workers.counters():
                fast += counters.get("fast", 0)
                slow += counters.get("slow", 0)
                cached += counters.get("cache", 0)
                for reason, count in counters.get("dropped", {}).items():
                    out["not_answered"][reason] = out["not_answered"].get(reason, 0) + count
                workers.append(counters)
        out.update({
            "uptime": time.time() - self.started,
            "processes": self.processes,
            "workers": workers,
            "cache_entries": cached,
            "fast_path_answers": fast,
            "slow_path_answers": slow,
            "fake_ip_entries": len(self.fakeips),
            "fake_ip_capacity": self.fakeips.capacity,
            "fake_ip_recycled": self.fakeips.recycled,
            "fake_ip_flushed": self.fakeips.flushed,
            "fake_ip_unsaved": self.fakeips.unsaved(),
            "fake_ip_store_error": self.fakeips.last_write_error,
            "reloads": self.reloads,
            "relay_up": self.resolver.fake_ips_on,
            "rebind_lan_prefixes": list(self.resolver.lan_prefixes),  # from the modem's RA
            "last_reload_error": self.last_reload_error,
            "query_log_disk": None if self.disklog is None else {
                "bytes": self.disklog.size(), "unwritten": self.disklog.unwritten,
                "error": self.disklog.last_error},
            "series_error": None if self.series is None else self.series.last_error,
            "kernel_cache": self.kernel_cache_stats(top),
        })
        return out

    def kernel_cache_stats(self, top: int = 10) -> dict:
        """The kernel's answers, aggregated (the query log has no line for each)."""
        out: dict = {"status": self.kernel_cache_status}
        cache = self.kernel_cache
        if cache is None:
            return out
        try:
            out.update(cache.stats())
            clients = cache.client_hits()
            names = cache.name_hits()
        except OSError as exc:
            out["error"] = str(exc)
            return out
        out["top_clients"] = sorted(clients.items(), key=lambda kv: -kv[1])[:top]
        out["top_names"] = [{"name": name, "qtype": qtype, "hits": n} for (name, qtype), n in
                            sorted(names.items(), key=lambda kv: -kv[1])[:top]]
        fills = sum(w.fills for w in (self.resolver.kernel, self.resolver.kernel_fixed) if w is not None)
        if self.workers is not None:
            fills += sum(c.get("kernel_fills", 0) for c in self.workers.counters())
        out["fills"] = fills
        return out

    def query_log(self, client: str | None = None, domain: str | None = None,
                  action: str | None = None, since: float | None = None, limit: int = 100,
                  mac: str | None = None) -> list[dict]:
        return self.querylog.search(client, domain, action, since, limit, mac)

    def query_log_oldest(self) -> float | None:
        """Where the log in memory begins: older entries are in the log on disk only."""
        return self.querylog.oldest()

    def fake_ip_table(self, limit: int | None = 1000) -> list[dict]:
        return self.fakeips.table(limit)

    def flush_fake_ips(self) -> dict:
        """Forget every fake-IP mapping no live connection pins (`FakeIpPool.forget_unpinned`)."""
        result = self.fakeips.forget_unpinned()
        self.resolver.forget_kernel_answers()
        log.info("fake IPs flushed: %(removed)d mappings forgotten, %(kept)d pinned ones kept", result)
        return result

    def lookup_fake_ip(self, ip: str) -> dict | None:
        entry = self.fakeips.lookup_ip(ip)
        if entry is None:
            return None
        return {"ip": entry.ip, "domain": entry.domain, "route": entry.route,
                "pins": self.fakeips.pins(ip)}

    def relay(self, up: bool) -> dict:
        """The box's watchdog says whether the relay answers: fake addresses only while it does."""
        changed = self.resolver.set_relay_up(bool(up))
        if changed:
            log.warning("relay %s: %s", "up" if up else "down",
                        "fake addresses again" if up else "answering real addresses for fake-IP names")
        return {"up": self.resolver.fake_ips_on, "changed": changed}

    def pin(self, ip: str) -> bool:
        return self.fakeips.pin(ip)

    def unpin(self, ip: str) -> None:
        self.fakeips.unpin(ip)

    def lists(self) -> list[dict]:
        return self.lists_store.counts()

    def upstreams(self) -> list[dict]:
        return self.resolver.upstreams.health()

    def local_names(self) -> list[dict]:
        return self.localnames.table()
