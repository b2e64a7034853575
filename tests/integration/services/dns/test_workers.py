"""The DNS server with a worker process beside it (`workers: 2`), on loopback.

What a user would notice if the processes did not behave as one server: an
answer cached by one process missing when the upstream is down and the
query comes from another source port; a fake-IP name getting two
addresses; queries missing from the query log; a worker that died taking
its share of answers with it; a reload one process never saw.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dns.message
import dns.rcode
import pytest
import yaml

from tests.support.ports import free_port


ROOT = Path(__file__).resolve().parents[4]


def ask(port, name, rtype="A", timeout=2.0):
    """One query from a fresh socket (a new source port), as stub resolvers do."""
    q = dns.message.make_query(name, rtype)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(q.to_wire(), ("127.0.0.1", port))
        return dns.message.from_wire(s.recv(65535))


def addresses(answer):
    return [rd.address for rrset in answer.answer for rd in rrset]


def poll(check, what, seconds=10):
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture
def upstream(tmp_path):
    port = free_port()
    args = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            "--bind-interfaces", "--listen-address=127.0.0.1", f"--port={port}", "--user=root",
            "--local=/test/", "--local-ttl=300", f"--pid-file={tmp_path}/up.pid",
            *(f"--host-record=n{i}.test,198.51.100.{i}" for i in range(1, 61))]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield proc, port
    if proc.poll() is None:
        proc.terminate()
        proc.wait(5)


class Server:
    def __init__(self, tmp, upstream_port):
        self.tmp = tmp
        self.port = free_port()
        self.sock = str(tmp / "dns.sock")
        self.doc = {
            "listen": [f"127.0.0.1:{self.port}"], "workers": 2,
            "upstreams": [{"url": f"udp://127.0.0.1:{upstream_port}", "timeout": 0.5}],
            "cache": {"servfail_after": 1.0},
            "control_socket": self.sock,
            "fake_ip": {"db_path": str(tmp / "fakeip.sqlite3")},
            "series_file": str(tmp / "series" / "dns.sqlite"),
            "query_log": {"dir": str(tmp / "querylog")},
            "rules": [{"match": "suffix", "value": "video.test", "then": {"action": "fake-ip"}}],
        }
        self.path = tmp / "dns.yaml"
        self.path.write_text(yaml.safe_dump(self.doc))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance.services.dns", "--config", str(self.path),
             "--log-level", "INFO"], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=open(tmp / "dns.log", "a"), text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("ready"), (tmp / "dns.log").read_text()[-2000:]

    def control(self):
        from appliance.services.dns.control import DnsControl
        return DnsControl(self.sock)

    def stats(self):
        with self.control() as c:
            return c.stats()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


@pytest.fixture
def server(tmp_path, upstream):
    srv = Server(tmp_path, upstream[1])
    workers = []
    try:
        yield srv
        workers = [w["pid"] for w in srv.stats()["workers"]]
    finally:
        srv.stop()
    # A clean stop of the main process ends its workers too.
    for pid in workers:
        poll(lambda: not _is_worker(pid), f"worker {pid} outlived the main process")


def _is_worker(pid):
    try:
        return b"appliance.services.dns.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _has_exited(pid):
    """Dead with its files closed (its socket out of the group), not only dying.

    A dying process loses its memory (an empty /proc cmdline) before its files;
    it is a zombie, or gone, only after both."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_both_processes_answer_and_the_log_has_every_query(server):
    names = [f"n{i}.test" for i in range(1, 41)]
    for name in names:
        assert ask(server.port, name).rcode() == dns.rcode.NOERROR
    stats = poll(lambda: (s := server.stats())["queries_total"] >= 40 and s["workers"] and s,
                 "the worker's log entries never reached the main process")
    assert stats["processes"] == 2 and len(stats["workers"]) == 1
    by_worker = stats["workers"][0]["fast"] + stats["workers"][0]["slow"]
    total = stats["fast_path_answers"] + stats["slow_path_answers"]
    assert 0 < by_worker < total  # each process answered its share of the names
    with server.control() as c:
        logged = {row["qname"] for row in c.query_log(limit=1000)}
    assert set(names) <= logged


def test_every_processs_answers_are_counted_per_minute_and_written_to_disk(server):
    from appliance.services.dns import querydisk
    from appliance.services.timeseries import MINUTE, Series

    names = [f"n{i}.test" for i in range(1, 41)]
    for name in names:
        assert ask(server.port, name).rcode() == dns.rcode.NOERROR
    poll(lambda: server.stats()["workers"] and server.stats()["queries_total"] >= 40, "log entries missing")
    logged = {e[2] for e in querydisk.search(str(server.tmp / "querylog"), limit=1000)}
    assert set(names) <= logged

    def counted():
        store = Series(str(server.tmp / "series" / "dns.sqlite"), readonly=True)
        try:
            return sum(v for _, v in store.read("dns.queries", MINUTE, 0))
        finally:
            store.close()
    poll(lambda: counted() >= 40, "the answers never reached the series file", seconds=25)
    assert server.stats()["workers"][0]["fast"] + server.stats()["workers"][0]["slow"] > 0  # both answered


def test_a_name_is_answered_by_one_process_so_its_cache_serves_every_source_port(server, upstream):
    names = [f"n{i}.test" for i in range(1, 41)]
    for name in names:
        assert addresses(ask(server.port, name))
    upstream[0].terminate()
    upstream[0].wait(5)
    # Each name again, three times from new source ports: whichever port, the
    # process that cached it answers (otherwise about half would be SERVFAIL).
    for name in names:
        for _ in range(3):
            answer = ask(server.port, name)
            assert answer.rcode() == dns.rcode.NOERROR and addresses(answer), name


def test_fake_ips_come_from_one_pool_whichever_process_is_asked(server):
    names = [f"host{i}.video.test" for i in range(60)]
    first = {name: addresses(ask(server.port, name))[0] for name in names}
    assert len(set(first.values())) == len(names)  # no address for two names
    for name in names:
        assert addresses(ask(server.port, name)) == [first[name]]  # the same one, always
    with server.control() as c:
        for name, ip in first.items():
            assert c.lookup_fake_ip(ip)["domain"] == name


def test_a_killed_worker_is_started_again_and_answers(server):
    pid = poll(lambda: server.stats()["workers"] and server.stats()["workers"][0]["pid"],
               "no worker reported")
    os.kill(pid, signal.SIGKILL)
    poll(lambda: _has_exited(pid), "the killed worker is still there")
    # Meanwhile the main process answers every name (the dead worker's socket left the group;
    # a query that reached it in its last moment is lost, as any UDP query may be).
    for i in range(1, 21):
        assert ask(server.port, f"n{i}.test").rcode() == dns.rcode.NOERROR
    poll(lambda: any(w["pid"] != pid for w in server.stats()["workers"]),
         "the worker was not started again")
    before = server.stats()["workers"][0]
    for i in range(21, 61):
        assert ask(server.port, f"n{i}.test").rcode() == dns.rcode.NOERROR
    poll(lambda: server.stats()["workers"][0]["slow"] > before["slow"],
         "the new worker never answered")


def test_a_reload_reaches_every_process(server):
    names = [f"n{i}.test" for i in range(1, 41)]
    doc = dict(server.doc, rules=server.doc["rules"] + [
        {"match": "suffix", "value": "test", "then": {"action": "block"}}])
    server.path.write_text(yaml.safe_dump(doc))
    server.proc.send_signal(signal.SIGHUP)
    # Every name (they hash to both processes) is blocked once the reload is in.
    for name in names:
        poll(lambda: ask(server.port, name).rcode() == dns.rcode.NXDOMAIN, f"{name} not blocked")


def test_the_kernel_steers_by_name_as_steer_index_says():
    """The classic BPF program on the SO_REUSEPORT group picks the socket
    `steer.index` computes: the same one for a name in any letter case, with
    or without EDNS, from any source port."""
    from appliance.services.dns import steer

    port = free_port()
    group = []
    try:
        for i in range(3):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if i == 0:
                steer.attach(s, 3)
            s.bind(("127.0.0.1", port))
            s.settimeout(2)
            group.append(s)
        chosen = {}
        for i in range(120):
            name = ["n{}.example.test", "WWW.Host{}.Example.COM", "a{}.b"][i % 3].format(i // 6)
            q = dns.message.make_query(name, "A", use_edns=[None, 0][i % 2]).to_wire()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
                c.sendto(q, ("127.0.0.1", port))
            expected = steer.index(q, 3)
            assert group[expected].recv(4096) == q  # the predicted socket has it...
            chosen.setdefault(name.lower(), set()).add(expected)
        assert all(len(s) == 1 for s in chosen.values())  # ...and one name, one socket
        assert len(set().union(*chosen.values())) == 3  # names spread over all three
    finally:
        for s in group:
            s.close()
