"""An in-memory `Bpf` with the kernel's rules, for unit tests.

Maps, programs and pins are data; file descriptors are numbers handed out
and taken back (`open_fds()` tells a test whether the caller closed what it
opened). The fake cannot read an ELF object: the maps it should define are
given as `MapSpec`s by name (`maps=`), any other map a program asks for is a
hash map sized by its first use, and what a program does on a test run is a
Python function by program name (`programs=`), which gets the frame and the
object's maps and returns the verdict. A ring buffer map takes records with
`FakeMap.output()`.

As in the kernel: array maps have every key from the start (zeros) and
cannot lose one, a full hash map refuses a new key (an LRU one drops its
least recently updated), a pinned object
outlives every fd of it, a pin directory with pins in it cannot be removed,
and a map bound with `reuse` is the same map in both loads.
`fail_on` names calls that raise (`"load"`: the verifier refuses).
"""
from __future__ import annotations

import errno
import itertools
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from appliance.kernel.bpf import (ARRAY, BPF_EXIST, BPF_NOEXIST, HASH, LRU_PERCPU_HASH, PERCPU_ARRAY,
                                  PERCPU_KINDS, RINGBUF, BpfError, MapSpec, TestRun)

BPFFS = "/sys/fs/bpf"


@dataclass
class FakeMap:
    spec: MapSpec | None        # None: a hash map, sized by its first use
    ncpus: int
    data: dict[bytes, bytes] = field(default_factory=dict)
    records: deque = field(default_factory=deque)   # a ring buffer's

    @property
    def kind(self) -> str:
        return self.spec.kind if self.spec else HASH

    def value_size(self) -> int | None:
        if self.spec is None:
            return None
        if self.kind in PERCPU_KINDS:
            return (self.spec.value_size + 7) // 8 * 8 * self.ncpus
        return self.spec.value_size

    def _check(self, what: str, key: bytes, value_size: int | None = None) -> None:
        if self.spec is None:
            if value_size is not None:
                self.spec = MapSpec(HASH, len(key), value_size, 1 << 20)
            return
        if self.kind == RINGBUF:
            raise BpfError(what, errno.EINVAL)
        if len(key) != self.spec.key_size or (value_size is not None and value_size != self.value_size()):
            raise BpfError(what, errno.EINVAL)

    def _index(self, key: bytes) -> int | None:
        if self.kind in (ARRAY, PERCPU_ARRAY):
            index = int.from_bytes(key, "little")
            return index if index < self.spec.max_entries else None
        return None

    def update(self, key: bytes, value: bytes, flags: int) -> None:
        self._check("map update", key, len(value))
        if self.kind in (ARRAY, PERCPU_ARRAY):
            if self._index(key) is None:
                raise BpfError("map update", errno.E2BIG)
            if flags == BPF_NOEXIST:
                raise BpfError("map update", errno.EEXIST)
        else:
            if flags == BPF_NOEXIST and key in self.data:
                raise BpfError("map update", errno.EEXIST)
            if flags == BPF_EXIST and key not in self.data:
                raise BpfError("map update", errno.ENOENT)
            if key not in self.data and self.spec and len(self.data) >= self.spec.max_entries:
                if self.kind != LRU_PERCPU_HASH:
                    raise BpfError("map update", errno.E2BIG)
                # An LRU map makes room: the least recently updated key goes.
                del self.data[next(iter(self.data))]
            self.data.pop(bytes(key), None)
        self.data[bytes(key)] = bytes(value)

    def lookup(self, key: bytes, value_size: int) -> bytes | None:
        self._check("map lookup", key, value_size)
        if self.kind in (ARRAY, PERCPU_ARRAY):
            if self._index(key) is None:
                return None
            return self.data.get(bytes(key), bytes(value_size))
        return self.data.get(bytes(key))

    def delete(self, key: bytes) -> bool:
        self._check("map delete", key)
        if self.kind in (ARRAY, PERCPU_ARRAY):
            raise BpfError("map delete", errno.EINVAL)
        return self.data.pop(bytes(key), None) is not None

    def keys(self, key_size: int) -> list[bytes]:
        if self.kind in (ARRAY, PERCPU_ARRAY):
            return [i.to_bytes(key_size, "little") for i in range(self.spec.max_entries)]
        return list(self.data)

    # what a fake program does
    def get(self, key: bytes, cpu: int = 0) -> bytes | None:
        """A value as the program sees it (its CPU's slot of a per-CPU value)."""
        size = self.value_size()
        raw = self.lookup(key, size) if size is not None else self.data.get(key)
        if raw is None or self.kind not in PERCPU_KINDS:
            return raw
        step = (self.spec.value_size + 7) // 8 * 8
        return raw[cpu * step: cpu * step + self.spec.value_size]

    def set(self, key: bytes, value: bytes, cpu: int = 0) -> None:
        if self.kind not in PERCPU_KINDS:
            self.update(key, value, 0)
            return
        step = (self.spec.value_size + 7) // 8 * 8
        raw = bytearray(self.lookup(key, self.value_size()) or bytes(self.value_size()))
        raw[cpu * step: cpu * step + len(value)] = value
        if self.kind == PERCPU_ARRAY:
            self.data[bytes(key)] = bytes(raw)
        else:
            self.update(key, bytes(raw), 0)

    def output(self, record: bytes) -> None:
        """bpf_ringbuf_output: a record for the consumer."""
        self.records.append(bytes(record))


@dataclass
class FakeProgram:
    id: int
    name: str
    maps: dict[str, FakeMap]
    run: Callable | None


@dataclass
class FakeLink:
    """A BPF link (made by `FakeTc`)."""

    id: int
    type: int
    prog: FakeProgram
    netns: str | None
    ifindex: int
    attach_type: int
    attached: bool = True


class _Object:
    def __init__(self, fake: "FakeBpf", path: str, programs: dict[str, FakeProgram],
                 maps: dict[str, FakeMap]):
        self._fake = fake
        self.path = path
        self._programs = programs
        self._maps = maps
        self._fds: dict[tuple[str, str], int] = {}
        self.closed = False

    def _fd(self, kind: str, name: str, obj) -> int:
        if self.closed:
            raise BpfError(f"{kind} {name} of a closed object", errno.EBADF)
        if (kind, name) not in self._fds:
            self._fds[(kind, name)] = self._fake._new_fd(obj)
        return self._fds[(kind, name)]

    def prog_fd(self, name: str) -> int:
        if name not in self._programs:
            raise BpfError(f"program {name} not in {self.path}", errno.ENOENT)
        return self._fd("program", name, self._programs[name])

    def map_fd(self, name: str) -> int:
        if name not in self._maps:
            self._maps[name] = FakeMap(None, self._fake.ncpus)  # the programs share the dict
        return self._fd("map", name, self._maps[name])

    def close(self) -> None:
        if not self.closed:
            for fd in self._fds.values():
                self._fake.fds.pop(fd, None)
            self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FakeRingBuffer:
    def __init__(self, rb: FakeMap, callback):
        self._map = rb
        self._callback = callback

    def poll(self, timeout_ms: int = 100) -> int:
        n = 0
        while self._map.records:
            self._callback(self._map.records.popleft())
            n += 1
        return n

    def close(self) -> None:
        pass


class FakeBpf:
    def __init__(self, maps: dict[str, MapSpec] | None = None,
                 programs: dict[str, Callable] | None = None, ncpus: int = 2):
        self.specs = dict(maps or {})
        self.behaviour = dict(programs or {})
        self.ncpus = ncpus
        self.fds: dict[int, object] = {}
        self.pinned: dict[str, object] = {}
        self.dirs: set[str] = set()
        self.fail_on: set[str] = set()
        self.loads = 0
        self._fd_numbers = itertools.count(100)
        self._ids = itertools.count(1)

    def _new_fd(self, obj) -> int:
        fd = next(self._fd_numbers)
        self.fds[fd] = obj
        return fd

    def _get(self, fd: int, kind: type, what: str):
        obj = self.fds.get(fd)
        if obj is None:
            raise BpfError(what, errno.EBADF)
        if not isinstance(obj, kind):
            raise BpfError(what, errno.EINVAL)
        return obj

    def _fail(self, op: str, what: str, log: str = "") -> None:
        if op in self.fail_on:
            raise BpfError(what, errno.EACCES if op == "load" else errno.EPERM,
                           log or f"injected failure in {op}")

    def open_fds(self) -> list[int]:
        return sorted(self.fds)

    # objects
    def load(self, path, programs, reuse=None, max_entries=None):
        if not os.path.exists(path):
            raise BpfError(f"open {path}", errno.ENOENT)
        self._fail("load", f"load {os.path.basename(path)}")
        maps: dict[str, FakeMap] = {}
        for name, fd in (reuse or {}).items():
            maps[name] = self._get(fd, FakeMap, f"reuse map {name}")
        for name, spec in self.specs.items():
            if name in (max_entries or {}):
                spec = MapSpec(spec.kind, spec.key_size, spec.value_size, max_entries[name])
            maps.setdefault(name, FakeMap(spec, self.ncpus))
        progs = {name: FakeProgram(next(self._ids), name, maps, self.behaviour.get(name))
                 for name in programs}
        self.loads += 1
        return _Object(self, path, progs, maps)

    def close(self, fd):
        if self.fds.pop(fd, None) is None:
            raise BpfError("close", errno.EBADF)

    def num_possible_cpus(self):
        return self.ncpus

    # maps
    def map_update(self, fd, key, value, flags=0):
        self._get(fd, FakeMap, "map update").update(key, value, flags)

    def map_lookup(self, fd, key, value_size):
        return self._get(fd, FakeMap, "map lookup").lookup(key, value_size)

    def map_delete(self, fd, key):
        return self._get(fd, FakeMap, "map delete").delete(key)

    def map_keys(self, fd, key_size):
        return self._get(fd, FakeMap, "map next key").keys(key_size)

    # pins
    def _parent(self, path: str) -> None:
        parent = os.path.dirname(path)
        if parent != BPFFS and parent not in self.dirs:
            raise BpfError(f"pin {path}", errno.ENOENT)

    def make_pin_dir(self, path):
        while path not in (BPFFS, "/", ""):
            self.dirs.add(path)
            path = os.path.dirname(path)

    def remove_pin_dir(self, path):
        if path not in self.dirs or self.pins(path):
            return False
        self.dirs.discard(path)
        return True

    def pins(self, path):
        inside = [p for p in list(self.pinned) + list(self.dirs) if os.path.dirname(p) == path]
        return sorted(os.path.basename(p) for p in inside)

    def is_pinned(self, path):
        return path in self.pinned or path in self.dirs

    def pin(self, fd, path):
        self._fail("pin", f"pin {path}")
        obj = self._get(fd, object, f"pin {path}")
        self._parent(path)
        if path in self.pinned or path in self.dirs:
            raise BpfError(f"pin {path}", errno.EEXIST)
        self.pinned[path] = obj

    def open_pinned(self, path):
        if path not in self.pinned:
            raise BpfError(f"open pinned {path}", errno.ENOENT)
        return self._new_fd(self.pinned[path])

    def unpin(self, path):
        return self.pinned.pop(path, None) is not None

    # running
    def test_run(self, prog_fd, data, ctx=None, repeat=1):
        prog = self._get(prog_fd, FakeProgram, "BPF_PROG_TEST_RUN")
        if prog.run is None:
            raise BpfError(f"BPF_PROG_TEST_RUN of {prog.name}: the fake was given no behaviour",
                           errno.ENOTSUP)
        retval, out = 0, data
        for _ in range(max(1, repeat)):
            retval, out = prog.run(data, ctx, prog.maps)
        return TestRun(retval=retval, data=out, ctx=ctx or b"", duration_ns=0)

    def ring_buffer(self, map_fd, callback):
        rb = self._get(map_fd, FakeMap, "ring_buffer__new")
        if rb.kind != RINGBUF:
            raise BpfError("ring_buffer__new", errno.EINVAL)
        return FakeRingBuffer(rb, callback)

    # for FakeTc
    def program(self, prog_fd: int) -> FakeProgram:
        return self._get(prog_fd, FakeProgram, "program")
