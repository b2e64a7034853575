"""The fake-IP pool's write-behind store: what survives a restart, what a crash loses.

The SQLite file is also what the relay reads when the DNS server's control
socket is down (`StoreReader`), so the checks read it the relay's way.
"""

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time

import dns.message
import pytest

from appliance.kernel.process import LinuxProcesses
from appliance.services.dns import fakeip
from appliance.services.dns.fakeip import FakeIpPool
from appliance.services.dns.server import DnsService
from appliance.services.dns.settings import parse_settings
from appliance.services.dns import storewriter
from appliance.services.dns.storewriter import StoreWriteError
from appliance.services.relay.directory import StoreReader


def rows(db):
    """The table as another process sees it (read-only, like the relay)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {ip: (domain, route) for ip, domain, route in
                con.execute("SELECT ip, domain, route FROM fakeip")}
    finally:
        con.close()


def memory(pool):
    return {int(fakeip.ipaddress.IPv4Address(e["ip"])): (e["domain"], e["route"])
            for e in pool.table()}


def service(tmp_path, network="10.9.0.0/29"):
    settings = parse_settings({
        "listen": ["127.0.0.1:0"],
        "upstreams": [{"url": "udp://192.0.2.53"}],
        "control_socket": None,
        "fake_ip": {"network": network, "db_path": str(tmp_path / "fakeip.sqlite3")},
        "rules": [{"match": "suffix", "value": "video.test",
                   "then": {"action": "fake-ip", "route": "proxyA"}}],
    })
    return DnsService(settings)


def ask(svc, name):
    query = dns.message.make_query(name, "A")
    wire = asyncio.run(svc.resolver.answer(query.to_wire(), "127.0.0.1"))
    return dns.message.from_wire(wire).answer[0][0].address


def test_answers_survive_a_clean_server_restart(tmp_path):
    # 6 addresses for 6 names: most of them probed past a collision, so the
    # hash alone could not give the same answers again; only the store can.
    names = [f"n{i}.video.test" for i in range(6)]
    first = service(tmp_path)
    before = {name: ask(first, name) for name in names}
    assert len(set(before.values())) == 6
    asyncio.run(first.stop())
    reader = StoreReader(str(tmp_path / "fakeip.sqlite3"))
    for name, ip in before.items():  # the relay's fallback sees every answer
        target = reader.lookup(ip)
        assert (target.domain, target.route) == (name, "proxyA")
    reader.close()
    second = service(tmp_path)
    assert {name: ask(second, name) for name in reversed(names)} == before
    asyncio.run(second.stop())


def test_a_burst_of_new_names_gets_distinct_addresses_all_persisted(tmp_path):
    db = str(tmp_path / "f.db")
    pool = FakeIpPool("100.96.0.0/11", db, batch=100)
    names = [f"host{i}.burst.test" for i in range(2500)]
    answers = {name: pool.allocate(name, "direct") for name in names[:99]}
    assert pool.batches == 0
    answers[names[99]] = pool.allocate(names[99], "direct")
    assert pool.batches == 1  # the 100th change starts a batch, no timer needed
    answers.update({name: pool.allocate(name, "direct") for name in names[100:]})
    assert len(set(answers.values())) == 2500 and None not in answers.values()
    pool.flush()
    assert pool.unsaved() == 0
    stored = rows(db)
    assert len(stored) == 2500
    assert {domain: str(fakeip.ipaddress.IPv4Address(ip)) for ip, (domain, _) in stored.items()} == answers
    pool.close()


def test_recycling_under_write_behind_keeps_the_file_equal_to_memory(tmp_path):
    db = str(tmp_path / "f.db")
    pool = FakeIpPool("10.9.0.0/29", db, max_entries=4, batch=3)
    pinned = pool.allocate("pinned.test", "p1")
    assert pool.pin(pinned)
    for i in range(60):  # every new name recycles one: addresses change names in every batch
        assert pool.allocate(f"r{i}.test", f"route{i % 2}") is not None
        if i % 7 == 0:
            pool.write_behind()
    assert pool.recycled >= 56
    assert pool.lookup_ip(pinned).domain == "pinned.test"  # never recycled while pinned
    pool.flush()
    assert rows(db) == memory(pool)
    assert rows(db)[int(fakeip.ipaddress.IPv4Address(pinned))] == ("pinned.test", "p1")
    pool.close()
    again = FakeIpPool("10.9.0.0/29", db, max_entries=4)
    assert memory(again) == rows(db)
    again.close()


def test_a_whole_pool_recycled_in_one_batch(tmp_path):
    db = str(tmp_path / "f.db")
    pool = FakeIpPool("10.8.0.0/22", db, max_entries=600, batch=10_000)
    for i in range(600):
        pool.allocate(f"old{i}.test")
    pool.flush()
    for i in range(600):  # every old name recycled: hundreds of deletes and inserts at once
        pool.allocate(f"new{i}.test", "p2")
    assert pool.recycled == 600
    pool.flush()
    assert rows(db) == memory(pool)
    assert {domain for domain, _ in rows(db).values()} == {f"new{i}.test" for i in range(600)}
    pool.close()


def test_pinned_address_is_not_recycled_and_unpinned_one_is(tmp_path):
    pool = FakeIpPool("10.9.0.0/29", str(tmp_path / "f.db"), max_entries=2)
    a = pool.allocate("a.test")
    pool.allocate("b.test")
    assert pool.pin(a) and pool.pin(a)  # two connections
    pool.allocate("c.test")  # full: recycles b, the only unpinned one
    assert pool.lookup_ip(a).domain == "a.test" and pool.lookup_domain("b.test") is None
    pool.flush()
    assert {domain for domain, _ in rows(str(tmp_path / "f.db")).values()} == {"a.test", "c.test"}
    pool.unpin(a)
    c = pool.lookup_domain("c.test").ip
    assert pool.pin(c)
    assert pool.allocate("d.test") is None  # a still pinned once, c pinned: nothing to recycle
    pool.unpin(a)
    assert pool.allocate("d.test") is not None and pool.lookup_domain("a.test") is None
    pool.close()


def test_a_crash_loses_only_what_was_not_yet_written(tmp_path):
    db = str(tmp_path / "f.db")
    pool = FakeIpPool("100.96.0.0/11", db)
    kept = pool.allocate("kept.test", "p1")
    pool.flush()
    lost = pool.allocate("lost.test", "p2")  # answered, not yet written
    assert pool.unsaved() == 1
    # A crash now: the process is gone without close(); a new one opens the file.
    after = FakeIpPool("100.96.0.0/11", db)
    assert after.lookup_ip(kept).domain == "kept.test"
    assert after.lookup_ip(lost) is None  # the relay would refuse a connection to it
    # Asked again, the name gets an address of the next epoch's region: the lost one is never handed
    # out again, so a client still holding it cannot reach another name's site through it.
    assert after.epoch == 1 and after.allocate("lost.test", "p2") != lost
    after.close()
    pool.close()


def test_a_write_refused_by_a_lock_is_retried_with_the_current_state(tmp_path):
    """Another program holds the file locked: the batch fails, the changes stay
    marked, and the next batch writes their state then."""
    db = str(tmp_path / "f.db")
    pool = FakeIpPool("100.96.0.0/11", db)
    ip = pool.allocate("a.test", "p1")
    pool.flush()  # the writer process is up, the table exists
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        assert pool.allocate("a.test", "p2") == ip  # the route changes
        with pytest.raises(StoreWriteError, match="locked"):
            pool.flush()
        assert pool.unsaved() == 1 and "locked" in pool.last_write_error
    finally:
        other.execute("ROLLBACK")
        other.close()
    pool.flush()
    assert rows(db) == {int(fakeip.ipaddress.IPv4Address(ip)): ("a.test", "p2")}
    pool.close()


def test_a_killed_writer_process_is_started_again_and_nothing_is_lost(tmp_path):
    db = str(tmp_path / "f.db")
    pool = FakeIpPool("100.96.0.0/11", db)
    first = pool.allocate("first.test", "p1")
    pool.flush()
    writer = pool._store.proc
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(10)
    second = pool.allocate("second.test", "p1")
    with pytest.raises(StoreWriteError, match="writer process ended"):
        pool.flush()
    assert pool.unsaved() == 1
    time.sleep(storewriter.RESTART_PAUSE)
    pool.flush()  # a new writer process
    assert pool._store.proc.pid != writer.pid
    assert rows(db) == {int(fakeip.ipaddress.IPv4Address(first)): ("first.test", "p1"),
                        int(fakeip.ipaddress.IPv4Address(second)): ("second.test", "p1")}
    pool.close()
    assert pool._store.proc is None  # closed: the process exited (close waits for it)


def test_a_store_the_writer_cannot_open_fails_batches_without_restarting_it(tmp_path):
    """The data directory is gone for a while (unmounted): each batch fails with SQLite's
    error from the same writer process, and the first batch after it is back writes all."""
    home = tmp_path / "data"
    home.mkdir()
    db = str(home / "f.db")
    pool = FakeIpPool("100.96.0.0/11", db)  # this process's connection opens it; the writer not yet
    ip = pool.allocate("a.test", "p1")
    home.rename(tmp_path / "away")
    try:
        writers = set()
        for _ in range(3):
            with pytest.raises(StoreWriteError, match="unable to open"):
                pool.flush()
            writers.add(pool._store.proc.pid)
        assert len(writers) == 1 and pool.unsaved() == 1
    finally:
        (tmp_path / "away").rename(home)
    pool.flush()
    assert rows(db) == {int(fakeip.ipaddress.IPv4Address(ip)): ("a.test", "p1")}
    pool.close()


def owner(db: str, on_term: str = "", new_session: bool = False) -> subprocess.Popen:
    """A process that owns a pool on `db` (as the DNS server does), with a flushed mapping;
    `on_term`: the body of its SIGTERM handler. Its first line out is its writer's pid."""
    script = (
        "import signal, sys, time\n"
        "from appliance.services.dns.fakeip import FakeIpPool\n"
        f"pool = FakeIpPool('100.96.0.0/11', {db!r})\n"
        "pool.allocate('first.test', 'p1'); pool.flush()\n"
        + (f"def stop(*_):\n{on_term}signal.signal(signal.SIGTERM, stop)\n" if on_term else "")
        + "print(pool._store.proc.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            start_new_session=new_session)


def test_the_writer_process_ends_with_the_dns_server_process(tmp_path):
    """SIGKILL of the process that owns the pool leaves no writer process behind."""
    proc = owner(str(tmp_path / "f.db"))
    try:
        writer = int(proc.stdout.readline())
        processes = LinuxProcesses()
        assert processes.alive(writer)
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 10
        while processes.alive(writer) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not processes.alive(writer)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_a_stop_signalled_to_the_whole_group_still_closes_the_store_cleanly(tmp_path):
    """The supervisor stops a service with SIGTERM to its process group: the writer
    process outlives it long enough to commit the server's last batch."""
    db = str(tmp_path / "f.db")
    proc = owner(db, new_session=True, on_term=(
        "    pool.allocate('last.test', 'p1')  # answered just before the stop: unsaved\n"
        "    pool.close(); sys.exit(0)\n"))
    try:
        int(proc.stdout.readline())
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
    after = FakeIpPool("100.96.0.0/11", db)
    try:
        assert after.epoch == 0  # closed cleanly: new names stay in the same region
        assert {e["domain"] for e in after.table()} == {"first.test", "last.test"}
    finally:
        after.close()


def test_last_used_times_reach_the_store(tmp_path):
    db = str(tmp_path / "f.db")
    clock = [100.0]
    pool = FakeIpPool("100.96.0.0/11", db, clock=lambda: clock[0])
    ip = pool.allocate("a.test")
    pool.flush()
    clock[0] = 200.0
    pool.touch(ip)
    pool.write_behind(last_used=False)  # a mapping batch: last-used times wait
    pool.flush()  # clean shutdown writes them
    con = sqlite3.connect(db)
    assert con.execute("SELECT last_used FROM fakeip").fetchone()[0] == 200.0
    con.close()
    pool.close()


def test_fake_ipv6_addresses_are_the_ipv4_ones_twins():
    from appliance.services.dns.fakeip import twin4, twin6
    assert twin6("100.96.1.2", "100.96.0.0/11", "2001:2::/48") == "2001:2::102"
    assert twin4("2001:2::102", "100.96.0.0/11", "2001:2::/48") == "100.96.1.2"
    assert twin4("2001:2::1:0:0", "100.96.0.0/11", "2001:2::/48") is None  # beyond the IPv4 pool


def crash(pool):
    """The process dies: whatever was not committed is gone, the store is not marked closed."""
    pool._writer.shutdown(wait=True)
    pool._store.close()
    pool._db.close()
    pool._db = None


def region_of(pool, ip: str) -> int:
    size = pool._size // pool.regions
    return (int(fakeip.ipaddress.IPv4Address(ip)) - pool._first) // size


def test_a_clean_restart_keeps_the_epoch_and_a_name_gets_its_address_again(tmp_path):
    db = str(tmp_path / "f.db")
    pool = FakeIpPool("100.96.0.0/11", db)
    first = pool.allocate("a.test")
    pool.close()
    again = FakeIpPool("100.96.0.0/11", db)
    assert again.epoch == 0 and again.lookup_domain("a.test").ip == first
    again.forget_unpinned()
    assert again.allocate("a.test") == first  # the hash, in the same region
    again.close()


def test_after_a_crash_a_lost_address_is_never_given_to_another_name(tmp_path):
    db = str(tmp_path / "f.db")
    pool = FakeIpPool("100.96.0.0/11", db, batch=10_000)
    kept = pool.allocate("kept.test")
    pool.flush()
    lost = [pool.allocate(f"lost{i}.test") for i in range(50)]  # handed to clients, never committed
    crash(pool)
    again = FakeIpPool("100.96.0.0/11", db)
    assert again.regions == fakeip.REGIONS and again.epoch == 1
    # What was committed keeps its address; what was lost is unknown: the relay refuses it at once.
    assert again.lookup_domain("kept.test").ip == kept
    assert all(again.lookup_ip(ip) is None for ip in lost)
    # The lost names, asked again, and many new ones, get addresses of the new epoch's region only.
    new = [again.allocate(f"lost{i}.test") for i in range(50)] + [again.allocate(f"n{i}.test") for i in range(5000)]
    assert not set(new) & set(lost)
    assert {region_of(again, ip) for ip in new} == {1} and {region_of(again, ip) for ip in lost} == {0}
    again.close()
    # A clean restart after that keeps epoch 1.
    assert FakeIpPool("100.96.0.0/11", db).epoch == 1


def test_a_small_pool_is_one_region(tmp_path):
    pool = FakeIpPool("10.9.0.0/24", str(tmp_path / "f.db"))
    assert pool.regions == 1
    crash(pool)
    again = FakeIpPool("10.9.0.0/24", str(tmp_path / "f.db"))
    assert again.epoch == 1 and again.allocate("x.test") in again
    again.close()


def names_hashing_onto(pool, ip: str, count: int, skip: str) -> list[str]:
    """Other names whose first candidate is `ip` (they would take it if it were free)."""
    key = int(fakeip.ipaddress.IPv4Address(ip))
    out, i = [], 0
    while len(out) < count:
        name = f"other{i}.test"
        if name != skip and next(pool._candidates(name)) == key:
            out.append(name)
        i += 1
    return out


def test_a_flushed_address_is_never_given_to_another_name(tmp_path):
    # A client still holding a flushed address must fail, not reach another site.
    clock = [1000.0]
    pool = FakeIpPool("10.9.0.0/24", str(tmp_path / "f.db"), clock=lambda: clock[0])
    held = pool.allocate("video.test")
    pool.forget_unpinned()
    rivals = names_hashing_onto(pool, held, 3, skip="video.test")
    assert all(pool.allocate(name) != held for name in rivals)
    assert pool.lookup_ip(held) is None
    # Its own name, asked again, gets it back: the client holding it reaches the same site.
    assert pool.allocate("video.test") == held


def test_the_quarantine_survives_a_restart_and_ends_after_retire_for(tmp_path):
    db = str(tmp_path / "f.db")
    clock = [1000.0]
    pool = FakeIpPool("10.9.0.0/24", db, clock=lambda: clock[0])
    held = pool.allocate("video.test")
    pool.forget_unpinned()
    pool.close()
    again = FakeIpPool("10.9.0.0/24", db, clock=lambda: clock[0])
    rival = names_hashing_onto(again, held, 1, skip="video.test")[0]
    assert again.allocate(rival) != held
    clock[0] += fakeip.RETIRE_FOR + 1
    later = names_hashing_onto(again, held, 2, skip="video.test")[1]
    assert again.allocate(later) == held  # quarantine over: the address serves again
    again.close()


def test_a_flush_is_committed_whole_forgotten_and_quarantined_in_one_transaction(tmp_path):
    db = str(tmp_path / "f.db")
    pool = FakeIpPool("10.9.0.0/24", db, batch=10_000)
    held = pool.allocate("video.test")
    pool.flush()
    pool._writer.submit(lambda: None).result()
    pool.forget_unpinned()
    pool._inflight[0].result()  # the flush's batch: deletes and quarantine in one transaction
    crash(pool)
    con = sqlite3.connect(db)
    try:
        assert con.execute("SELECT domain FROM retired WHERE ip = ?",
                           (int(fakeip.ipaddress.IPv4Address(held)),)).fetchone() == ("video.test",)
        assert con.execute("SELECT count(*) FROM fakeip").fetchone() == (0,)
    finally:
        con.close()


def test_when_every_candidate_is_quarantined_the_oldest_is_taken(tmp_path):
    clock = [1000.0]
    pool = FakeIpPool("10.9.0.0/29", None, clock=lambda: clock[0])  # 6 addresses
    first = [pool.allocate(f"n{i}.test") for i in range(6)]
    pool.forget_unpinned()
    clock[0] += 1
    assert pool.allocate("new.test") in first  # a full pool of quarantine still answers
