"""dns.kernel_cache: the kernel's answers against the server's, in namespaces, on the real kernel.

    cli (192.168.78.11) --veth-- vp0 in "vp" (192.168.78.2: the DNS server, the program at
                                 tc ingress of vp0, nftables REDIRECT of DNS to the gateway)
                                 up0 -- "up" (192.168.78.1 = the modem: a small authoritative
                                        server with A, AAAA, CNAME chains, NXDOMAIN/NODATA + SOA)

The client asks the gateway 192.168.78.1 with vp0's MAC (a static neighbour
entry stands for the vswitch's MAC rewrite), as the box's home does.

The same question is answered three ways and compared byte for byte
(TTLs aside): by the server from upstream (first time), by the kernel
(second time), by the server's cache (the same question with the DO bit,
which the kernel sends up and the server answers without looking at it).
"""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[4]
GW, VP, CLI = "192.168.78.1", "192.168.78.2", "192.168.78.11"
TAG = f"{os.getpid() % 10000}{random.randint(0, 0xfff):03x}"
NS = {k: f"kc-{TAG}-{k}" for k in ("cli", "vp", "up")}

UPSTREAM = r'''
import socket, sys
import dns.message, dns.rrset, dns.rcode, dns.flags
SOA = dns.rrset.from_text("test.", 600, "IN", "SOA", "ns.test. admin.test. 1 3600 600 86400 120")
ZONE = {
    ("www.a.test", "A"): [("www.a.test", 300, "A", "203.0.113.1"), ("www.a.test", 300, "A", "203.0.113.2")],
    ("www.a.test", "AAAA"): [("www.a.test", 300, "AAAA", "2001:db8::1")],
    ("alias.test", "A"): [("alias.test", 300, "CNAME", "mid.test."), ("mid.test", 200, "CNAME", "www.a.test."),
                          ("www.a.test", 300, "A", "203.0.113.1")],
    ("alias.test", "CNAME"): [("alias.test", 300, "CNAME", "mid.test.")],
    ("short.test", "A"): [("short.test", 2, "A", "203.0.113.9")],
    ("many.test", "A"): [("many.test", 300, "A", f"198.51.100.{i}") for i in range(1, 21)],
}
for i in range(20):
    ZONE[(f"n{i}.test", "A")] = [(f"n{i}.test", 100 + i, "A", f"198.51.100.{100 + i}")]
KNOWN = {name for name, _ in ZONE}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
while True:
    data, addr = s.recvfrom(4096)
    try:
        q = dns.message.from_wire(data)
    except Exception:
        continue
    r = dns.message.make_response(q)
    r.flags |= dns.flags.AA
    name = q.question[0].name.to_text().rstrip(".").lower()
    rtype = dns.rdatatype.to_text(q.question[0].rdtype)
    records = ZONE.get((name, rtype))
    if records:
        for owner, ttl, t, value in records:
            r.answer.append(dns.rrset.from_text(owner + ".", ttl, "IN", t, value))
    else:
        if name not in KNOWN:
            r.set_rcode(dns.rcode.NXDOMAIN)
        r.authority.append(SOA)
    s.sendto(r.to_wire(), addr)
'''

CLIENT = r'''
import socket, sys, json
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect((sys.argv[1], 53))
out = []
for line in sys.stdin:
    s.send(bytes.fromhex(line.strip()))
    try:
        out.append(s.recv(4096).hex())
    except socket.timeout:
        out.append(None)
print(json.dumps(out))
'''


def sh(*args, ns=None, check=True, timeout=30, input=None):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + [str(a) for a in args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout


def poll(fn, timeout=10.0, every=0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {fn}")
        time.sleep(every)


def query(name: str, qtype: int, qid: int = 0x1234, edns: bool = True, do: bool = False,
          rd: bool = True) -> bytes:
    wire = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    head = struct.pack(">HHHHHH", qid, 0x0100 if rd else 0, 1, 0, 0, 1 if edns else 0)
    opt = b"\0" + struct.pack(">HHIH", 41, 1232, 0x8000 if do else 0, 0) if edns else b""
    return head + wire + struct.pack(">HH", qtype, 1) + opt


def ttl_free(wire: bytes) -> tuple[bytes, list[int]]:
    """The answer with every record TTL zeroed (OPT's flags kept), and the TTLs."""
    import dns.message

    message = dns.message.from_wire(wire)
    ttls = [rrset.ttl for section in (message.answer, message.authority, message.additional)
            for rrset in section]
    buf = bytearray(wire)
    pos = 12
    from appliance.services.dns.wire import _skip_name, question_end

    pos = question_end(wire)
    an, ns, ar = struct.unpack(">HHH", wire[6:12])
    for _ in range(an + ns + ar):
        pos = _skip_name(wire, pos, len(wire))
        rtype, _, _, rdlen = struct.unpack(">HHIH", wire[pos:pos + 10])
        if rtype != 41:
            buf[pos + 4:pos + 8] = b"\0\0\0\0"
        pos += 10 + rdlen
    return bytes(buf), ttls


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root for namespaces and BPF")
    tmp = tmp_path_factory.mktemp("kc")
    procs = {}
    try:
        for ns in NS.values():
            sh("ip", "netns", "add", ns)
        vp = NS["vp"]
        sh("ip", "link", "add", "vp0", "netns", vp, "type", "veth", "peer", "name", "eth0", "netns", NS["cli"])
        sh("ip", "link", "add", "up0", "netns", vp, "type", "veth", "peer", "name", "eth0", "netns", NS["up"])
        for ns, dev, addr in ((vp, "vp0", f"{VP}/24"), (NS["cli"], "eth0", f"{CLI}/24"),
                              (NS["up"], "eth0", f"{GW}/24")):
            sh("ip", "addr", "add", addr, "dev", dev, ns=ns)
        for ns, dev in ((vp, "vp0"), (vp, "up0"), (NS["cli"], "eth0"), (NS["up"], "eth0"),
                        (vp, "lo"), (NS["cli"], "lo"), (NS["up"], "lo")):
            sh("ip", "link", "set", dev, "up", ns=ns)
        sh("ip", "route", "add", f"{GW}/32", "dev", "up0", ns=vp)
        vp_mac = sh("cat", "/sys/class/net/vp0/address", ns=vp).strip()
        sh("ip", "neigh", "replace", GW, "lladdr", vp_mac, "dev", "eth0", "nud", "permanent", ns=NS["cli"])
        nft = tmp / "redirect.nft"
        nft.write_text("table ip kc {\n chain prerouting {\n"
                       "  type nat hook prerouting priority dstnat; policy accept;\n"
                       f"  iifname \"vp0\" ip daddr {GW} udp dport 53 redirect to :53\n }}\n}}\n")
        sh("nft", "-f", nft, ns=vp)
        (tmp / "upstream.py").write_text(UPSTREAM)
        procs["up"] = subprocess.Popen(["ip", "netns", "exec", NS["up"], sys.executable,
                                        str(tmp / "upstream.py"), GW])
        (tmp / "client.py").write_text(CLIENT)
        yield {"tmp": tmp, "procs": procs}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for ns in NS.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


class Server:
    def __init__(self, lab, name: str, workers: int, **extra):
        self.tmp = lab["tmp"] / name
        self.tmp.mkdir()
        self.sock = str(self.tmp / "dns.sock")
        self.doc = {
            "listen": ["0.0.0.0:53"],
            "upstreams": [{"url": f"udp://{GW}"}],
            "control_socket": self.sock,
            "lists_dir": str(self.tmp),
            "fake_ip": {"db_path": str(self.tmp / "fake.db")},
            "workers": workers,
            "kernel_cache": "on",
            "kernel_cache_device": "vp0",
            "kernel_cache_answer_as": [f"{GW}/32"],
            **extra,
        }
        self.config = self.tmp / "dns.yaml"
        self.config.write_text(yaml.safe_dump(self.doc))
        self.log = open(self.tmp / "log", "w")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", NS["vp"], sys.executable, "-m", "appliance.services.dns",
             "--config", str(self.config)], cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        poll(lambda: os.path.exists(self.sock) and self._stats_or_none(), timeout=20)
        if workers > 1:
            poll(lambda: len(self.stats()["workers"]) == workers - 1, timeout=20)

    def _stats_or_none(self):
        try:
            return self.stats()
        except OSError:
            return None

    def stats(self) -> dict:
        from appliance.services.dns.control import DnsControl

        with DnsControl(self.sock) as c:
            return c.stats()

    def kernel(self) -> dict:
        return self.stats()["kernel_cache"]

    def reload(self, **changes) -> None:
        self.doc.update(changes)
        self.config.write_text(yaml.safe_dump(self.doc))
        before = self.stats()["reloads"]
        self.proc.send_signal(signal.SIGHUP)
        poll(lambda: self.stats()["reloads"] > before)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def ask(lab, *queries: bytes) -> list[bytes | None]:
    out = sh(sys.executable, lab["tmp"] / "client.py", GW, ns=NS["cli"],
             input="".join(q.hex() + "\n" for q in queries))
    return [bytes.fromhex(a) if a else None for a in json.loads(out)]


def hits(server) -> int:
    return server.kernel()["hits"]


@pytest.fixture(params=[1, 2], ids=["one process", "two processes"])
def server(lab, request):
    srv = Server(lab, f"srv{request.param}-{random.randint(0, 1 << 30)}", request.param)
    try:
        yield srv
    finally:
        srv.stop()
    # Nothing left on the device once the server is gone.
    assert programs_on_vp0() == 0


CORPUS = [
    ("www.a.test", 1), ("WWW.A.Test", 1), ("www.a.test", 28), ("alias.test", 1), ("alias.test", 5),
    ("missing.test", 1), ("www.a.test", 16), ("many.test", 1),
    *[(f"n{i}.test", 1) for i in range(8)],
]


def test_kernel_answers_are_the_servers_byte_for_byte(server, lab):
    assert server.kernel()["status"].startswith("on"), server.kernel()
    for edns in (True, False):
        for number, (name, qtype) in enumerate(CORPUS):
            qid = 0x4000 + number
            before = hits(server)
            first, = ask(lab, query(name, qtype, qid, edns=edns))
            assert first is not None, name
            # The entry is written after the answer went out: ask until the kernel answers.
            kernel = poll(lambda: (a := ask(lab, query(name, qtype, qid, edns=edns))[0])
                          and hits(server) > before and a, timeout=5)
            served = before_do = None
            if edns:
                before_do = hits(server)
                served, = ask(lab, query(name, qtype, qid, edns=True, do=True))
                assert hits(server) == before_do, "a DO query is the server's"
            first_bytes, first_ttls = ttl_free(first)
            kernel_bytes, kernel_ttls = ttl_free(kernel)
            assert kernel_bytes == first_bytes, (name, qtype, first.hex(), kernel.hex())
            assert all(0 <= f - k <= 1 for f, k in zip(first_ttls, kernel_ttls)), (first_ttls, kernel_ttls)
            if served is not None:
                assert ttl_free(served)[0] == kernel_bytes


def test_ttls_count_down_and_an_expired_entry_goes_to_the_server(server, lab):
    name = "n10.test"
    first, = ask(lab, query(name, 1))
    ttl = ttl_free(first)[1][0]
    before = hits(server)
    poll(lambda: ask(lab, query(name, 1)) and hits(server) > before, timeout=5)
    time.sleep(2.2)
    before = hits(server)
    later, = ask(lab, query(name, 1))
    assert hits(server) == before + 1
    assert ttl - 3 <= ttl_free(later)[1][0] <= ttl - 2
    # The kernel's answers are counted per client and per name (the stats, not the query log).
    kernel = server.kernel()
    assert dict(kernel["top_clients"])[CLI] >= 2
    assert any(n["name"] == name and n["qtype"] == 1 and n["hits"] >= 2 for n in kernel["top_names"])

    # short.test lives 2 seconds: after that the kernel sends it up, the server asks upstream.
    first, = ask(lab, query("short.test", 1))
    before = hits(server)
    poll(lambda: ask(lab, query("short.test", 1)) and hits(server) > before, timeout=5)
    expired = server.kernel()["expired"]
    time.sleep(2.2)
    again, = ask(lab, query("short.test", 1))
    assert again is not None and ttl_free(again)[1] == [2]  # a new answer from upstream
    assert server.kernel()["expired"] == expired + 1


def test_a_policy_change_stops_the_kernel_answers(server, lab):
    before = hits(server)
    ask(lab, query("www.a.test", 1))
    poll(lambda: ask(lab, query("www.a.test", 1)) and hits(server) > before, timeout=5)
    server.reload(rules=[{"match": "exact", "value": "www.a.test", "then": {"action": "block"}}])
    before = hits(server)
    blocked, = ask(lab, query("www.a.test", 1))
    assert struct.unpack(">H", blocked[2:4])[0] & 0xF == 3  # NXDOMAIN: the block, not the old answer
    assert hits(server) == before


def test_unusual_queries_go_to_the_server(server, lab):
    before = hits(server)
    ask(lab, query("www.a.test", 1))
    poll(lambda: ask(lab, query("www.a.test", 1)) and hits(server) > before, timeout=5)
    base = query("www.a.test", 1, edns=False)
    compressed = base[:12] + b"\x03www\xc0\x10" + base[-4:]       # a pointer in the question
    truncated = base[:-3]
    with_tc = base[:2] + b"\x03\x00" + base[4:]
    two_questions = base[:4] + b"\x00\x02" + base[6:] + base[12:]
    opt_option = (query("www.a.test", 1)[:-2] + b"\x00\x04" + b"\x00\x0a\x00\x00")  # a cookie-ish option
    before = hits(server)
    ask(lab, compressed, truncated, with_tc, two_questions, opt_option)
    assert hits(server) == before


def programs_on_vp0() -> int:
    """Programs at ingress of vp0: tcx links and clsact filters."""
    from appliance.kernel.setns import in_netns
    from appliance.kernel.tc import LinuxTc

    def count():
        import socket

        index = socket.if_nametoindex("vp0")
        tc = LinuxTc()
        tcx = len(tc.tcx_programs(None, index)) if tc.tcx_supported() else 0
        return tcx + len(tc.filters(None, index))

    return in_netns(NS["vp"], count)


def test_turned_off_by_a_reload_the_program_leaves_the_device(server, lab):
    before = hits(server)
    ask(lab, query("www.a.test", 1))
    poll(lambda: ask(lab, query("www.a.test", 1)) and hits(server) > before, timeout=5)
    assert programs_on_vp0() == 1
    server.reload(kernel_cache="off")
    assert server.kernel() == {"status": "off"}
    answer, = ask(lab, query("www.a.test", 1))
    assert answer is not None and ttl_free(answer)[1]  # the server answers it
    assert programs_on_vp0() == 0


def _address(wire: bytes) -> str | None:
    import dns.message

    for rrset in dns.message.from_wire(wire).answer:
        for item in rrset:
            return item.to_text()
    return None


@pytest.mark.parametrize("workers", [1, 2], ids=["one process", "two processes"])
def test_fake_addresses_are_replayed_until_the_pool_recycles_or_forgets_them(lab, workers):
    """A fake address the server gave is the kernel's answer too, byte for byte, and stops
    being the moment the pool gives that name's address up: a recycle (the pool is full) or a
    flush. After that the server answers, with the name's address of now."""
    server = Server(lab, f"fake{workers}-{random.randint(0, 1 << 30)}", workers,
                    rules=[{"match": "suffix", "value": "fake.test", "then": {"action": "fake-ip"}}],
                    fake_ip={"db_path": str(lab["tmp"] / f"fake{workers}-{random.randint(0, 1 << 30)}.db"),
                             "max_entries": 2})
    try:
        def kernel_answer(name: str, qtype: int = 1) -> bytes:
            first, = ask(lab, query(name, qtype))
            assert first is not None, name
            before = hits(server)
            again = poll(lambda: (a := ask(lab, query(name, qtype))[0]) and hits(server) > before
                         and a, timeout=5)
            assert again == first, (name, first.hex(), again.hex())  # the TTL is fixed: every byte
            return first

        a_old = _address(kernel_answer("a.fake.test"))
        assert a_old.startswith("100.")
        kernel_answer("b.fake.test")
        # A third name recycles the least recently used mapping: a.fake.test's.
        third, = ask(lab, query("c.fake.test", 1))
        assert _address(third).startswith("100.")
        before = hits(server)
        a_now, = ask(lab, query("a.fake.test", 1))
        assert hits(server) == before, "the kernel replayed a recycled address"
        with_server = {e["domain"]: e["ip"] for e in _fake_table(server)}
        assert _address(a_now) == with_server["a.fake.test"]

        before = hits(server)
        poll(lambda: ask(lab, query("a.fake.test", 1)) and hits(server) > before, timeout=5)
        from appliance.services.dns.control import DnsControl

        with DnsControl(server.sock) as c:
            c.flush_fake_ips()
        before = hits(server)
        after_flush, = ask(lab, query("a.fake.test", 1))
        assert hits(server) == before, "the kernel replayed a flushed address"
        assert after_flush is not None
    finally:
        server.stop()
    assert programs_on_vp0() == 0


def _fake_table(server) -> list[dict]:
    from appliance.services.dns.control import DnsControl

    with DnsControl(server.sock) as c:
        return c.fake_ip_table()
