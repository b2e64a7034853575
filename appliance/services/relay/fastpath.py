"""The kernel fast path for `direct` routes.

Relaying a TCP connection costs the kernel a second TCP pass per byte: on
a 2-core box a relayed byte costs 1.3-1.8x the CPU of a routed one, and
a new connection 4x (`bench/relay.py`). A `direct` route needs nothing from user space once
the real address is known, so after the relay has resolved a fake address
for a direct route it maps fake -> real in the nft map of its own table
(`nft.fast_path_table`). Later TCP connections from served clients on the
home side to that fake address are DNATed to the real address (same port)
and masqueraded to vproxy's own address; they never reach the relay. The
first connection to a name is always relayed, and so is every connection of
a proxied route, every UDP flow and every connection once the entry's
`ttl` has run out (the next one resolves the name again, so a changed
real address is picked up).

While an entry exists its fake address is pinned in the DNS server, which
therefore cannot give the address to another domain while the kernel
still sends it to the old one. A relay that dies loses its pins with its
control connection; its successor starts by recreating the table empty.

The connection table shows the kernel's connections too (``path:
"kernel"``): conntrack entries carrying `nft.FAST_PATH_CT_MARK`, read
every `poll` seconds. Only open connections carry that mark (a FIN or RST
changes it), so a read costs what the open connections cost, not what a
minute of TIME_WAIT would. When a connection is no longer open its entry
is read once more for its final bytes. Bytes are conntrack's accounting
(IP bytes, headers included). A connection that opens and ends between
two reads has no row in the table or the history (with the default 2 s:
short HTTP exchanges); the per-domain and per-client counters still count
it, from the kernel's own counters per (client, fake address) in the
relay's table (`nft.COUNTER_SETS`), read at the same time.

An IPv6 client relayed over IPv4 (the box: vproxy has no IPv6 address the
modem routes) takes the IPv4 fast path through a translator at tc of the
home-side interface (`nat64.py`, `RelaySettings.translates6`): an offer from
such a client hands it a shadow IPv4 address and maps the fake IPv4 address
in the translator as well as in nft; the kernel's rows and counters name
the IPv6 client and the fake IPv6 address it used, not their stand-ins.
Where the translator cannot be built or loaded, IPv6 clients stay relayed.

IPv6 is also the same design in a table of family ip6 of the same name
(`nft.families`), when the relay connects IPv6 clients over IPv6
(`direct6`): a fake IPv6 address is offered with the real IPv6 address the
relay reached, and is masqueraded to vproxy's own IPv6 address. The DNS
server knows a fake IPv6 address by its IPv4 twin (one pool), so pins and
domain names go by the twin; the kernel's rows show the address the client
used.

Conntrack, nftables and the sysctls are reached through `appliance.kernel`
(`Conntrack`, `Nftables`, `Kernel`), Linux unless `FastPath` is given others.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass

from appliance.kernel.base import Kernel, KernelError
from appliance.kernel.conntrack import TCP, TCP_CLOSE, TCP_TIME_WAIT, Conntrack, LinuxConntrack
from appliance.kernel.linux import LinuxKernel
from appliance.kernel.nftables import LinuxNftables, Nftables
from appliance.services.dns.fakeip import twin4, twin6

from . import nft
from .table import Connection

log = logging.getLogger("appliance.relay")

TCP_CLOSED = {TCP_TIME_WAIT, TCP_CLOSE}
CLOSING_WAIT = 16.0  # s: how long a retired address's closing connections are waited for
KERNEL_GRACE = 60  # the kernel's own timeout outlives the relay's timer: the relay removes entries
MAX_REMEMBERED = 4096  # fake -> domain of expired entries, for flows that outlive them
LOCAL_PORT_RANGE = "net.ipv4.ip_local_port_range"
# Byte counts and start times for the connection table (this namespace only, new entries on).
CT_SYSCTLS = ("net.netfilter.nf_conntrack_acct", "net.netfilter.nf_conntrack_timestamp")


@dataclass(slots=True)
class Entry:
    real: str
    domain: str
    timer: asyncio.TimerHandle


class FastPath:
    def __init__(self, relay, *, kernel: Kernel | None = None, nftables: Nftables | None = None,
                 conntrack: Conntrack | None = None):
        self.relay = relay
        self.kernel = kernel if kernel is not None else LinuxKernel()
        self.nftables = nftables if nftables is not None else LinuxNftables()
        self.conntrack = conntrack if conntrack is not None else LinuxConntrack()
        self.entries: dict[str, Entry] = {}
        self.domains: OrderedDict[str, str] = OrderedDict()
        self.flows: dict[int, Connection] = {}  # conntrack id -> its live row
        self.ct_keys: dict[int, tuple] = {}  # conntrack id -> its (src, dst) as conntrack has them
        self.nat64 = None  # the IPv6 clients' translator, while it runs
        self.nat64_status = "off"
        self.busy: set[str] = set()
        self._closing: set[asyncio.Task] = set()  # waiting to forget a retired address's closing connections
        self.last_counts: dict[str, dict[tuple[str, str], int]] = {}
        self.running = False
        self.ct: Conntrack | None = None  # while running
        self._poller: asyncio.Task | None = None
        self.failures = 0

    @property
    def settings(self):
        return self.relay.settings

    # -- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        if not self.settings.fast_path.enabled:
            # A predecessor's table (with the fast path on) must not outlive this start.
            await self._nft(nft.delete_table(self.settings), quiet=True)
            if len(self.settings.fast_path.interfaces) == 1:
                self._remove_nat64_leftovers()
            return
        if not await self._nft(nft.fast_path_table(self.settings)):
            log.error("fast path off: its nftables table could not be made")
            return
        ports = self.kernel.get_sysctls(None, [LOCAL_PORT_RANGE])[LOCAL_PORT_RANGE]
        low, high = (int(x) for x in (ports or "0 0").split())
        if ports and not (nft.LOCAL_PORTS[0] <= low and high <= nft.LOCAL_PORTS[1]):
            log.warning("ip_local_port_range is %d-%d: the relay's connections may take a port of a "
                        "NATed one (%s) and stall; the namespace should set %d-%d", low, high,
                        nft.NAT_PORTS, *nft.LOCAL_PORTS)
        for key in CT_SYSCTLS:
            try:
                self.kernel.set_sysctls(None, {key: "1"})
            except KernelError as exc:
                log.warning("%s not set (%s): the table's kernel rows lack it", key.rsplit(".", 1)[1], exc)
        if self.settings.translates6():
            await self._start_nat64()
        elif len(self.settings.fast_path.interfaces) == 1:
            self._remove_nat64_leftovers()
        self.ct = self.conntrack
        await self._forget_ended()  # a dead predecessor's
        self.running = True
        self._poller = asyncio.ensure_future(self._poll())
        log.info("fast path on: direct routes NATed by table %s %s for %gs after each resolve",
                 "/".join(f.table for f in nft.families(self.settings)), self.settings.fast_path.table,
                 self.settings.fast_path.ttl)

    def _remove_nat64_leftovers(self) -> None:
        from .nat64 import remove_leftovers

        try:
            remove_leftovers(self.settings.fast_path.interfaces[0])
        except Exception as exc:  # noqa: BLE001 - not translating either way
            log.warning("a predecessor's IPv6 translator may be left on %s: %s",
                        self.settings.fast_path.interfaces[0], exc)

    async def _start_nat64(self) -> None:
        import shutil

        from appliance.switch.datapath.build import scratch_dir

        from .nat64 import Nat64, Unavailable

        fp = self.settings.fast_path
        build_dir = scratch_dir("appliance-relay-nat64-")
        nat64 = Nat64(fp.interfaces[0], self.settings.fake_range, self.settings.fake_range6,
                      fp.shadow_range, build_dir)
        try:
            # clang takes a second or two: not on the event loop.
            await asyncio.get_running_loop().run_in_executor(None, nat64.start)
        except Unavailable as exc:
            self.nat64_status = f"unavailable, IPv6 clients are relayed: {exc}"
            log.warning("IPv6 translator %s", self.nat64_status)
            return
        finally:
            shutil.rmtree(build_dir, ignore_errors=True)
        self.nat64 = nat64
        self.nat64_status = f"on ({nat64.attach_mode} on {nat64.device}, shadows {fp.shadow_range})"

    async def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        if self._poller:
            self._poller.cancel()
        retired = [fake for fake in list(self.entries) if self._drop(fake)]
        if self.nat64 is not None:
            self.nat64.close()  # translated connections end with it, as NATed ones do below
        try:
            await self.read_counters()  # what the kernel counted since the last read
        except Exception:  # noqa: BLE001 - stopping goes on
            log.exception("fast path: last counter read failed")
        await self._nft(nft.delete_table(self.settings))
        await self._forget_ended()
        for fake in retired:
            self.relay.directory.unpin(self._name(fake))
        for conn in list(self.flows.values()):
            self.relay.table.close(conn, "closed", "fast path stopped")
        self.flows.clear()
        self.ct_keys.clear()
        self.nat64 = None
        if self.ct is not None:
            self.ct.close()
            self.ct = None

    # -- entries --------------------------------------------------------------
    def _name(self, fake: str) -> str:
        """The address the DNS server knows `fake` by: a fake IPv6 address's IPv4 twin."""
        if ":" not in fake or self.settings.fake_range6 is None:
            return fake
        return twin4(fake, self.settings.fake_range, self.settings.fake_range6) or fake

    def serves(self, fake: str, real: str) -> bool:
        """Whether the kernel can map `fake` to `real`: same family, and a table for it."""
        fam = nft.family_of(fake)
        return nft.family_of(real) is fam and fam in nft.families(self.settings)

    async def offer(self, fake: str, real: str, domain: str, client: str | None = None) -> None:
        """The relay resolved `fake` (a direct route) to `real` for `client`: NAT it from now on."""
        if not self.running or fake in self.busy or not self.serves(fake, real):
            return  # being mapped or unmapped right now: the next connection offers again
        if self.nat64 is not None and client is not None and ":" in client:
            try:
                self.nat64.shadow_for(client)  # its next connections can be translated
            except OSError as exc:
                log.error("fast path: no shadow address for %s: %s", client, exc)
        entry = self.entries.get(fake)
        if entry is not None and entry.real == real:
            return
        self.busy.add(fake)
        try:
            if entry is None:
                # Pin first: the DNS server must not recycle an address the kernel maps.
                self.relay.directory.pin(self._name(fake))
            ttl = self.settings.fast_path.ttl
            script = nft.add_entry(self.settings, fake, real, ttl + KERNEL_GRACE,
                                   replace=entry is not None)
            if not await self._nft(script):
                if entry is None:
                    self.relay.directory.unpin(self._name(fake))
                return
            if entry is not None:
                entry.timer.cancel()
            if self.nat64 is not None and ":" not in fake:
                try:  # after nft: a translated packet must find the DNAT
                    self.nat64.map_fake(fake, real)
                except OSError as exc:
                    log.error("fast path: %s not mapped for IPv6 clients: %s", fake, exc)
            timer = self.relay.loop.call_later(ttl, self._expire, fake)
            self.entries[fake] = Entry(real, domain, timer)
            self._remember(fake, domain)
            log.info("fast path: %s (%s) -> %s", fake, domain, real)
        finally:
            self.busy.discard(fake)

    def _expire(self, fake: str) -> None:
        if self._drop(fake):
            asyncio.ensure_future(self._retire(fake))

    async def _retire(self, fake: str) -> None:
        """Unmap `fake`; only then may the DNS server give it to another name."""
        self.busy.add(fake)
        try:
            await self._nft(nft.remove_entry(self.settings, fake), quiet=True)
            if await self._forget_ended(fake):
                task = asyncio.ensure_future(self._forget_when_closed(fake))
                self._closing.add(task)  # the loop holds tasks weakly
                task.add_done_callback(self._closing.discard)
            self.relay.directory.unpin(self._name(fake))
        finally:
            self.busy.discard(fake)

    def _drop(self, fake: str) -> bool:
        entry = self.entries.pop(fake, None)
        if entry is None:
            return False
        entry.timer.cancel()
        if self.nat64 is not None and ":" not in fake:
            try:  # before nft: new IPv6 connections go to the relay, translated ones go on
                self.nat64.unmap_fake(fake)
            except OSError:
                pass  # never mapped (its map_fake failed)
        return True

    async def _forget_ended(self, fake: str | None = None) -> int:
        """Delete closed (TIME_WAIT, CLOSE) NATed connections to `fake` (None: to any).

        Conntrack keeps a closed connection for minutes, and a new SYN on the
        same addresses and ports takes it up again with its old NAT binding.
        Once a client's port comes round again, that connection would reach
        the old real address although the map no longer has it, and, if the
        DNS server has since given the fake address to another name, the
        wrong site. Open and half-closed connections keep their entries.
        Returns how many ended (marked) connections are still closing.
        """
        if self.ct is None:
            return 0
        closing = 0
        # Read again until a read finds none closed left: a dump the table changes under
        # can come back short, and one left behind is the stale binding this prevents.
        for _ in range(3):
            try:
                ended = await self.ct.entries(nft.FAST_PATH_CT_MARK_ENDED, fake)
            except Exception:  # noqa: BLE001 - a bad read must not end the relay
                log.exception("fast path: clearing closed connections failed")
                continue
            closed = [e for e in ended if e.proto == TCP and e.tcp_state in TCP_CLOSED]
            closing = len(ended) - len(closed)
            if not closed:
                break
            for entry in closed:
                try:
                    await self.ct.delete(TCP, entry.src, entry.dst)  # False: gone meanwhile
                except KernelError as exc:
                    log.warning("fast path: closed connection %s not forgotten: %s", entry.dst, exc)
        return closing

    async def _forget_when_closed(self, fake: str, every: float = 0.5) -> None:
        """A connection still closing when `fake` was retired (its last ACK on the way) ends
        in TIME_WAIT with the old binding a moment later: forget it then. Looked at every
        `every` seconds (a dump of that address's marked connections), not at doubling
        intervals: one that closed 3.6 s after the retire would keep its binding until the look at
        7.5 s, while a new connection could take it up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSING_WAIT
        while self.running and loop.time() < deadline:
            await asyncio.sleep(every)
            if not await self._forget_ended(fake):
                return

    def _remember(self, fake: str, domain: str) -> None:
        fake = self._name(fake)
        self.domains[fake] = domain
        self.domains.move_to_end(fake)
        while len(self.domains) > MAX_REMEMBERED:
            self.domains.popitem(last=False)

    async def _nft(self, script: str, quiet: bool = False) -> bool:
        """Run an nft script; whether it went through."""
        try:
            await self.nftables.run(script)
        except KernelError as exc:
            self.failures += 1
            if not quiet:
                log.error("fast path: nft failed: %s", str(exc)[:300])
            return False
        return True

    # -- the kernel's connections in the table --------------------------------
    async def _poll(self) -> None:
        while self.running:
            try:
                await self.read_flows()
                await self.read_counters()
            except Exception:  # noqa: BLE001 - a bad read must not end the relay
                log.exception("fast path: conntrack read failed")
            await asyncio.sleep(self.settings.fast_path.poll)

    async def read_flows(self) -> None:
        """Bring the table's kernel rows up to date with conntrack."""
        if self.ct is None:
            return
        seen: set[int] = set()
        table = self.relay.table
        for entry in await self.ct.entries(nft.FAST_PATH_CT_MARK):
            if entry.proto != TCP:
                continue
            seen.add(entry.id)
            conn = self.flows.get(entry.id)
            if conn is None:
                client, fake, real = entry.src, entry.dst, entry.reply_src
                client6 = self.nat64.client_of(client[0]) if self.nat64 is not None else None
                if client6 is not None:  # a translated IPv6 client: what it used, not its stand-ins
                    client = (client6, client[1])
                    fake = (twin6(fake[0], self.settings.fake_range, self.settings.fake_range6), fake[1])
                conn = table.open("tcp", client, fake, self.domains.get(self._name(fake[0])),
                                  "direct", counted=False)
                host = f"[{real[0]}]" if ":" in real[0] else real[0]
                conn.real, conn.state, conn.path = f"{host}:{real[1]}", "open", "kernel"
                if entry.start:
                    conn.started = entry.start
                self.flows[entry.id] = conn
                self.ct_keys[entry.id] = (entry.src, entry.dst)
            conn.up, conn.down = entry.bytes_orig, entry.bytes_reply
        for ct_id in [i for i in self.flows if i not in seen]:
            conn = self.flows.pop(ct_id)
            await self._final_bytes(conn, *self.ct_keys.pop(ct_id))
            table.close(conn, "closed")

    async def _final_bytes(self, conn: Connection, src, dst) -> None:
        try:
            entry = await self.ct.get(TCP, src, dst)
        except KernelError:  # the last read's bytes stand
            return
        if entry is not None:  # else gone already
            conn.up, conn.down = entry.bytes_orig, entry.bytes_reply

    async def read_counters(self) -> None:
        """Add what the kernel counted since the last read to the relay's counters."""
        counters: dict[str, dict] = {name: {} for name in nft.COUNTER_SETS}
        try:
            for fam in nft.families(self.settings):
                got = await self.nftables.set_counters(fam.table, self.settings.fast_path.table,
                                                       nft.COUNTER_SETS)
                for name in nft.COUNTER_SETS:  # keys of the two families never meet
                    counters[name].update(got[name])
        except KernelError as exc:
            self.failures += 1
            log.error("fast path: nft failed: %s", str(exc)[:300])
            return
        now = {name: {key: (c.packets if name == "conns" else c.bytes) for key, c in elems.items()}
               for name, elems in counters.items()}
        deltas: dict[tuple[str, str], list[int]] = {}
        for i, name in enumerate(nft.COUNTER_SETS):
            last = self.last_counts.get(name, {})
            for key, value in now[name].items():
                before = last.get(key, 0)
                # Smaller than before: the element expired and came back from zero.
                delta = value - before if value >= before else value
                if delta:
                    deltas.setdefault(key, [0, 0, 0])[i] += delta
        self.last_counts = now
        table = self.relay.table
        for (client, fake), (conns, up, down) in deltas.items():
            if self.nat64 is not None:
                client = self.nat64.client_of(client) or client
            table.by_client.add(client, up, down, conns)
            table.by_domain.add(self.domains.get(self._name(fake), fake), up, down, conns)
            table.totals["fast_path"] += conns

    def stats(self) -> dict:
        out = {"enabled": self.running, "entries": len(self.entries),
               "connections": len(self.flows), "nft_failures": self.failures,
               "ipv6_translator": self.nat64_status}
        if self.nat64 is not None:
            out["ipv6_translated"] = self.nat64.stats()
        return out

