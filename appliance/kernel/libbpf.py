"""Debian's libbpf.so.1 through ctypes: the Linux implementation of `Bpf`.

libbpf holds the file descriptors for us, so nothing here parses the output
of bpftool.  Only the handful of calls the appliance needs are bound: open
and load an object, find its programs and maps, reuse a map from an earlier
load (per-flow counters survive a recompile that way), read and write map
entries, pin and unpin, BPF_PROG_TEST_RUN, ring buffers, and the BPF links
and queries that tcx attaches with (`appliance.kernel.tc`).

Every failing call raises `BpfError` with the call, errno and, for loads,
the verifier's log and libbpf's own messages.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import os
import threading
from typing import Callable

from appliance.kernel.bpf import BPF_ANY, BpfError, LinkInfo, TestRun

_lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
_libc = ctypes.CDLL(None, use_errno=True)

c_void_p = ctypes.c_void_p
c_int = ctypes.c_int
c_char_p = ctypes.c_char_p
c_size_t = ctypes.c_size_t
c_uint32 = ctypes.c_uint32

# libbpf reports its own problems through a print callback taking a va_list;
# on x86_64 a va_list argument is a pointer, which vsnprintf accepts as is.
_PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
_libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
_messages = threading.local()


def _on_libbpf_print(level, fmt, args):
    buf = ctypes.create_string_buffer(2048)
    _libc.vsnprintf(buf, len(buf), fmt, args)
    log = getattr(_messages, "log", None)
    if log is not None:
        log.append(buf.value.decode(errors="replace").rstrip())
    return 0


_print_cb = _PRINT_FN(_on_libbpf_print)
_lib.libbpf_set_print.restype = c_void_p
_lib.libbpf_set_print.argtypes = [_PRINT_FN]
_lib.libbpf_set_print(_print_cb)


def _sig(name, restype, *argtypes):
    fn = getattr(_lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


_open_file = _sig("bpf_object__open_file", c_void_p, c_char_p, c_void_p)
_obj_load = _sig("bpf_object__load", c_int, c_void_p)
_obj_close = _sig("bpf_object__close", None, c_void_p)
_find_prog = _sig("bpf_object__find_program_by_name", c_void_p, c_void_p, c_char_p)
_find_map = _sig("bpf_object__find_map_by_name", c_void_p, c_void_p, c_char_p)
_prog_fd = _sig("bpf_program__fd", c_int, c_void_p)
_prog_set_log_buf = _sig("bpf_program__set_log_buf", c_int, c_void_p, c_char_p, c_size_t)
_map_fd = _sig("bpf_map__fd", c_int, c_void_p)
_map_reuse_fd = _sig("bpf_map__reuse_fd", c_int, c_void_p, c_int)
_map_set_max = _sig("bpf_map__set_max_entries", c_int, c_void_p, c_uint32)
_map_update = _sig("bpf_map_update_elem", c_int, c_int, c_void_p, c_void_p, ctypes.c_uint64)
_map_lookup = _sig("bpf_map_lookup_elem", c_int, c_int, c_void_p, c_void_p)
_map_delete = _sig("bpf_map_delete_elem", c_int, c_int, c_void_p)
_map_next_key = _sig("bpf_map_get_next_key", c_int, c_int, c_void_p, c_void_p)
_obj_pin = _sig("bpf_obj_pin", c_int, c_int, c_char_p)
_obj_get = _sig("bpf_obj_get", c_int, c_char_p)
_test_run = _sig("bpf_prog_test_run_opts", c_int, c_int, c_void_p)
_num_cpus = _sig("libbpf_num_possible_cpus", c_int)
_link_create = _sig("bpf_link_create", c_int, c_int, c_int, c_int, c_void_p)
_link_update = _sig("bpf_link_update", c_int, c_int, c_int, c_void_p)
_link_detach = _sig("bpf_link_detach", c_int, c_int)
_prog_query = _sig("bpf_prog_query", c_int, c_int, c_int, c_uint32,
                   ctypes.POINTER(c_uint32), ctypes.POINTER(c_uint32),
                   ctypes.POINTER(c_uint32))
_obj_info = _sig("bpf_obj_get_info_by_fd", c_int, c_int, c_void_p, ctypes.POINTER(c_uint32))

_SAMPLE_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)
_rb_new = _sig("ring_buffer__new", c_void_p, c_int, _SAMPLE_FN, c_void_p, c_void_p)
_rb_free = _sig("ring_buffer__free", None, c_void_p)
_rb_poll = _sig("ring_buffer__poll", c_int, c_void_p, c_int)


def _check(rc: int, what: str) -> int:
    if rc < 0:
        err = -rc if rc < -1 else ctypes.get_errno()
        raise BpfError(what, err or errno_mod.EINVAL)
    return rc


def num_possible_cpus() -> int:
    return _check(_num_cpus(), "libbpf_num_possible_cpus")


class BpfObject:
    """An ELF object opened and loaded by libbpf.

    Maps named in `reuse` are bound to the given existing map fds before the
    load, so the new program shares them with the old one (counters, ports).
    `max_entries` resizes maps before the load.
    """

    LOG_SIZE = 4 << 20

    def __init__(self, path: str, programs: tuple[str, ...],
                 reuse: dict[str, int] | None = None,
                 max_entries: dict[str, int] | None = None):
        self.path = path
        self._obj = None
        _messages.log = []
        ptr = _open_file(path.encode(), None)
        if not ptr:
            err = ctypes.get_errno() or errno_mod.EINVAL
            raise BpfError(f"open {path}", err, "\n".join(_messages.log))
        self._obj = ptr
        self._log_bufs = {}
        try:
            for name in programs:
                prog = self._program(name)
                buf = ctypes.create_string_buffer(self.LOG_SIZE)
                self._log_bufs[name] = buf
                _check(_prog_set_log_buf(prog, buf, self.LOG_SIZE), "set log buffer")
            for name, size in (max_entries or {}).items():
                _check(_map_set_max(self._map(name), size), f"resize map {name}")
            for name, fd in (reuse or {}).items():
                _check(_map_reuse_fd(self._map(name), fd), f"reuse map {name}")
            _messages.log = []
            rc = _obj_load(self._obj)
            if rc < 0:
                err = -rc if rc < -1 else (ctypes.get_errno() or errno_mod.EINVAL)
                logs = [b.value.decode(errors="replace") for b in self._log_bufs.values()]
                log = "\n".join(x for x in logs if x) or "\n".join(_messages.log)
                raise BpfError(f"load {os.path.basename(path)}", err, log.strip())
        except BaseException:
            self.close()
            raise
        finally:
            _messages.log = None
        self._log_bufs.clear()

    def _program(self, name: str):
        prog = _find_prog(self._obj, name.encode())
        if not prog:
            raise BpfError(f"program {name} not in {self.path}", errno_mod.ENOENT)
        return prog

    def _map(self, name: str):
        m = _find_map(self._obj, name.encode())
        if not m:
            raise BpfError(f"map {name} not in {self.path}", errno_mod.ENOENT)
        return m

    def prog_fd(self, name: str) -> int:
        return _check(_prog_fd(self._program(name)), f"fd of program {name}")

    def map_fd(self, name: str) -> int:
        return _check(_map_fd(self._map(name)), f"fd of map {name}")

    def close(self) -> None:
        if self._obj:
            _obj_close(self._obj)
            self._obj = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


def map_update(fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value, len(value))
    _check(_map_update(fd, k, v, flags), "map update")


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value_size)
    if _map_lookup(fd, k, v) < 0:
        if ctypes.get_errno() == errno_mod.ENOENT:
            return None
        _check(-1, "map lookup")
    return v.raw


def percpu_counters(fd: int, names: tuple[str, ...]) -> dict[str, int]:
    """A per-CPU array of u64 counters (index i named names[i]), each summed over the CPUs."""
    ncpu = num_possible_cpus()
    out = {}
    for index, name in enumerate(names):
        raw = map_lookup(fd, index.to_bytes(4, "little"), 8 * ncpu) or b""
        out[name] = sum(int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8))
    return out


def map_delete(fd: int, key: bytes) -> bool:
    k = ctypes.create_string_buffer(key, len(key))
    if _map_delete(fd, k) < 0:
        if ctypes.get_errno() == errno_mod.ENOENT:
            return False
        _check(-1, "map delete")
    return True


def map_keys(fd: int, key_size: int) -> list[bytes]:
    out = []
    cur = None
    nxt = ctypes.create_string_buffer(key_size)
    while True:
        rc = _map_next_key(fd, cur, nxt)
        if rc < 0:
            if ctypes.get_errno() == errno_mod.ENOENT:
                return out
            _check(-1, "map next key")
        out.append(nxt.raw)
        cur = ctypes.create_string_buffer(nxt.raw, key_size)


def pin(fd: int, path: str) -> None:
    _check(_obj_pin(fd, path.encode()), f"pin {path}")


def unpin(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def obj_get(path: str) -> int:
    """Open a pinned object; the caller owns (and closes) the fd."""
    return _check(_obj_get(path.encode()), f"open pinned {path}")


# tcx: BPF links at the tc hooks (kernel >= 6.6).  Debian 12's libbpf 1.1
# predates bpf_program__attach_tcx, but its bpf_link_create passes any
# attach type through, and a tcx link needs nothing beyond the ifindex.
BPF_TCX_INGRESS = 46
BPF_TCX_EGRESS = 47
BPF_F_BEFORE = 1 << 3  # with no relative program: first on the hook


class _LinkCreateOpts(ctypes.Structure):
    # struct bpf_link_create_opts up to `flags`: every libbpf since 0.x knows these two and
    # checks that what a caller's `sz` covers beyond them is zero.
    _fields_ = [("sz", c_size_t), ("flags", c_uint32), ("_pad", c_uint32)]


def link_create(prog_fd: int, ifindex: int, attach_type: int, flags: int = 0) -> int:
    """bpf_link_create on a device; resolves `ifindex` in the calling thread's netns.
    `flags`: BPF_F_BEFORE puts the program before those already on the hook."""
    opts = _LinkCreateOpts(sz=ctypes.sizeof(_LinkCreateOpts), flags=flags) if flags else None
    return _check(_link_create(prog_fd, ifindex, attach_type, ctypes.byref(opts) if opts else None),
                  "bpf_link_create")


def link_update(link_fd: int, prog_fd: int) -> None:
    """Swap the program of a link atomically (never a moment without one)."""
    _check(_link_update(link_fd, prog_fd, None), "bpf_link_update")


def link_detach(link_fd: int) -> None:
    """Detach a link's program now, whoever else holds the link."""
    _check(_link_detach(link_fd), "bpf_link_detach")


class _LinkInfo(ctypes.Structure):
    # struct bpf_link_info: type, id, prog_id, then a union aligned to 8;
    # for tcx the union starts with ifindex, attach_type.
    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("prog_id", c_uint32),
        ("_pad", c_uint32),
        ("ifindex", c_uint32),
        ("attach_type", c_uint32),
        ("_rest", ctypes.c_uint8 * 64),
    ]


BPF_LINK_TYPE_TCX = 11


def link_info(link_fd: int) -> LinkInfo:
    info = _LinkInfo()
    size = c_uint32(ctypes.sizeof(info))
    _check(_obj_info(link_fd, ctypes.byref(info), ctypes.byref(size)), "link info")
    return LinkInfo(info.type, info.id, info.prog_id, info.ifindex, info.attach_type)


def prog_query(ifindex: int, attach_type: int, max_progs: int = 64) -> list[int]:
    """Ids of the programs attached at `attach_type` on a device (calling thread's netns)."""
    ids = (c_uint32 * max_progs)()
    cnt = c_uint32(max_progs)
    flags = c_uint32(0)
    _check(_prog_query(ifindex, attach_type, 0, ctypes.byref(flags), ids, ctypes.byref(cnt)),
           "bpf_prog_query")
    return list(ids[: cnt.value])


class _TestRunOpts(ctypes.Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("data_in", c_void_p),
        ("data_out", c_void_p),
        ("data_size_in", c_uint32),
        ("data_size_out", c_uint32),
        ("ctx_in", c_void_p),
        ("ctx_out", c_void_p),
        ("ctx_size_in", c_uint32),
        ("ctx_size_out", c_uint32),
        ("retval", c_uint32),
        ("repeat", c_int),
        ("duration", c_uint32),
        ("flags", c_uint32),
        ("cpu", c_uint32),
        ("batch_size", c_uint32),
    ]


def test_run(prog_fd: int, data: bytes, ctx: bytes | None = None,
             repeat: int = 1) -> TestRun:
    """BPF_PROG_TEST_RUN: run the program on `data` in the kernel, `repeat` times."""
    din = ctypes.create_string_buffer(data, len(data))
    dout = ctypes.create_string_buffer(len(data) + 256)
    opts = _TestRunOpts()
    opts.sz = ctypes.sizeof(opts)
    opts.data_in = ctypes.cast(din, c_void_p)
    opts.data_size_in = len(data)
    opts.data_out = ctypes.cast(dout, c_void_p)
    opts.data_size_out = len(dout)
    cin = cout = None
    if ctx is not None:
        cin = ctypes.create_string_buffer(ctx, len(ctx))
        cout = ctypes.create_string_buffer(len(ctx))
        opts.ctx_in = ctypes.cast(cin, c_void_p)
        opts.ctx_size_in = len(ctx)
        opts.ctx_out = ctypes.cast(cout, c_void_p)
        opts.ctx_size_out = len(ctx)
    opts.repeat = repeat
    _check(_test_run(prog_fd, ctypes.byref(opts)), "BPF_PROG_TEST_RUN")
    return TestRun(
        retval=opts.retval,
        data=dout.raw[: opts.data_size_out],
        ctx=cout.raw[: opts.ctx_size_out] if cout is not None else b"",
        duration_ns=opts.duration,
    )


class RingBuffer:
    """Consume a BPF ring buffer map; `callback(bytes)` gets every record."""

    def __init__(self, map_fd: int, callback):
        def sample(_ctx, data, size):
            callback(ctypes.string_at(data, size))
            return 0

        self._cb = _SAMPLE_FN(sample)
        self._rb = _rb_new(map_fd, self._cb, None, None)
        if not self._rb:
            _check(-1, "ring_buffer__new")

    def poll(self, timeout_ms: int = 100) -> int:
        return _check(_rb_poll(self._rb, timeout_ms), "ring_buffer__poll")

    def close(self) -> None:
        if self._rb:
            _rb_free(self._rb)
            self._rb = None

    def __del__(self):
        self.close()


# Where the BPF filesystem is mounted (systemd mounts it; a bare container may not).
BPFFS = "/sys/fs/bpf"
_libc.mount.argtypes = [c_char_p, c_char_p, c_char_p, ctypes.c_ulong, c_void_p]
_libc.mount.restype = c_int


def _ensure_bpffs() -> None:
    if os.path.ismount(BPFFS):
        return
    if _libc.mount(b"bpf", BPFFS.encode(), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        raise BpfError(f"mount bpf on {BPFFS}", err)


class LinuxBpf:
    """`Bpf` on the running kernel."""

    def load(self, path, programs, reuse=None, max_entries=None) -> BpfObject:
        return BpfObject(path, programs, reuse=reuse, max_entries=max_entries)

    def close(self, fd: int) -> None:
        os.close(fd)

    def num_possible_cpus(self) -> int:
        return num_possible_cpus()

    def map_update(self, fd, key, value, flags=BPF_ANY) -> None:
        map_update(fd, key, value, flags)

    def map_lookup(self, fd, key, value_size):
        return map_lookup(fd, key, value_size)

    def map_delete(self, fd, key) -> bool:
        return map_delete(fd, key)

    def map_keys(self, fd, key_size):
        return map_keys(fd, key_size)

    def make_pin_dir(self, path: str) -> None:
        if path == BPFFS or path.startswith(BPFFS + "/"):
            _ensure_bpffs()
        os.makedirs(path, exist_ok=True)

    def remove_pin_dir(self, path: str) -> bool:
        try:
            os.rmdir(path)
        except OSError as e:
            if e.errno in (errno_mod.ENOENT, errno_mod.ENOTEMPTY):
                return False
            raise BpfError(f"remove {path}", e.errno) from e
        return True

    def pins(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except FileNotFoundError:
            return []

    def is_pinned(self, path: str) -> bool:
        return os.path.exists(path)

    def pin(self, fd: int, path: str) -> None:
        pin(fd, path)

    def open_pinned(self, path: str) -> int:
        return obj_get(path)

    def unpin(self, path: str) -> bool:
        return unpin(path)

    def test_run(self, prog_fd, data, ctx=None, repeat=1) -> TestRun:
        return test_run(prog_fd, data, ctx, repeat)

    def ring_buffer(self, map_fd: int, callback: Callable[[bytes], None]) -> RingBuffer:
        return RingBuffer(map_fd, callback)
