"""Run one call inside another network namespace, from a short-lived thread.

Some kernel calls name a device by ifindex, or open a netlink socket, in
the network namespace of the calling thread. Rather than fork a helper
process (pyroute2's way for a socket in another namespace, ~7 ms), a thread
joins the namespace with setns(2), makes the call and ends (~0.1 ms): the
process's other threads never leave their own namespace.
"""
from __future__ import annotations

import ctypes
import os
import threading
from typing import Callable, TypeVar

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/var/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int

T = TypeVar("T")


def in_netns(netns: str | None, fn: Callable[..., T], *args) -> T:
    """`fn(*args)` in network namespace `netns` (None: this thread's own); its result or its error."""
    if not netns:
        return fn(*args)
    out: dict = {}

    def run() -> None:
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

    t = threading.Thread(target=run, name=f"netns-{netns}")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def socket_in(netns: str | None, family: int, kind: int) -> "socket.socket":
    """A socket made inside network namespace `netns`: it stays there, whatever
    namespace the thread using it runs in (how the watchdog asks vproxy's DNS
    server the way a client would, from the host namespace)."""
    import socket

    return in_netns(netns, socket.socket, family, kind)
