"""The kernel cache's program on its own, in the real kernel (BPF_PROG_TEST_RUN): hostile
queries never get an answer the server would not give, and the tc clsact fallback (6.1)
attaches and leaves nothing behind."""

from __future__ import annotations

import os
import random
import socket
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

from appliance.services.dns.kernel_cache import KernelCache
from appliance.services.dns.wire import parse_query, prepare, render, opt_record

TC_ACT_OK, TC_ACT_REDIRECT = 0, 7
CLIENT, GW = "192.168.79.11", "192.168.79.1"
CLIENT6, MODEM6, FAKE6 = "2001:db8:79::11", "fe80::1", "2001:db8:7e::/64"
TAG = f"{os.getpid() % 10000}{random.randint(0, 0xfff):03x}"


def frame(dns: bytes, src=CLIENT, dst=GW, sport=40000, dport=53) -> bytes:
    udp = struct.pack(">HHHH", sport, dport, 8 + len(dns), 0) + dns
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return b"\x02\0\0\0\0\x01" + b"\x02\0\0\0\0\x02" + b"\x08\x00" + ip + udp


def frame6(dns: bytes, src=CLIENT6, dst=MODEM6, sport=40000, dport=53, next_header=17) -> bytes:
    udp = struct.pack(">HHHH", sport, dport, 8 + len(dns), 0) + dns
    ip = struct.pack(">IHBB16s16s", 6 << 28 | 0x12345, len(udp), next_header, 255,
                     socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst))
    return b"\x02\0\0\0\0\x01" + b"\x02\0\0\0\0\x02" + b"\x86\xdd" + ip + udp


def ones_complement(data: bytes) -> int:
    data += b"\0" * (len(data) & 1)
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xffff) + (total >> 16)
    return total


def udp_checksum_ok(out: bytes) -> bool:
    """What the client's stack checks before the answer reaches dig."""
    if out[12:14] == b"\x86\xdd":
        src, dst, udp = out[22:38], out[38:54], out[54:]
    else:
        src, dst, udp = out[26:30], out[30:34], out[34:]
    pseudo = src + dst + struct.pack(">IxxxB", len(udp), 17)
    return ones_complement(pseudo + udp) == 0xffff


def query(name: bytes, qtype=1, qid=7, edns=True) -> bytes:
    head = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 1 if edns else 0)
    opt = b"\0" + struct.pack(">HHIH", 41, 1232, 0, 0) if edns else b""
    return head + name + struct.pack(">HH", qtype, 1) + opt


def upstream_answer(name: bytes, qtype: int) -> bytes:
    records = b"".join(b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 300 + i, 4) + bytes([203, 0, 113, i])
                       for i in range(3))
    return struct.pack(">HHHHHH", 1, 0x8180, 1, 3, 0, 0) + name + struct.pack(">HH", qtype, 1) + records


@pytest.fixture(scope="module")
def netns():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    name = f"kcp-{TAG}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "d0", "type", "veth", "peer", "name", "d1"], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "d0", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture(scope="module")
def program(netns):
    from appliance.kernel.libbpf import LinuxBpf
    from appliance.kernel.setns import in_netns

    with tempfile.TemporaryDirectory() as build:
        cache = KernelCache("d0", [f"{GW}/32", "::/0"], "198.18.0.0/15", Path(build), tcx=False,
                            fake_network6=FAKE6)
        in_netns(netns, cache.start)
    try:
        yield cache, LinuxBpf()
    finally:
        in_netns(netns, cache.close)
    shown = subprocess.run(["tc", "-n", netns, "filter", "show", "dev", "d0", "ingress"],
                           capture_output=True, text=True).stdout
    assert "appliance-dns-cache" not in shown, "the filter goes with the cache"


def run(program, data: bytes):
    cache, bpf = program
    result = bpf.test_run(cache._obj.prog_fd("kernel_cache"), data)
    return result.retval, result.data


def test_the_clsact_fallback_is_attached_and_removed(netns, program):
    shown = subprocess.run(["tc", "-n", netns, "filter", "show", "dev", "d0", "ingress"],
                           capture_output=True, text=True).stdout
    assert "appliance-dns-cache" in shown


def test_hostile_queries_never_get_an_answer_the_server_would_not_give(program):
    cache, _ = program
    name = b"\x03www\x01a\x04test\x00"
    writer = cache.writer(1)
    writer.client(CLIENT, 0, 1e9)
    answer = prepare(upstream_answer(name, 1))
    answer.stored = __import__("time").monotonic()
    answer.lifetime = 300
    opt = opt_record(1232)
    writer.fill(0, name + b"\x00\x01\x00\x01", answer, opt, 1232)

    good = query(name)
    retval, out = run(program, frame(good))
    assert retval == TC_ACT_REDIRECT
    assert out[42:] == render(7, 0x0100, good[12:12 + len(name) + 4], 1232, answer, answer.body, opt, 1232)
    assert udp_checksum_ok(out) and ones_complement(out[14:34]) == 0xffff

    rng = random.Random(17)
    hostile = [good[:n] for n in range(len(good))]                      # every truncation
    hostile += [good[:12] + b"\x03www\xc0\x0c" + good[-15:]]            # a pointer in the question
    hostile += [good[:12] + b"\x01a" * 127 + b"\x00" + good[-15:]]      # 127 labels: 255 bytes
    hostile += [good[:12] + b"\x01a" * 200 + b"\x00" + good[-15:]]      # past 255 bytes
    hostile += [good[:12] + b"\x3fa" + good[14:]]                       # a label longer than the name
    for _ in range(3000):
        mutated = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        hostile.append(bytes(mutated))
    answered = 0
    for dns in hostile:
        for data in (frame(dns), frame(dns)[:-1], frame(dns) + b"\0" * 3):
            retval, out = run(program, data)
            if retval == TC_ACT_OK:
                assert out == data, "a query sent up is untouched"
                continue
            assert retval == TC_ACT_REDIRECT
            # Answered: then it is a query the server reads as the same question, and the
            # kernel's answer is exactly the server's.
            q = parse_query(dns)
            # (Ethernet padding past the IP datagram is no part of the query.)
            assert q is not None and q.key == name + b"\x00\x01\x00\x01", dns.hex()
            assert data.startswith(frame(dns)), "a frame shorter than its IP length is never answered"
            assert out[42:] == render(q.qid, q.flags, q.question, q.edns, answer, answer.body, opt,
                                      1232 if q.edns < 0 or q.edns > 1232 else q.edns), dns.hex()
            answered += 1
    assert answered  # some mutations (the ID, letter case, RD) are still the same question


def test_the_clsact_fallback_attaches_from_the_servers_event_loop(netns):
    """As the DNS server starts it on 6.1 (no tcx): from inside its running asyncio loop."""
    import asyncio

    from appliance.kernel.setns import in_netns

    subprocess.run(["ip", "-n", netns, "link", "add", "e0", "type", "veth", "peer", "name", "e1"], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "e0", "up"], check=True)

    async def start(cache):
        cache.start()

    with tempfile.TemporaryDirectory() as build:
        cache = KernelCache("e0", [f"{GW}/32"], "198.18.0.0/15", Path(build), tcx=False)
        in_netns(netns, lambda: asyncio.run(start(cache)))
        try:
            assert cache.attach_mode == "tc clsact"
            shown = subprocess.run(["tc", "-n", netns, "filter", "show", "dev", "e0", "ingress"],
                                   capture_output=True, text=True).stdout
            assert "appliance-dns-cache" in shown
        finally:
            in_netns(netns, cache.close)


def test_an_ipv6_query_is_answered_as_the_address_it_was_sent_to(program):
    """Over IPv6 as over IPv4: the server's answer, from the modem's address to the client,
    with a checksum the client's stack accepts; what the kernel must not answer goes up."""
    import time

    cache, _ = program
    name = b"\x03www\x02v6\x04test\x00"
    writer = cache.writer(2)
    writer.client(CLIENT6, 0, 1e9)
    answer = prepare(upstream_answer(name, 28))
    answer.stored, answer.lifetime = time.monotonic(), 300
    opt = opt_record(1232)
    writer.fill(0, name + b"\x00\x1c\x00\x01", answer, opt, 1232)

    for edns in (True, False):
        good = query(name, qtype=28, qid=9, edns=edns)
        sent = frame6(good)
        retval, out = run(program, sent)
        assert retval == TC_ACT_REDIRECT, edns
        assert out[62:] == render(9, 0x0100, good[12:12 + len(name) + 4], 1232 if edns else -1, answer,
                                  answer.body, opt, 1232), edns
        assert out[0:6] == sent[6:12] and out[6:12] == sent[0:6]
        assert (out[22:38], out[38:54]) == (sent[38:54], sent[22:38]), "from the modem's address"
        assert struct.unpack(">H", out[18:20])[0] == len(out) - 54 and out[20] == 17 and out[21] == 64
        assert udp_checksum_ok(out)
    assert cache.client_hits()[CLIENT6] >= 2

    good = query(name, qtype=28, qid=9)
    untouched = [
        frame6(good, dst="2001:db8:7e::5"),                        # to the fake range: the relay's
        frame6(good, src="2001:db8:79::12"),                       # a client the server never placed
        frame6(good, next_header=60),                              # behind an extension header
        frame6(good, dport=5353),
    ]
    whole = frame6(good)
    # Every truncation BPF_PROG_TEST_RUN takes (it wants the whole IPv6 header).
    untouched += [whole[:n] for n in range(54, len(whole))]
    for data in untouched:
        retval, out = run(program, data)
        assert retval == TC_ACT_OK and out == data, data.hex()


def test_a_tag_takes_its_own_entries_away_and_an_overflow_takes_them_all(program):
    """What a recycled fake address does to the kernel's answers: the entries filled with it
    are gone from the next packet on, the others stay; a writer that can no longer say which
    entries carry a tag forgets them all rather than leave one alive."""
    import time

    cache, _ = program
    # As in the main process: one writer places the clients, another fills the fake answers.
    cache.writer(3).client(CLIENT, 0, 1e9)
    writer = cache.writer(2)
    opt = opt_record(1232)
    names = [b"\x05fake" + bytes([0x30 + i]) + b"\x04test\x00" for i in range(3)]

    def fill(name: bytes, tag: int) -> None:
        answer = prepare(upstream_answer(name, 1))
        answer.stored, answer.lifetime = time.monotonic(), 300
        writer.fill(0, name + b"\x00\x01\x00\x01", answer, opt, 1232, tag=tag)

    def answered(name: bytes) -> bool:
        return run(program, frame(query(name)))[0] == TC_ACT_REDIRECT

    for tag, name in enumerate(names):
        fill(name, tag)
    assert all(answered(n) for n in names)
    writer.forget_tag(0)
    assert not answered(names[0]) and answered(names[1]) and answered(names[2])
    for _ in range(5):  # filled again, as every FIXED_KERNEL_FOR while a fake name is asked
        fill(names[1], 1)
    assert len(writer._tagged[1]) == 1, "the index grows with every refill"

    writer.FILLED_MAX = 2  # full: the next fill cannot keep track of the tagged ones
    fill(names[0], 0)
    assert answered(names[0])
    assert not answered(names[1]) and not answered(names[2])
