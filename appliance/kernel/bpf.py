"""What the datapath asks of bpf(2), as an interface: objects, maps, pins, test runs.

`LinuxBpf` (`appliance.kernel.libbpf`) does it through Debian's libbpf;
`FakeBpf` (`appliance.kernel.fake_bpf`) keeps maps, pins and programs in
memory for unit tests. Calls are at the level of the syscalls (file
descriptors, raw keys and values); `Map` on top addresses one map with
fixed key and value sizes and splits per-CPU values, the same for both.

Pins live on the BPF filesystem; a pinned object outlives the process that
made it, which is how a datapath's maps survive a restart of the console.
Every failing call raises `BpfError` with the call, errno and, for a load,
the verifier's log.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Protocol

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

# Map types the datapath uses (all of them exist on 6.1).
HASH = "hash"
ARRAY = "array"
PERCPU_ARRAY = "percpu_array"
RINGBUF = "ringbuf"
LRU_PERCPU_HASH = "lru_percpu_hash"
PERCPU_KINDS = (PERCPU_ARRAY, LRU_PERCPU_HASH)


class BpfError(OSError):
    """A bpf(2) or libbpf call failed; `log` carries the verifier's words."""

    def __init__(self, what: str, err: int, log: str = ""):
        self.what = what
        self.log = log
        message = f"{what}: {os.strerror(err)}"
        if log:
            message += "\n" + log
        super().__init__(err, message)


@dataclass(frozen=True)
class MapSpec:
    """A map as its object file defines it (what the fake cannot read from the ELF)."""

    kind: str
    key_size: int
    value_size: int
    max_entries: int


@dataclass
class TestRun:
    __test__ = False  # not a pytest class

    retval: int
    data: bytes
    ctx: bytes
    duration_ns: int


@dataclass
class LinkInfo:
    """A BPF link (`appliance.kernel.tc` attaches with tcx links)."""

    type: int
    id: int
    prog_id: int
    ifindex: int      # for a tcx link; 0 once its device is gone
    attach_type: int


class BpfObject(Protocol):
    """A loaded object: its programs and maps by name, until `close()` (or the `with` ends)."""

    def prog_fd(self, name: str) -> int: ...
    def map_fd(self, name: str) -> int: ...
    def close(self) -> None: ...
    def __enter__(self) -> "BpfObject": ...
    def __exit__(self, *exc) -> None: ...


class RingBuffer(Protocol):
    def poll(self, timeout_ms: int = 100) -> int: ...
    def close(self) -> None: ...


class Bpf(Protocol):
    # objects
    def load(self, path: str, programs: tuple[str, ...], reuse: dict[str, int] | None = None,
             max_entries: dict[str, int] | None = None) -> BpfObject:
        """Open and load an ELF object; maps named in `reuse` are bound to those
        map fds (shared with an earlier load), `max_entries` resizes maps first."""
    def close(self, fd: int) -> None: ...
    def num_possible_cpus(self) -> int: ...

    # maps, addressed with raw bytes
    def map_update(self, fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None: ...
    def map_lookup(self, fd: int, key: bytes, value_size: int) -> bytes | None: ...
    def map_delete(self, fd: int, key: bytes) -> bool: ...
    def map_keys(self, fd: int, key_size: int) -> list[bytes]: ...

    # pins on the BPF filesystem
    def make_pin_dir(self, path: str) -> None:
        """Create `path` (mounting the BPF filesystem at /sys/fs/bpf if it is not)."""
    def remove_pin_dir(self, path: str) -> bool:
        """Remove an empty pin directory; False when it is absent or not empty."""
    def pins(self, path: str) -> list[str]:
        """Names in a pin directory, sorted ([] when it does not exist)."""
    def is_pinned(self, path: str) -> bool: ...
    def pin(self, fd: int, path: str) -> None: ...
    def open_pinned(self, path: str) -> int:
        """A new fd of a pinned object; the caller closes it."""
    def unpin(self, path: str) -> bool: ...

    # running
    def test_run(self, prog_fd: int, data: bytes, ctx: bytes | None = None,
                 repeat: int = 1) -> TestRun:
        """BPF_PROG_TEST_RUN: run the program on `data` in the kernel, `repeat` times."""
    def ring_buffer(self, map_fd: int, callback: Callable[[bytes], None]) -> RingBuffer:
        """Consume a ring buffer map: `poll()` hands every record to `callback`."""


@dataclass
class Map:
    """One map fd with fixed key and value sizes, addressed with bytes.

    Per-CPU maps read and write one value per possible CPU, each padded to
    8 bytes, as the kernel lays them out. `owned`: `close()` closes the fd.
    """

    bpf: Bpf
    fd: int
    key_size: int
    value_size: int
    percpu: bool = False
    owned: bool = False

    def _vsize(self) -> int:
        if self.percpu:
            return ((self.value_size + 7) // 8 * 8) * self.bpf.num_possible_cpus()
        return self.value_size

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        assert len(key) == self.key_size, (len(key), self.key_size)
        assert len(value) == self._vsize(), (len(value), self._vsize())
        self.bpf.map_update(self.fd, key, value, flags)

    def lookup(self, key: bytes) -> bytes | None:
        return self.bpf.map_lookup(self.fd, key, self._vsize())

    def delete(self, key: bytes) -> bool:
        return self.bpf.map_delete(self.fd, key)

    def keys(self) -> list[bytes]:
        return self.bpf.map_keys(self.fd, self.key_size)

    def percpu_values(self, key: bytes) -> list[bytes]:
        raw = self.lookup(key)
        if raw is None:
            return []
        step = (self.value_size + 7) // 8 * 8
        return [raw[i:i + self.value_size] for i in range(0, len(raw), step)]

    def pin(self, path: str) -> None:
        self.bpf.pin(self.fd, path)

    def close(self) -> None:
        if self.owned and self.fd >= 0:
            self.bpf.close(self.fd)
            self.fd = -1
