"""dns.kernel_cache: the kernel's answers against the server's, in namespaces, on the real kernel
(the home of `tests/support/kclab.py`).

The same question is answered three ways and compared byte for byte
(TTLs aside): by the server from upstream (first time), by the kernel
(second time), by the server's cache (the same question with the DO bit,
which the kernel sends up and the server answers without looking at it).
"""

from __future__ import annotations

import os
import random
import struct
import time

import pytest

from tests.support.kclab import CLI, NS, Server, ask, hits, kc_lab, poll, query


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
    with kc_lab(tmp_path_factory.mktemp("kc")) as lab:
        yield lab


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
        # The recycle takes a.fake.test's answers out of the kernel, no other name's.
        before = hits(server)
        assert ask(lab, query("b.fake.test", 1))[0] is not None
        assert hits(server) == before + 1, "a recycle took another name's kernel answer too"
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


def test_a_name_asked_once_is_not_written_to_the_kernel(lab):
    """A burst of names each asked once (a page's third-party names, a scan) costs no map
    write and pushes nothing out of the kernel's LRU: a name, forwarded or faked, is written
    when it is asked again, and answered by the kernel from then on."""
    server = Server(lab, f"once-{random.randint(0, 1 << 30)}", 1,
                    rules=[{"match": "suffix", "value": "fake.test", "then": {"action": "fake-ip"}}],
                    fake_ip={"db_path": str(lab["tmp"] / f"once-{random.randint(0, 1 << 30)}.db")})
    try:
        fills = server.kernel()["fills"]
        for name in ("n15.test", "once.fake.test"):
            assert ask(lab, query(name, 1))[0] is not None, name
        for name in ("n16.test", "twice.fake.test"):
            first, = ask(lab, query(name, 1))
            assert first is not None, name
            before = hits(server)
            poll(lambda: ask(lab, query(name, 1)) and hits(server) > before, timeout=5)
        # One process answers in order: the names asked once were served before these.
        assert server.kernel()["fills"] == fills + 2
    finally:
        server.stop()


def _fake_table(server) -> list[dict]:
    from appliance.services.dns.control import DnsControl

    with DnsControl(server.sock) as c:
        return c.fake_ip_table()
