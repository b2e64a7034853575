"""`Bpf`: the same assertions on `FakeBpf` and on the running kernel (`LinuxBpf`).

A small object with one map of each kind the datapath uses and one tc
program (count the run, report the frame's length in a ring buffer, pass a
full-size frame and drop a runt) is built with clang for both sides; the
fake is told the maps and given the program's behaviour in Python, which is
what it cannot read from the ELF.
"""
from __future__ import annotations

import errno
import os
import secrets
import struct

import pytest

from appliance.kernel.bpf import ARRAY, BPF_EXIST, BPF_NOEXIST, HASH, PERCPU_ARRAY, RINGBUF, BpfError, Map, MapSpec
from appliance.kernel.fake_bpf import FakeBpf
from appliance.kernel.libbpf import LinuxBpf
from appliance.switch.datapath.build import build


SOURCE = """
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 4);
         __type(key, __u32); __type(value, __u64); } kc_hash SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 4);
         __type(key, __u32); __type(value, __u32); } kc_array SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 2);
         __type(key, __u32); __type(value, __u64); } kc_runs SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); } kc_events SEC(".maps");

SEC("tc")
int kc_prog(struct __sk_buff *skb)
{
	__u32 zero = 0, len = skb->len;
	__u64 *runs = bpf_map_lookup_elem(&kc_runs, &zero);

	if (runs)
		*runs += 1;
	bpf_ringbuf_output(&kc_events, &len, sizeof(len), 0);
	return skb->len >= 60 ? TC_ACT_OK : TC_ACT_SHOT;
}

char _license[] SEC("license") = "GPL";
"""
MAPS = {
    "kc_hash": MapSpec(HASH, 4, 8, 4),
    "kc_array": MapSpec(ARRAY, 4, 4, 4),
    "kc_runs": MapSpec(PERCPU_ARRAY, 4, 8, 2),
    "kc_events": MapSpec(RINGBUF, 0, 0, 4096),
}
U32, U64 = struct.Struct("<I"), struct.Struct("<Q")


def kc_prog(data: bytes, ctx, maps) -> tuple[int, bytes]:
    runs = maps["kc_runs"]
    runs.set(U32.pack(0), U64.pack(U64.unpack(runs.get(U32.pack(0)))[0] + 1))
    maps["kc_events"].output(U32.pack(len(data)))
    return (0 if len(data) >= 60 else 2), data


@pytest.fixture(scope="module")
def object_path(tmp_path_factory):
    return str(build(SOURCE, tmp_path_factory.mktemp("kc-bpf")))


@pytest.fixture(params=["fake", "linux"])
def bpf(request):
    if request.param == "fake":
        return FakeBpf(maps=MAPS, programs={"kc_prog": kc_prog})
    return LinuxBpf()


@pytest.fixture
def pin_dir(bpf):
    path = f"/sys/fs/bpf/kc{os.getpid()}{secrets.token_hex(3)}"
    yield path
    for name in bpf.pins(path):
        bpf.unpin(os.path.join(path, name))
    bpf.remove_pin_dir(path)


@pytest.fixture
def obj(bpf, object_path):
    o = bpf.load(object_path, ("kc_prog",))
    yield o
    o.close()


def errno_of(call, *args) -> int:
    with pytest.raises(BpfError) as err:
        call(*args)
    return err.value.errno


def test_a_missing_object_is_not_found(bpf, tmp_path):
    assert errno_of(bpf.load, str(tmp_path / "none.o"), ("kc_prog",)) == errno.ENOENT


def test_hash_map_keys_come_and_go(bpf, obj):
    m = Map(bpf, obj.map_fd("kc_hash"), 4, 8)
    assert m.lookup(U32.pack(1)) is None and m.keys() == []
    m.update(U32.pack(1), U64.pack(10))
    m.update(U32.pack(2), U64.pack(20))
    assert m.lookup(U32.pack(1)) == U64.pack(10)
    assert sorted(m.keys()) == [U32.pack(1), U32.pack(2)]
    assert errno_of(m.update, U32.pack(1), U64.pack(11), BPF_NOEXIST) == errno.EEXIST
    assert errno_of(m.update, U32.pack(3), U64.pack(30), BPF_EXIST) == errno.ENOENT
    m.update(U32.pack(1), U64.pack(11), BPF_EXIST)
    assert m.lookup(U32.pack(1)) == U64.pack(11)
    assert m.delete(U32.pack(2)) is True and m.delete(U32.pack(2)) is False
    for k in (2, 3, 4):
        m.update(U32.pack(k), U64.pack(k))
    assert errno_of(m.update, U32.pack(5), U64.pack(5)) == errno.E2BIG   # 4 entries at most


def test_array_map_has_every_index_and_loses_none(bpf, obj):
    m = Map(bpf, obj.map_fd("kc_array"), 4, 4)
    assert m.keys() == [U32.pack(i) for i in range(4)]
    assert m.lookup(U32.pack(3)) == bytes(4)
    m.update(U32.pack(3), U32.pack(7))
    assert m.lookup(U32.pack(3)) == U32.pack(7)
    assert m.lookup(U32.pack(4)) is None
    assert errno_of(m.update, U32.pack(4), U32.pack(1)) == errno.E2BIG
    assert errno_of(m.delete, U32.pack(0)) == errno.EINVAL


def test_per_cpu_values_one_per_possible_cpu(bpf, obj):
    m = Map(bpf, obj.map_fd("kc_runs"), 4, 8, percpu=True)
    values = m.percpu_values(U32.pack(1))
    assert len(values) == bpf.num_possible_cpus() >= 1 and set(values) == {bytes(8)}
    m.update(U32.pack(1), b"".join(U64.pack(cpu + 1) for cpu in range(bpf.num_possible_cpus())))
    assert [U64.unpack(v)[0] for v in m.percpu_values(U32.pack(1))] == \
        list(range(1, bpf.num_possible_cpus() + 1))


def test_a_pinned_map_outlives_its_object_and_holds_its_directory(bpf, object_path, pin_dir):
    bpf.make_pin_dir(pin_dir)
    assert bpf.is_pinned(pin_dir) and bpf.pins(pin_dir) == []
    path = os.path.join(pin_dir, "kc_hash")
    with bpf.load(object_path, ("kc_prog",)) as first:
        bpf.pin(first.map_fd("kc_hash"), path)
        assert errno_of(bpf.pin, first.map_fd("kc_hash"), path) == errno.EEXIST
        Map(bpf, first.map_fd("kc_hash"), 4, 8).update(U32.pack(1), U64.pack(42))
    assert bpf.is_pinned(path) and bpf.pins(pin_dir) == ["kc_hash"]
    assert bpf.remove_pin_dir(pin_dir) is False       # not empty
    fd = bpf.open_pinned(path)
    try:
        assert Map(bpf, fd, 4, 8).lookup(U32.pack(1)) == U64.pack(42)
        # A new load bound to the pinned map shares it.
        with bpf.load(object_path, ("kc_prog",), reuse={"kc_hash": fd}) as second:
            Map(bpf, second.map_fd("kc_hash"), 4, 8).update(U32.pack(2), U64.pack(43))
        assert Map(bpf, fd, 4, 8).lookup(U32.pack(2)) == U64.pack(43)
    finally:
        bpf.close(fd)
    with pytest.raises(OSError) as err:
        bpf.close(fd)
    assert err.value.errno == errno.EBADF
    assert bpf.unpin(path) is True and bpf.unpin(path) is False
    assert errno_of(bpf.open_pinned, path) == errno.ENOENT
    assert bpf.remove_pin_dir(pin_dir) is True and bpf.remove_pin_dir(pin_dir) is False
    assert bpf.pins(pin_dir) == [] and not bpf.is_pinned(pin_dir)


def test_a_test_run_runs_the_program_on_the_frame(bpf, obj):
    fd = obj.prog_fd("kc_prog")
    frame = bytes.fromhex("ffffffffffff0200000000010800") + bytes(50)
    full = bpf.test_run(fd, frame)
    runt = bpf.test_run(fd, frame[:40])
    assert (full.retval, runt.retval) == (0, 2)        # TC_ACT_OK, TC_ACT_SHOT
    assert full.data == frame
    assert bpf.test_run(fd, frame, repeat=3).retval == 0
    runs = Map(bpf, obj.map_fd("kc_runs"), 4, 8, percpu=True)
    assert sum(U64.unpack(v)[0] for v in runs.percpu_values(U32.pack(0))) == 5
    seen: list[int] = []
    rb = bpf.ring_buffer(obj.map_fd("kc_events"), lambda raw: seen.append(U32.unpack(raw[:4])[0]))
    try:
        assert rb.poll(100) == 5
    finally:
        rb.close()
    assert seen == [64, 40, 64, 64, 64]


def test_only_a_ring_buffer_map_is_consumed_as_one(bpf, obj):
    assert errno_of(bpf.ring_buffer, obj.map_fd("kc_hash"), lambda raw: None) == errno.EINVAL
