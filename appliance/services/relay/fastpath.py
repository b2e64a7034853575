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
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from . import nft
from .table import Connection

log = logging.getLogger("appliance.relay")

TCP_CLOSED = {7, 8}  # conntrack's TCP states TIME_WAIT and CLOSE
KERNEL_GRACE = 60  # the kernel's own timeout outlives the relay's timer: the relay removes entries
MAX_REMEMBERED = 4096  # fake -> domain of expired entries, for flows that outlive them
LOCAL_PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Byte counts and start times for the connection table (this namespace only, new entries on).
CT_SYSCTLS = (Path("/proc/sys/net/netfilter/nf_conntrack_acct"),
              Path("/proc/sys/net/netfilter/nf_conntrack_timestamp"))


@dataclass(slots=True)
class Entry:
    real: str
    domain: str
    timer: asyncio.TimerHandle


class FastPath:
    def __init__(self, relay):
        self.relay = relay
        self.entries: dict[str, Entry] = {}
        self.domains: OrderedDict[str, str] = OrderedDict()
        self.flows: dict[int, Connection] = {}  # conntrack id -> its live row
        self.busy: set[str] = set()
        self.last_counts: dict[str, dict[tuple[str, str], int]] = {}
        self.running = False
        self.ct = None
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
            return
        if await self._nft(nft.fast_path_table(self.settings)) is None:
            log.error("fast path off: its nftables table could not be made")
            return
        low, high = (int(x) for x in LOCAL_PORT_RANGE.read_text().split())
        if not (nft.LOCAL_PORTS[0] <= low and high <= nft.LOCAL_PORTS[1]):
            log.warning("ip_local_port_range is %d-%d: the relay's connections may take a port of a "
                        "NATed one (%s) and stall; the namespace should set %d-%d", low, high,
                        nft.NAT_PORTS, *nft.LOCAL_PORTS)
        for path in CT_SYSCTLS:
            try:
                path.write_text("1")
            except OSError as exc:
                log.warning("%s not set (%s): the table's kernel rows lack it", path.name, exc)
        from pyroute2.netlink.nfnetlink.nfctsocket import AsyncNFCTSocket

        self.ct = AsyncNFCTSocket()
        await self._forget_ended()  # a dead predecessor's
        self.running = True
        self._poller = asyncio.ensure_future(self._poll())
        log.info("fast path on: direct routes NATed by table ip %s for %gs after each resolve",
                 self.settings.fast_path.table, self.settings.fast_path.ttl)

    async def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        if self._poller:
            self._poller.cancel()
        retired = [fake for fake in list(self.entries) if self._drop(fake)]
        try:
            await self.read_counters()  # what the kernel counted since the last read
        except Exception:  # noqa: BLE001 - stopping goes on
            log.exception("fast path: last counter read failed")
        await self._nft(nft.delete_table(self.settings))
        await self._forget_ended()
        for fake in retired:
            self.relay.directory.unpin(fake)
        for conn in list(self.flows.values()):
            self.relay.table.close(conn, "closed", "fast path stopped")
        self.flows.clear()
        if self.ct is not None:
            self.ct.close()
            self.ct = None

    # -- entries --------------------------------------------------------------
    async def offer(self, fake: str, real: str, domain: str) -> None:
        """The relay resolved `fake` (a direct route) to `real`: NAT it from now on."""
        if not self.running or fake in self.busy:
            return  # being mapped or unmapped right now: the next connection offers again
        entry = self.entries.get(fake)
        if entry is not None and entry.real == real:
            return
        self.busy.add(fake)
        try:
            if entry is None:
                # Pin first: the DNS server must not recycle an address the kernel maps.
                self.relay.directory.pin(fake)
            ttl = self.settings.fast_path.ttl
            script = nft.add_entry(self.settings, fake, real, ttl + KERNEL_GRACE,
                                   replace=entry is not None)
            if await self._nft(script) is None:
                if entry is None:
                    self.relay.directory.unpin(fake)
                return
            if entry is not None:
                entry.timer.cancel()
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
            await self._forget_ended(fake)
            self.relay.directory.unpin(fake)
        finally:
            self.busy.discard(fake)

    def _drop(self, fake: str) -> bool:
        entry = self.entries.pop(fake, None)
        if entry is None:
            return False
        entry.timer.cancel()
        return True

    async def _forget_ended(self, fake: str | None = None) -> None:
        """Delete closed (TIME_WAIT, CLOSE) NATed connections to `fake` (None: to any).

        Conntrack keeps a closed connection for minutes, and a new SYN on the
        same addresses and ports takes it up again with its old NAT binding.
        Once a client's port comes round again, that connection would reach
        the old real address although the map no longer has it, and, if the
        DNS server has since given the fake address to another name, the
        wrong site. Open and half-closed connections keep their entries.
        """
        if self.ct is None:
            return
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

        doomed = []
        where = {} if fake is None else {"tuple_orig": NFCTAttrTuple(daddr=fake)}  # kernel-side
        try:
            async for msg in await self.ct.dump(mark=nft.FAST_PATH_CT_MARK_ENDED, **where):
                flow = _flow(msg)
                if flow is None or (fake is not None and flow[2][0] != fake):
                    continue
                if _tcp_state(msg) in TCP_CLOSED:
                    doomed.append(flow)
            for _, client, dst, _, _, _, _ in doomed:
                tup = NFCTAttrTuple(saddr=client[0], daddr=dst[0], proto=socket.IPPROTO_TCP,
                                    sport=client[1], dport=dst[1])
                try:
                    await self.ct.entry("del", tuple_orig=tup)
                except Exception:  # noqa: BLE001 - gone meanwhile
                    pass
        except Exception:  # noqa: BLE001 - a bad read must not end the relay
            log.exception("fast path: clearing closed connections failed")

    def _remember(self, fake: str, domain: str) -> None:
        self.domains[fake] = domain
        self.domains.move_to_end(fake)
        while len(self.domains) > MAX_REMEMBERED:
            self.domains.popitem(last=False)

    async def _nft(self, script: str | None, quiet: bool = False, *args: str) -> str | None:
        """Run an nft script (or the command in `args`); its output, or None when it failed."""
        proc = await asyncio.create_subprocess_exec(
            "nft", *(args or ("-f", "-")), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate(script.encode() if script else b"")
        if proc.returncode != 0:
            self.failures += 1
            if not quiet:
                log.error("fast path: nft failed: %s", err.decode().strip()[:300])
            return None
        return out.decode()

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
        async for msg in await self.ct.dump(mark=nft.FAST_PATH_CT_MARK):
            flow = _flow(msg)
            if flow is None:
                continue
            ct_id, client, fake, real, up, down, started = flow
            seen.add(ct_id)
            conn = self.flows.get(ct_id)
            if conn is None:
                conn = table.open("tcp", client, fake, self.domains.get(fake[0]), "direct", counted=False)
                conn.real, conn.state, conn.path = f"{real[0]}:{real[1]}", "open", "kernel"
                if started:
                    conn.started = started
                self.flows[ct_id] = conn
            conn.up, conn.down = up, down
        for ct_id in [i for i in self.flows if i not in seen]:
            conn = self.flows.pop(ct_id)
            await self._final_bytes(conn)
            table.close(conn, "closed")

    async def _final_bytes(self, conn: Connection) -> None:
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

        tup = NFCTAttrTuple(saddr=conn.client[0], daddr=conn.fake[0], proto=socket.IPPROTO_TCP,
                            sport=conn.client[1], dport=conn.fake[1])
        try:
            for msg in await self.ct.entry("get", tuple_orig=tup):
                if (flow := _flow(msg)) is not None:
                    conn.up, conn.down = flow[4], flow[5]
        except Exception:  # noqa: BLE001 - gone already: the last read's bytes stand
            pass

    async def read_counters(self) -> None:
        """Add what the kernel counted since the last read to the relay's counters."""
        out = await self._nft(None, False, "-j", "list", "table", "ip", self.settings.fast_path.table)
        if out is None:
            return
        now: dict[str, dict[tuple[str, str], int]] = {name: {} for name in nft.COUNTER_SETS}
        for item in json.loads(out).get("nftables", []):
            named = item.get("set", {})
            if named.get("name") not in now:
                continue
            field = "packets" if named["name"] == "conns" else "bytes"
            for elem in named.get("elem", []):
                elem = elem.get("elem", elem)
                key = tuple(elem["val"]["concat"])
                now[named["name"]][key] = elem["counter"][field]
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
            table.by_client.add(client, up, down, conns)
            table.by_domain.add(self.domains.get(fake, fake), up, down, conns)
            table.totals["fast_path"] += conns

    def stats(self) -> dict:
        return {"enabled": self.running, "entries": len(self.entries),
                "connections": len(self.flows), "nft_failures": self.failures}


def _tcp_state(msg) -> int | None:
    info = msg.get_attr("CTA_PROTOINFO")
    tcp = info.get_attr("CTA_PROTOINFO_TCP") if info is not None else None
    return tcp.get_attr("CTA_PROTOINFO_TCP_STATE") if tcp is not None else None


def _flow(msg):
    """(id, client, fake, real, bytes up, bytes down, start) of a conntrack message."""
    orig, reply = msg.get_attr("CTA_TUPLE_ORIG"), msg.get_attr("CTA_TUPLE_REPLY")
    if orig is None or reply is None:
        return None
    proto = orig.get_attr("CTA_TUPLE_PROTO")
    if proto is None or proto.get_attr("CTA_PROTO_NUM") != socket.IPPROTO_TCP:
        return None
    o_ip, r_ip = orig.get_attr("CTA_TUPLE_IP"), reply.get_attr("CTA_TUPLE_IP")
    r_proto = reply.get_attr("CTA_TUPLE_PROTO")
    client = (o_ip.get_attr("CTA_IP_V4_SRC"), proto.get_attr("CTA_PROTO_SRC_PORT"))
    fake = (o_ip.get_attr("CTA_IP_V4_DST"), proto.get_attr("CTA_PROTO_DST_PORT"))
    real = (r_ip.get_attr("CTA_IP_V4_SRC"), r_proto.get_attr("CTA_PROTO_SRC_PORT"))
    up = down = 0
    if (c := msg.get_attr("CTA_COUNTERS_ORIG")) is not None:
        up = c.get_attr("CTA_COUNTERS_BYTES") or 0
    if (c := msg.get_attr("CTA_COUNTERS_REPLY")) is not None:
        down = c.get_attr("CTA_COUNTERS_BYTES") or 0
    started = None
    if (ts := msg.get_attr("CTA_TIMESTAMP")) is not None and ts.get_attr("CTA_TIMESTAMP_START"):
        started = ts.get_attr("CTA_TIMESTAMP_START") / 1e9
    return msg.get_attr("CTA_ID"), client, fake, real, up, down, started
