"""Programs at tc ingress of a device: tcx links, or a clsact filter where the kernel has no tcx.

tcx (kernel >= 6.6) runs link-attached programs straight from the ingress
hook, without the clsact qdisc and cls_bpf walk (~90 ns a frame less).
Debian 12's 6.1 has no tcx: there a program sits in a clsact filter
instead. `Tc.tcx_supported()` says which one the kernel offers; the caller
chooses (the datapath moves from one to the other on the next apply).

Both swap a program atomically, a frame meets the old program or the new
one, never neither:

- the clsact filter is ours by a fixed priority and handle (`PRIO`,
  `HANDLE`) and installed with "replace": the kernel swaps the program
  pointer under RCU (Cilium's and bridger's way). Without a fixed priority
  the kernel would pick a new one and add a second filter;
- a tcx link is pinned (it outlives the process that made it) and
  re-attaching through the same pin is `bpf_link_update`, never a second
  link; detaching is `bpf_link_detach`, so nothing is left on the device
  even while another process still holds the link.

Devices are named by ifindex in the namespace `netns` (None: our own).
`LinuxTc` does it with pyroute2 and libbpf; `FakeTc`
(`appliance.kernel.fake_tc`) keeps filters and links in memory.
"""
from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Protocol

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from appliance.kernel import libbpf
from appliance.kernel.base import KernelError
from appliance.kernel.bpf import BpfError, LinkInfo
from appliance.kernel.setns import in_netns

PARENT_INGRESS = 0xFFFFFFF2   # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)
PARENT_EGRESS = 0xFFFFFFF3    # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS)
PRIO = 0xC001                 # ours; other filters can sit before or after
HANDLE = 1
ETH_P_ALL = 0x0003
FILTER_NAME = "appliance-dp"
TCA_BPF_ID = 11               # newer than pyroute2's map of cls_bpf's attributes
BPF_TCX_INGRESS = libbpf.BPF_TCX_INGRESS
BPF_LINK_TYPE_TCX = libbpf.BPF_LINK_TYPE_TCX


@dataclass(frozen=True)
class Filter:
    """An ingress filter on a device."""

    prio: int
    handle: int
    kind: str
    name: str | None
    prog_id: int | None


class Tc(Protocol):
    def tcx_supported(self) -> bool: ...

    # the clsact filter (kernels without tcx)
    def filter_attach(self, netns: str | None, ifindex: int, prog_fd: int) -> None:
        """Install or atomically replace our ingress filter on a device."""
    def filter_detach(self, netns: str | None, ifindex: int) -> None:
        """Remove our filter, and the clsact qdisc if nothing else uses it (no device: nothing)."""
    def filters(self, netns: str | None, ifindex: int) -> list[Filter]:
        """Every ingress filter on a device, ours or not."""

    # tcx links
    def link_attach(self, netns: str | None, pin: str, ifindex: int, prog_fd: int) -> str:
        """Run `prog_fd` at ingress of a device through the link pinned at `pin`:
        'updated' (same link, new program) or 'created' (a stale link is replaced)."""
    def link_detach(self, pin: str) -> bool:
        """Detach and unpin the link at `pin`; False if there was none."""
    def link(self, pin: str) -> LinkInfo | None: ...
    def tcx_programs(self, netns: str | None, ifindex: int) -> list[int]:
        """Ids of the programs tcx runs at ingress of a device."""


def ours(filters: list[Filter]) -> bool:
    """Whether our filter is among a device's filters."""
    return any(f.prio == PRIO and f.handle == HANDLE for f in filters)


_probe_lock = threading.Lock()
_probed: bool | None = None


def _probe() -> bool:
    global _probed
    with _probe_lock:
        if _probed is None:
            try:
                libbpf.prog_query(socket.if_nametoindex("lo"), BPF_TCX_INGRESS)
                _probed = True
            except OSError:
                _probed = False
        return _probed


class LinuxTc:
    """`Tc` on the running kernel. `tcx`: force the answer of `tcx_supported()`
    (False: as on a kernel without tcx); None probes the kernel, once."""

    def __init__(self, tcx: bool | None = None):
        self.tcx = tcx

    def tcx_supported(self) -> bool:
        return _probe() if self.tcx is None else self.tcx

    # -- clsact -------------------------------------------------------------
    def _netlink(self, netns, what: str, fn, *args):
        def call():
            with IPRoute() as ipr:
                return fn(ipr, *args)
        try:
            return outside_event_loop(lambda: in_netns(netns, call))
        except (NetlinkError, OSError) as e:
            raise KernelError(f"netns {netns or '(own)'}: {what}: {e}") from e

    def filter_attach(self, netns, ifindex, prog_fd, prio: int = PRIO, name: str = FILTER_NAME,
                      parent: int = PARENT_INGRESS) -> None:
        """`prio`, `name`: another program's own filter beside the datapath's; `parent`:
        PARENT_EGRESS for the egress hook."""
        def attach(ipr: IPRoute) -> None:
            try:
                ipr.tc("add", "clsact", ifindex)
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise
            ipr.tc("replace-filter", "bpf", ifindex, HANDLE, parent=parent,
                   fd=prog_fd, name=name, direct_action=True, prio=prio,
                   protocol=ETH_P_ALL)
        self._netlink(netns, f"tc filter on ifindex {ifindex}", attach)

    def filter_detach(self, netns, ifindex, prio: int = PRIO, parent: int = PARENT_INGRESS) -> None:
        def detach(ipr: IPRoute) -> None:
            try:
                ipr.tc("del-filter", "bpf", ifindex, HANDLE, parent=parent, prio=prio,
                       protocol=ETH_P_ALL)
            except NetlinkError as e:
                if e.code not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
                    raise
            if _filters(ipr, ifindex) or _filters(ipr, ifindex, PARENT_EGRESS):
                return  # the qdisc still holds another program's filter
            try:
                ipr.tc("del", "clsact", ifindex)
            except NetlinkError as e:
                if e.code not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
                    raise
        self._netlink(netns, f"tc filter off ifindex {ifindex}", detach)

    def filters(self, netns, ifindex) -> list[Filter]:
        return self._netlink(netns, f"tc filters of ifindex {ifindex}", _filters, ifindex)

    # -- tcx ----------------------------------------------------------------
    def link_attach(self, netns, pin, ifindex, prog_fd) -> str:
        if os.path.exists(pin):
            fd = libbpf.obj_get(pin)
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
            libbpf.unpin(pin)
        # A tcx link names its device by ifindex in the calling thread's namespace.
        fd = in_netns(netns, libbpf.link_create, prog_fd, ifindex, BPF_TCX_INGRESS)
        try:
            libbpf.pin(fd, pin)
        except BaseException:
            _detach_fd(fd)
            raise
        finally:
            os.close(fd)
        return "created"

    def link_detach(self, pin) -> bool:
        if not os.path.exists(pin):
            return False
        try:
            fd = libbpf.obj_get(pin)
        except BpfError:
            return libbpf.unpin(pin)
        try:
            _detach_fd(fd)
        finally:
            os.close(fd)
        libbpf.unpin(pin)
        return True

    def link(self, pin) -> LinkInfo | None:
        if not os.path.exists(pin):
            return None
        fd = libbpf.obj_get(pin)
        try:
            return libbpf.link_info(fd)
        finally:
            os.close(fd)

    def tcx_programs(self, netns, ifindex) -> list[int]:
        if not self.tcx_supported():
            return []
        return in_netns(netns, libbpf.prog_query, ifindex, BPF_TCX_INGRESS)


def outside_event_loop(fn):
    """`fn()`, on a thread of its own when this one runs an asyncio loop.

    pyroute2's synchronous IPRoute drives an event loop of its own and fails
    with "this event loop is already running" inside a running one: the DNS
    server attaching its clsact filter on 6.1 (no tcx) did."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    result: list = []

    def run():
        try:
            result.append((True, fn()))
        except BaseException as e:  # re-raised on the caller's thread
            result.append((False, e))
    t = threading.Thread(target=run, name="netlink")
    t.start()
    t.join()
    ok, value = result[0]
    if not ok:
        raise value
    return value


def _filters(ipr: IPRoute, ifindex: int, parent: int = PARENT_INGRESS) -> list[Filter]:
    out = []
    try:
        msgs = ipr.get_filters(index=ifindex, parent=parent)
    except NetlinkError as e:
        if e.code in (errno.EINVAL, errno.ENOENT, errno.ENODEV):
            return []   # no clsact qdisc (or no device)
        raise
    for m in msgs:
        opts = m.get_attr("TCA_OPTIONS")
        if opts is None:
            continue  # the chain header the kernel reports per priority
        out.append(Filter(prio=m["info"] >> 16, handle=m["handle"], kind=m.get_attr("TCA_KIND"),
                          name=opts.get_attr("TCA_BPF_NAME"), prog_id=_attr_u32(opts, TCA_BPF_ID)))
    return out


def _attr_u32(nla, kind: int) -> int | None:
    """A u32 attribute pyroute2 leaves undecoded, read from the nested attribute's own bytes."""
    raw = bytes(nla.data[nla.offset:nla.offset + nla.length])
    pos = 4                                   # past the nested attribute's header
    while pos + 4 <= len(raw):
        length, ty = struct.unpack_from("=HH", raw, pos)
        if length < 4:
            break
        if ty & 0x3FFF == kind and length >= 8:
            return struct.unpack_from("=I", raw, pos + 4)[0]
        pos += (length + 3) & ~3
    return None


def _detach_fd(fd: int) -> None:
    try:
        libbpf.link_detach(fd)
    except BpfError as e:
        if e.errno not in (errno.ENOLINK, errno.ENOENT, errno.EINVAL):
            raise
