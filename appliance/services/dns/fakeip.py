"""The fake-IP pool: domain <-> address, stable, persisted, recycled by LRU.

A domain's address is a hash of its name into the pool, probing forward on
collision (as vproxy does), so the same name gets the same address even
without the database; the SQLite file makes probed choices and the mapping
survive restarts, so answers clients still hold stay valid.

When the pool is full the least recently used mapping is recycled, except
addresses pinned by live connections: the relay (issue 7) calls
`pin(ip)` when it accepts a connection to a fake address and `unpin(ip)`
when that connection ends (a count, so several connections can pin one).

Persistence is write-behind. The maps in memory are the truth for answers,
pins and recycling; a query never waits for SQLite. Every address whose
mapping changed (new, route changed, recycled) is marked, and
`write_behind()` (the DNS server calls it every `WRITE_EVERY` seconds, and
`allocate` as soon as `BATCH` changes wait) hands the current state of the
marked addresses to the store's writer process (`storewriter.py`, which
says why a process), which applies it in one transaction:
after each commit the table equals the mappings of one moment of the pool,
so it never holds one address for two names. Last-used times change on
every hit and are written with the next batch at most every
`LAST_USED_EVERY` seconds. `close()` (clean shutdown) writes everything.

What a crash (SIGKILL, OOM kill) can lose: the changes after the last
commit: about the last `WRITE_EVERY` seconds of new mappings, longer
while the writer waits for the disk (a WAL checkpoint's fsync took up to
2 s on a loaded test VM) or the disk fails; `unsaved()` and the stats'
`fake_ip_unsaved` show how many. Before write-behind a crash of the process lost
nothing; a power loss could already lose the last commits
(synchronous=NORMAL) and still can. The restarted server starts from the
last committed moment, which is consistent (no address for two names);
pins are in memory only, as before (the relay pins again when it
reconnects). A client that got a lost mapping's address F for a name N
just before the crash still holds F, which the restarted server does not
know: a connection to F before the client asks again finds no mapping
(the relay refuses it). When N is asked again it hashes to the same
slot, so it gets F back if F is still free, which on a mostly empty pool
is the common case but not a promise: if N had probed past a taken slot,
or the pool is full (recycling), or another name hashed or probed onto F
after the restart and before N came back, N gets another address, and in
the last case a connection to F from a client that still holds the old
answer reaches that other name. Only answers given in the last batch
interval before a crash are exposed, and only while clients keep them:
the fake TTL is 1 s by default (some applications keep answers longer).

What clients see when the box restarts (the DNS service, or the whole box:
a reboot tears everything down and the boot applies it again; the store
lives on the data partition): a client keeps the answers in its own cache
(the operating system's, the browser's; some applications longer than the
TTL), and the box's mappings outlive the restart, so a connection to a
fake address a client still holds reaches its site through the relay
without the client asking again, and asking again gives the same address.
While the box is down nothing answers at the gateway's address and
connections to fake addresses fail; clients retry. The box's own answer
cache is in memory: after a restart the first lookup of each name goes
upstream. Real addresses in clients' caches are unaffected. The e2e test
`test_a_client_keeps_its_fake_ip_across_a_restart_of_the_box` shows it.

`forget_unpinned()` (the console's "Flush fake IPs", `POST
/api/dns/fake-ips/flush/`) forgets every mapping no live connection pins:
a client still holding a forgotten address cannot connect with it (the
relay refuses an unknown address) until the name is asked again, and then
the name gets the same address back; pinned addresses keep their names.
A forgotten address is retired for RETIRE_FOR (a day): no other name gets
it, so a client holding it never reaches a wrong site. The retirements are
committed in the transaction that deletes the mappings (table `retired`)
and survive restarts; only a pool whose every candidate for a new name is
held or retired takes the address retired longest ago.

A client never reaches a wrong site through a lost mapping: the pool is
split into REGIONS regions (when it is large enough: MIN_REGION addresses
each) and new names are hashed into the region of the store's epoch. The
store marks itself open (a synced commit) when it opens and closed after
the last batch of a clean `close()`; opened while still marked open (the
process was killed, the box lost power), the epoch goes up and new names
go to the next region. Every address a lost mapping handed out is in the
old epoch's region and not in the table, so nothing allocates it again
until the epochs come round (REGIONS - 1 more unclean restarts): a client
still holding it finds no mapping (the relay refuses the connection at
once, the client asks again and gets the name's new address). Mappings
that were committed keep their addresses across epochs. A pool smaller
than REGIONS * MIN_REGION is one region, and the paragraph above on what
a lost mapping can do holds for it.

The file stays what the relay's `StoreReader` reads: table `fakeip`
(ip INTEGER PRIMARY KEY, domain UNIQUE, route, created, last_used), WAL.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import socket
import sqlite3
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from .storewriter import StoreWriter

log = logging.getLogger(__name__)

PROBES = 64
RECYCLED_KEPT = 4096  # recycled addresses waiting for `take_recycled` (more: the generation moves)
WRITE_EVERY = 0.1  # seconds between write-behind batches (the DNS server's timer)
# Changed mappings that start a batch without waiting for the timer. A batch rewrites every
# page its rows land on, and new names land on addresses all over the table: batches of 512
# (one after the other at 16-19k new names a second) kept the writer at 42-44% of a core;
# the timer's batches of a tenth of a second, 30-33%. This bounds a batch, it does not pace them.
BATCH = 8192
LAST_USED_EVERY = 30.0  # seconds between writes of last-used times
REGIONS = 4  # epochs cycle through this many parts of the pool (unclean restarts)
MIN_REGION = 4096  # a smaller pool is one region
# How long a flushed address is kept from other names: clients may hold an
# answer far past its TTL (browsers a minute, some runtimes until restart).
RETIRE_FOR = 86400.0


@dataclass(slots=True)
class FakeIpEntry:
    ip: str
    domain: str
    route: str
    created: float
    last_used: float


def twin6(ip4: str, network: str, network6: str) -> str:
    """The fake IPv6 address of a fake IPv4 address: the same offset in `network6`.

    One pool serves both families: a name's AAAA is its A's twin, so the
    relay finds the name (and pins it) by the IPv4 address either way."""
    offset = int(ipaddress.IPv4Address(ip4)) - int(ipaddress.IPv4Network(network).network_address)
    return str(ipaddress.IPv6Network(network6).network_address + offset)


def twin4(ip6: str, network: str, network6: str) -> str | None:
    """The fake IPv4 address whose twin is `ip6`; None when it is outside the IPv4 pool's size."""
    net4 = ipaddress.IPv4Network(network)
    offset = int(ipaddress.IPv6Address(ip6)) - int(ipaddress.IPv6Network(network6).network_address)
    if not 0 <= offset < net4.num_addresses:
        return None
    return str(net4.network_address + offset)


class FakeIpPool:
    def __init__(self, network: str = "100.96.0.0/11", db_path: str | None = None,
                 max_entries: int | None = None, clock: Callable[[], float] = time.time,
                 batch: int = BATCH, last_used_every: float = LAST_USED_EVERY):
        self.network = ipaddress.IPv4Network(network)
        # Neither the network nor the broadcast address of the pool is handed out.
        self._first = int(self.network.network_address) + 1
        self._size = self.network.num_addresses - 2
        self.capacity = min(max_entries or self._size, self._size)
        self._clock = clock
        self._by_ip: OrderedDict[int, FakeIpEntry] = OrderedDict()  # LRU order
        self._by_domain: dict[str, int] = {}
        # Flushed addresses -> (their name, until when no other name gets them).
        self._retired: OrderedDict[int, tuple[str, float]] = OrderedDict()
        self._retire_pending: list[tuple] = []
        self._pins: dict[int, int] = {}
        self._changed: set[int] = set()  # mapping changed since the last batch
        self._touched: set[int] = set()  # only the last-used time changed
        self._batch = batch
        self._last_used_every = last_used_every
        self._last_used_written = time.monotonic()
        self._inflight: tuple[Future, set[int], set[int]] | None = None
        self._inflight_retired: list[tuple] = []
        self._writer: ThreadPoolExecutor | None = None
        self.recycled = 0
        # Changes when many addresses stop meaning their names at once (a flush):
        # answers remembered with an older generation are built again. A recycle
        # changes one address: it goes on `_recycled` for the server to take
        # (`take_recycled`), and a remembered answer checks its address (`holds`).
        self.generation = 0
        self._recycled: list[int] = []
        self.flushed = 0
        self.batches = 0  # write-behind batches started
        self.written = 0  # rows committed by them
        self.write_errors = 0
        self.last_write_error: str | None = None
        self._db: sqlite3.Connection | None = None
        self.regions = REGIONS if self._size >= REGIONS * MIN_REGION else 1
        self.epoch = 0  # unclean restarts of the store so far: which region new names go to
        if db_path:
            self._open(db_path)

    # -- persistence ---------------------------------------------------------
    def _open(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # This process's connection loads the store and marks it open and closed; the
        # batches are committed by the writer process (`storewriter`).
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS fakeip (ip INTEGER PRIMARY KEY, domain TEXT UNIQUE NOT NULL,"
            " route TEXT NOT NULL, created REAL NOT NULL, last_used REAL NOT NULL)"
        )
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("CREATE TABLE IF NOT EXISTS retired (ip INTEGER PRIMARY KEY, domain TEXT NOT NULL,"
                   " until REAL NOT NULL)")
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        self.epoch = int(meta.get("epoch", 0))
        if meta.get("open") == "1":
            self.epoch += 1
            log.warning("fake-IP store: not closed cleanly; new names go to region %d of %d (epoch %d)",
                        self.epoch % self.regions, self.regions, self.epoch)
        # Synced before the first answer: a later crash is always seen as one.
        db.execute("PRAGMA synchronous=FULL")
        db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                       [("epoch", str(self.epoch)), ("open", "1")])
        db.execute("PRAGMA synchronous=NORMAL")
        self._db = db
        rows = db.execute(
            "SELECT ip, domain, route, created, last_used FROM fakeip ORDER BY last_used"
        ).fetchall()
        stale = []
        for ip, domain, route, created, last_used in rows:
            if not self._in_pool(ip) or len(self._by_ip) >= self.capacity:
                stale.append((ip,))  # pool shrank or moved: forget what no longer fits
                continue
            self._by_ip[ip] = FakeIpEntry(str(ipaddress.IPv4Address(ip)), domain, route,
                                          created, last_used)
            self._by_domain[domain] = ip
        if stale:
            db.executemany("DELETE FROM fakeip WHERE ip = ?", stale)
        for ip, domain, until in db.execute(
                "SELECT ip, domain, until FROM retired WHERE until >= ? ORDER BY until",
                (self._clock(),)).fetchall():
            if self._in_pool(ip) and ip not in self._by_ip:
                self._retired[ip] = (domain, until)
        self._store = StoreWriter(path)
        # One thread hands the batches to the writer process in order and waits for each; it
        # holds the GIL only to pickle a batch (storewriter.py: why not a writer thread).
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fakeip-store")

    def _mark(self, ip: int) -> None:
        if self._db is not None:
            self._changed.add(ip)
            if len(self._changed) >= self._batch:
                self.write_behind()

    def unsaved(self) -> int:
        """Mappings changed in memory and not yet committed to the store."""
        pending = len(self._changed)
        if self._inflight is not None and not self._inflight[0].done():
            pending += len(self._inflight[1])
        return pending

    def _collect(self) -> bool:
        """Settle the batch in flight, if it finished. False while one is still running."""
        if self._inflight is None:
            return True
        future, changed, touched = self._inflight
        if not future.done():
            return False
        self._inflight = None
        error = future.exception()
        if error is None:
            self.written += len(changed) + len(touched)
            return True
        # Nothing of that batch is in the file: write those addresses again
        # (their state at the next batch, which is the state that counts).
        self._changed |= changed
        self._touched |= touched
        self._retire_pending = self._inflight_retired + self._retire_pending
        self.write_errors += 1
        self.last_write_error = str(error)
        log.error("fake-IP store: %d changes not written, will retry: %s",
                  len(changed) + len(touched), error)
        return True

    def _snapshot(self, last_used: bool) -> tuple[set[int], set[int], list, list]:
        changed, self._changed = self._changed, set()
        touched: set[int] = set()
        if last_used:
            touched, self._touched = self._touched - changed, set()
            self._last_used_written = time.monotonic()
        deletes, upserts = [], []
        by_ip = self._by_ip
        for ip in changed:
            entry = by_ip.get(ip)
            if entry is None:
                deletes.append(ip)
            else:
                upserts.append((ip, entry.domain, entry.route, entry.created, entry.last_used))
        for ip in touched:  # the whole row: memory is the truth, the result is the same
            entry = by_ip.get(ip)
            if entry is not None:
                upserts.append((ip, entry.domain, entry.route, entry.created, entry.last_used))
        return changed, touched, deletes, upserts

    def write_behind(self, last_used: bool | None = None) -> Future | None:
        """Start writing the changes to the store (the writer process); never waits.

        Last-used times go along when `last_used` is true, or (None) when
        LAST_USED_EVERY has passed since they were last written. Returns the
        batch's future, None if there is nothing to write or a batch is still
        running (its successor starts at the next call).
        """
        if self._db is None or not self._collect():
            return None
        if last_used is None:
            last_used = time.monotonic() - self._last_used_written >= self._last_used_every
        if not self._changed and not (last_used and self._touched) and not self._retire_pending:
            return None
        changed, touched, deletes, upserts = self._snapshot(last_used)
        retired, self._retire_pending = self._retire_pending, []
        future = self._writer.submit(self._store.write, deletes, upserts, retired, self._clock())
        self._inflight = (future, changed, touched)
        self._inflight_retired = retired
        self.batches += 1
        return future

    def flush(self) -> None:
        """Write every change, last-used times included, and wait until committed.

        Raises the store's error if the last batch failed (its changes stay
        marked for the next try).
        """
        if self._db is None:
            return
        if self._inflight is not None:
            self._inflight[0].exception()  # wait for it
            self._collect()
        future = self.write_behind(last_used=True)
        if future is not None:
            error = future.exception()
            self._collect()
            if error is not None:
                raise error

    def close(self) -> None:
        if self._db is not None:
            try:
                self.flush()
            except sqlite3.Error as exc:
                log.error("fake-IP store: closing with %d unsaved changes: %s",
                          len(self._changed) + len(self._touched), exc)
            self._writer.shutdown(wait=True)
            self._store.close()
            if not self._changed and not self._touched and not self._retire_pending:
                try:
                    self._db.execute("UPDATE meta SET value = '0' WHERE key = 'open'")
                except sqlite3.Error as exc:
                    log.error("fake-IP store: not marked closed: %s", exc)
            self._db.close()
            self._db = None

    # -- allocation ----------------------------------------------------------
    def _in_pool(self, ip: int) -> bool:
        return self._first <= ip < self._first + self._size

    def _candidates(self, domain: str):
        """The addresses `domain` may get, in order: its hash's slot in this epoch's region, then on."""
        size = self._size // self.regions
        base = self._first + (self.epoch % self.regions) * size
        digest = hashlib.blake2b(domain.encode(), digest_size=8).digest()
        start = int.from_bytes(digest, "big") % size
        return (base + (start + step) % size for step in range(min(PROBES, size)))

    def _free_candidate(self, domain: str, now: float) -> int | None:
        """The first of `domain`'s candidates no name holds and no other name was flushed from.

        A flushed address goes back to its own name (a client still holding
        it reaches the same site again), never to another before its
        quarantine ends; when every candidate is held or quarantined, the
        one retired longest ago is taken (the pool is that full)."""
        retired = self._retired
        while retired:
            ip, (_, until) = next(iter(retired.items()))
            if until >= now:
                break
            del retired[ip]
        oldest = None
        for c in self._candidates(domain):
            if c in self._by_ip:
                continue
            held = retired.get(c)
            if held is None or held[0] == domain:
                retired.pop(c, None)
                return c
            if oldest is None or held[1] < retired[oldest][1]:
                oldest = c
        if oldest is not None:
            del retired[oldest]
        return oldest

    def _evict_one(self) -> int | None:
        for ip in self._by_ip:
            if not self._pins.get(ip):
                entry = self._by_ip.pop(ip)
                del self._by_domain[entry.domain]
                self._touched.discard(ip)
                self._mark(ip)  # written as a delete, or as the address's next mapping
                self.recycled += 1
                if len(self._recycled) >= RECYCLED_KEPT:
                    self._recycled.clear()  # not taken: forget every answer instead
                    self.generation += 1
                self._recycled.append(ip)
                return ip
        return None

    def allocate(self, domain: str, route: str = "direct") -> str | None:
        """The fake address of `domain`; None if the pool is full of pinned addresses."""
        now = self._clock()
        ip = self._by_domain.get(domain)
        if ip is not None:
            entry = self._by_ip[ip]
            self._by_ip.move_to_end(ip)
            entry.last_used = now
            if entry.route != route:
                entry.route = route
                self._mark(ip)
            elif self._db is not None:
                self._touched.add(ip)
            return entry.ip
        freed = None
        if len(self._by_ip) >= self.capacity:
            freed = self._evict_one()
            if freed is None:
                return None
        chosen = self._free_candidate(domain, now)
        if chosen is None:
            chosen = freed if freed is not None else self._evict_one()
            if chosen is None:
                return None
        entry = FakeIpEntry(socket.inet_ntoa(chosen.to_bytes(4, "big")), domain, route, now, now)
        self._by_ip[chosen] = entry
        self._by_domain[domain] = chosen
        self._mark(chosen)
        return entry.ip

    def holds(self, key: int, domain: str) -> bool:
        """Whether the address `key` (an integer) is `domain`'s still."""
        entry = self._by_ip.get(key)
        return entry is not None and entry.domain == domain

    def take_recycled(self) -> list[int]:
        """The addresses (integers) recycled since the last call: each now means another name."""
        taken, self._recycled = self._recycled, []
        return taken

    def touch(self, ip: str) -> None:
        """Mark a mapping used (a remembered fake answer was served again)."""
        self.touch_key(int.from_bytes(socket.inet_aton(ip), "big"))

    def touch_key(self, key: int) -> None:
        """`touch` by the address as an integer (the server keeps it so: this runs on every hit)."""
        entry = self._by_ip.get(key)
        if entry is not None:
            self._by_ip.move_to_end(key)
            entry.last_used = self._clock()
            if self._db is not None:
                self._touched.add(key)

    def forget_unpinned(self) -> dict:
        """Forget every mapping no live connection pins (the console's "flush fake IPs").

        Pinned addresses keep their names: a connection or the relay's kernel
        fast path still uses them, and giving one to another name would send
        that traffic to the wrong site. The store follows with the next batch.
        Returns how many mappings went and how many stayed.
        """
        doomed = [ip for ip in self._by_ip if not self._pins.get(ip)]
        until = self._clock() + RETIRE_FOR
        for ip in doomed:
            entry = self._by_ip.pop(ip)
            del self._by_domain[entry.domain]
            self._touched.discard(ip)
            self._retired.pop(ip, None)
            self._retired[ip] = (entry.domain, until)
            if self._db is not None:
                self._retire_pending.append((ip, entry.domain, until))
        if self._db is not None:
            self._changed.update(doomed)
            self.write_behind()
        self.generation += 1
        self.flushed += len(doomed)
        return {"removed": len(doomed), "kept": len(self._by_ip)}

    # -- the relay's interface ----------------------------------------------
    def lookup_ip(self, ip: str) -> FakeIpEntry | None:
        try:
            return self._by_ip.get(int(ipaddress.IPv4Address(ip)))
        except ValueError:
            return None

    def lookup_domain(self, domain: str) -> FakeIpEntry | None:
        ip = self._by_domain.get(domain.lower().rstrip("."))
        return None if ip is None else self._by_ip[ip]

    def pin(self, ip: str) -> bool:
        """A live connection uses `ip`: never recycle it until unpinned. False if unmapped."""
        key = int(ipaddress.IPv4Address(ip))
        if key not in self._by_ip:
            return False
        self._pins[key] = self._pins.get(key, 0) + 1
        return True

    def unpin(self, ip: str) -> None:
        key = int(ipaddress.IPv4Address(ip))
        count = self._pins.get(key, 0) - 1
        if count > 0:
            self._pins[key] = count
        else:
            self._pins.pop(key, None)

    def pins(self, ip: str) -> int:
        return self._pins.get(int(ipaddress.IPv4Address(ip)), 0)

    def __contains__(self, ip: str) -> bool:
        try:
            return self._in_pool(int(ipaddress.IPv4Address(ip)))
        except ValueError:
            return False

    def __len__(self) -> int:
        return len(self._by_ip)

    def table(self, limit: int | None = None) -> list[dict]:
        """Mappings, most recently used first, with their pin counts."""
        out = []
        for key in reversed(self._by_ip):
            entry = self._by_ip[key]
            out.append({"ip": entry.ip, "domain": entry.domain, "route": entry.route,
                        "created": entry.created, "last_used": entry.last_used,
                        "pins": self._pins.get(key, 0)})
            if limit is not None and len(out) >= limit:
                break
        return out
