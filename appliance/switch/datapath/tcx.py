"""Attach, swap and detach the datapath program with tcx (BPF links at tc ingress).

tcx (kernel >= 6.6) runs link-attached programs straight from the ingress
hook, without the clsact qdisc and cls_bpf walk (~90 ns a frame less than
the `tc` module's filter).  `supported()` probes the kernel once; where it
says no (Debian 12's 6.1), the datapath keeps using `tc`.

The guarantees are the same as with tc "replace":

- one link per port device, pinned at `<pin dir>/tcx-<device>` so it
  outlives the process that made it; re-applying updates that link, it
  never adds a second one;
- the swap is `bpf_link_update`: the kernel replaces the program in the
  device's tcx entry under RCU, a frame meets the old program or the new
  one, never neither;
- detach is `bpf_link_detach` then unpin: nothing is left on the device,
  even while some other process still holds the link.

A tcx link names its device by ifindex, resolved in the network namespace
of the calling thread, so the calls that take an ifindex run in a
short-lived thread that has joined the datapath's namespace.
"""
from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading

from . import libbpf
from .libbpf import BPF_LINK_TYPE_TCX, BPF_TCX_INGRESS, BpfError

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/var/run/netns"
PIN_PREFIX = "tcx-"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int

_supported: bool | None = None
_probe_lock = threading.Lock()


def in_netns(netns: str | None, fn, *args):
    """Call `fn(*args)` in network namespace `netns` (None: ours); return or raise its result."""
    if not netns:
        return fn(*args)
    out: dict = {}

    def run():
        try:
            fd = os.open(os.path.join(NETNS_RUN_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            out["value"] = fn(*args)
        except BaseException as e:      # handed to the caller below
            out["error"] = e

    t = threading.Thread(target=run, name=f"tcx-{netns}")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def supported() -> bool:
    """Whether this kernel has tcx (probed once: a tcx query on lo)."""
    global _supported
    with _probe_lock:
        if _supported is None:
            try:
                libbpf.prog_query(socket.if_nametoindex("lo"), BPF_TCX_INGRESS)
                _supported = True
            except OSError:
                _supported = False
        return _supported


def pin_path(pin_dir: str, device: str) -> str:
    return os.path.join(pin_dir, PIN_PREFIX + device)


def pinned(pin_dir: str) -> list[str]:
    """Every tcx link pin under a datapath's pin dir."""
    try:
        names = os.listdir(pin_dir)
    except FileNotFoundError:
        return []
    return [os.path.join(pin_dir, n) for n in sorted(names) if n.startswith(PIN_PREFIX)]


def attach(netns: str | None, path: str, ifindex: int, prog_fd: int) -> str:
    """Install or atomically swap the program on one device; 'updated' or 'created'."""
    if os.path.exists(path):
        fd = libbpf.obj_get(path)
        try:
            info = libbpf.link_info(fd)
            if (info.type == BPF_LINK_TYPE_TCX and info.attach_type == BPF_TCX_INGRESS
                    and info.ifindex == ifindex):
                libbpf.link_update(fd, prog_fd)
                return "updated"
            # The device went away (ifindex 0) or was recreated: drop the stale link.
            _detach_fd(fd)
        finally:
            os.close(fd)
        libbpf.unpin(path)
    fd = in_netns(netns, libbpf.link_create, prog_fd, ifindex, BPF_TCX_INGRESS)
    try:
        libbpf.pin(fd, path)
    except BaseException:
        _detach_fd(fd)
        raise
    finally:
        os.close(fd)
    return "created"


def _detach_fd(fd: int) -> None:
    try:
        libbpf.link_detach(fd)
    except BpfError as e:
        if e.errno not in (errno.ENOLINK, errno.ENOENT, errno.EINVAL):
            raise


def detach(path: str) -> bool:
    """Detach and unpin the link at `path`; False if there was none."""
    if not os.path.exists(path):
        return False
    try:
        fd = libbpf.obj_get(path)
    except BpfError:
        return libbpf.unpin(path)
    try:
        _detach_fd(fd)
    finally:
        os.close(fd)
    libbpf.unpin(path)
    return True


def programs(netns: str | None, ifindex: int) -> list[int]:
    """Ids of every program attached with tcx at ingress of a device."""
    if not supported():
        return []
    return in_netns(netns, libbpf.prog_query, ifindex, BPF_TCX_INGRESS)


def link(path: str) -> libbpf.LinkInfo | None:
    """The pinned link at `path` (its id, its program's id, its device), None without a pin."""
    if not os.path.exists(path):
        return None
    fd = libbpf.obj_get(path)
    try:
        return libbpf.link_info(fd)
    finally:
        os.close(fd)
