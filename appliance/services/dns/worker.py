"""A worker process of the DNS service: more UDP answers, on another CPU.

Started by the main process (`workers.py`), never by hand. It binds the
same UDP addresses with SO_REUSEPORT (the main process's socket steers each
query by its name, `steer.py`), decides by the same policy (settings and
parsed lists sent by the main process, with every change) and answers the
names that hash to it from its own cache and upstream sockets. What must stay one is the main
process's: a query that needs the fake-IP pool is handed to it with the
client's address (it decides and renders the answer, which comes back to
be sent from here: `workers.py` says why), and the query log and the
counters go to it in batches every `FLUSH_EVERY` seconds. It reads the DHCP
leases for local names itself, from the same file. It exits when its
control stream ends (the main process is gone), on `stop`, or on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import marshal
import os
import signal
import socket
import sys
import time
from collections import Counter

import uvloop

from . import collector
from .localnames import LocalNames, kea_lease_file
from .neighbours import NeighbourTable
from .paused import OFF_EVERY, OffDevices
from .rebind import PREFIXES_EVERY, read_ra_prefixes
from .policy import Policy
from .resolver import Resolver
from .server import AccessList, UdpListener, build_upstreams, rate_limiter, udp_socket
from .settings import DnsSettings
from .workers import in_batches, read_message, waiting, write_message

log = logging.getLogger("appliance.services.dns.worker")

FLUSH_EVERY = 0.05  # seconds between batches of log entries to the main process
BATCH = 512  # entries a batch holds at most (a datagram stays well under the socket buffer)
HANDOFF_BATCH = 256  # handed-off queries in one datagram


class LogBatch:
    """The query log in a worker: entries wait in `pending` for the next batch."""

    def __init__(self) -> None:
        self.pending: list[tuple] = []
        self.dropped: Counter[str] = Counter()

    def add(self, client: str, qname: str, qtype: int, action: str, rcode: int,
            cached: bool = False, origin: str = "", now: float | None = None) -> None:
        self.pending.append((time.time() if now is None else now, client, qname, qtype, action,
                             rcode, cached, origin))


class DnsWorker:
    def __init__(self, start: dict, datagrams: socket.socket):
        self.wid = start["wid"]
        self.bound = start["bound"]
        self.processes = start["processes"]
        self.datagrams = datagrams
        self.querylog = LogBatch()
        self.listeners: list[UdpListener] = []
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._handoffs: list = []  # (listener index, client address, query) for the main process
        settings = start["settings"]
        self.settings = settings
        self.neighbours = NeighbourTable()
        self.localnames = self._local_names(settings)
        self.resolver = Resolver(settings, Policy(settings, start["lists"]), build_upstreams(settings),
                                 None, self.localnames, self.querylog, handoff=self.handoff,
                                 neighbour_mac=self.neighbours.mac_of)
        self.refresh_lan_prefixes()
        self.off_devices = OffDevices(settings.paused_files)
        self.refresh_off_devices()
        self.access = AccessList(settings.allow_clients, settings.deny_clients)
        self.limiter = rate_limiter(settings, self.processes)
        if start.get("kernel_fds"):
            from .kernel_cache import Writer

            # Inherited from the main process: this worker's answers go into the same maps.
            # A worker makes no fake addresses (the main process does): its own answers (local
            # names, rewrites) go through the one writer.
            self.resolver.kernel = self.resolver.kernel_fixed = Writer(*start["kernel_fds"], self.wid)

    def _local_names(self, settings: DnsSettings) -> LocalNames:
        ln = settings.local_names
        sources = [kea_lease_file(ln.leases_file)] if ln.leases_file else []
        return LocalNames(ln.domain, sources, [(h.hostname, h.ip, h.mac) for h in ln.static],
                          self.neighbours.ipv6)

    def admit(self, client: str) -> bool:
        if not self.access.allowed(client):
            self.querylog.dropped["not allowed"] += 1
            return False
        if not self.limiter.allow(client):
            self.querylog.dropped["rate limited"] += 1
            return False
        return True

    def start(self) -> None:
        for index, (host, port) in enumerate(self.bound):
            self.listeners.append(UdpListener(self, udp_socket(host, port, shared=True), index))
        asyncio.get_running_loop().add_reader(self.datagrams.fileno(), self._answers)
        self._every(FLUSH_EVERY, self.flush)
        self._every(self.settings.local_names.refresh, self.refresh_local_names)
        self._every(PREFIXES_EVERY, self.refresh_lan_prefixes)
        self._every(OFF_EVERY, self.refresh_off_devices)

    def _every(self, seconds: float, action) -> None:
        loop = asyncio.get_running_loop()

        def tick():
            try:
                action()
            except Exception:
                log.exception("periodic %s failed", action.__name__)
            self._timers[action.__name__] = loop.call_later(seconds, tick)

        self._timers[action.__name__] = loop.call_later(seconds, tick)

    def handoff(self, data: bytes, addr, out) -> None:
        # Gathered for one event-loop turn: the main process reads a batch a call.
        if not self._handoffs:
            asyncio.get_running_loop().call_soon(self._send_handoffs)
        self._handoffs.append((out.index, addr, data))

    def _send_handoffs(self) -> None:
        queries, self._handoffs = self._handoffs, []
        for batch in in_batches(queries, HANDOFF_BATCH):
            try:
                self.datagrams.send(marshal.dumps(("q", batch)))
            except (BlockingIOError, InterruptedError):
                self.querylog.dropped["main process busy"] += len(batch)
            except OSError:
                return  # the main process is gone; this worker ends with its stream

    def _answers(self) -> None:
        """The main process's answers to handed-off queries: sent from here (workers.py says why)."""
        listeners = self.listeners
        for data in waiting(self.datagrams, 64):
            try:
                message = marshal.loads(data)
                if message[0] == "a":
                    for index, addr, wire in message[1]:
                        listeners[index].send(wire, addr)
            except (ValueError, EOFError, TypeError, IndexError):
                log.exception("bad message from the main process")

    def flush(self) -> None:
        log_batch = self.querylog
        resolver = self.resolver
        counters = {"wid": self.wid, "pid": os.getpid(), "fast": resolver.fast_hits,
                    "slow": resolver.slow_answers, "cache": len(resolver.cache),
                    "dropped": dict(log_batch.dropped),
                    "kernel_fills": resolver.kernel.fills if resolver.kernel is not None else 0}
        pending = log_batch.pending
        entries = pending[:]
        pending.clear()  # the same list: the resolver keeps its `append` bound
        while True:
            batch, rest = entries[:BATCH], entries[BATCH:]
            try:
                self.datagrams.send(marshal.dumps(("log", batch, counters)))
            except (BlockingIOError, InterruptedError):
                if len(entries) > 50 * BATCH:  # the main process is far behind: keep the newest
                    log_batch.dropped["log entries lost"] += len(entries) - 50 * BATCH
                    entries = entries[-50 * BATCH:]
                break
            except OSError:
                entries = []
                break
            entries = rest
            if not entries:
                break
        pending[:0] = entries  # not sent: first in the next batch

    def refresh_local_names(self) -> None:
        before = self.localnames.table()
        self.localnames.refresh()
        if self.localnames.table() != before:
            self.resolver.forget_fast_answers()

    def refresh_lan_prefixes(self) -> None:
        path = self.settings.rebind.prefixes_file
        self.resolver.set_lan_prefixes(read_ra_prefixes(path) if path else ())

    def refresh_off_devices(self) -> None:
        if self.off_devices.refresh():
            # Off devices are found by MAC: the leases as they are now (a lease taken since the
            # last read, by a device the kernel cache answered so far, is in no neighbour table).
            self.refresh_local_names()
            self.resolver.set_off_devices(self.off_devices.macs)

    def use_policy(self, settings: DnsSettings, lists: dict) -> None:
        old = self.settings
        policy = Policy(settings, lists)
        self.settings = settings
        resolver = self.resolver
        if settings.upstreams != old.upstreams or settings.edns_udp_size != old.edns_udp_size:
            resolver.upstreams.close()
            resolver.upstreams = build_upstreams(settings)
            resolver.cache.clear()
        self.localnames = self._local_names(settings)
        resolver.local_names = self.localnames
        self.access = AccessList(settings.allow_clients, settings.deny_clients)
        self.limiter = rate_limiter(settings, self.processes)
        resolver.swap_policy(policy, settings)
        if settings.kernel_cache != "on":
            resolver.kernel = None  # the main process has taken the program away
        self.refresh_lan_prefixes()
        if settings.paused_files != self.off_devices.paths:
            self.off_devices = OffDevices(settings.paused_files)
            self.off_devices.refresh()
            self.resolver.set_off_devices(self.off_devices.macs)
        self.refresh_off_devices()

    def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        for listener in self.listeners:
            listener.close()
        self.flush()
        self.resolver.upstreams.close()


async def run(control_fd: int, datagrams_fd: int) -> int:
    control = socket.socket(fileno=control_fd)
    datagrams = socket.socket(fileno=datagrams_fd)
    datagrams.setblocking(False)
    reader, writer = await asyncio.open_unix_connection(sock=control)
    message = await read_message(reader)
    if message is None or message[0] != "start":
        return 1
    worker = DnsWorker(message[1], datagrams)
    worker.start()
    full_passes = collector.start()  # the collector on a clock (collector.py)
    write_message(writer, ("ready", os.getpid()))
    await writer.drain()
    loop = asyncio.get_running_loop()
    stopped = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stopped.done() or stopped.set_result(None))
    next_message = loop.create_task(read_message(reader))
    while True:
        await asyncio.wait({next_message, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if stopped.done():
            next_message.cancel()
            break
        message = next_message.result()
        if message is None or message[0] == "stop":
            break
        if message[0] == "policy":
            try:
                worker.use_policy(message[1], message[2])
            except Exception:  # the main process checked it: keep answering by the old one
                log.exception("worker %d could not use the new policy", worker.wid)
        next_message = loop.create_task(read_message(reader))
    full_passes.cancel()
    worker.stop()
    writer.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.services.dns.worker")
    parser.add_argument("--control", type=int, required=True)
    parser.add_argument("--datagrams", type=int, required=True)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads come from the main process
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run(args.control, args.datagrams))


if __name__ == "__main__":
    sys.exit(main())
