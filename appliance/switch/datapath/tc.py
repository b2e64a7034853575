"""Attach, swap and detach the datapath program at tc ingress (clsact).

One filter per port, always at the same priority and handle, installed
with "replace": the kernel swaps the program pointer under RCU, so a frame
is handled either by the old program or by the new one, never by neither
(Cilium's and bridger's way).  Without a fixed priority the kernel would
pick a new one and add a second filter instead of replacing the first.

This is the fallback: where the kernel has tcx (>= 6.6) the datapath
attaches with BPF links instead (`tcx`), which skips the clsact/cls_bpf
walk.
"""
from __future__ import annotations

import errno
from contextlib import contextmanager

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

PARENT_INGRESS = 0xFFFFFFF2   # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)
PRIO = 0xC001                 # ours; other filters can sit before or after
HANDLE = 1
ETH_P_ALL = 0x0003
FILTER_NAME = "appliance-dp"


@contextmanager
def rtnl(netns: str | None = None):
    """An IPRoute socket, in `netns` if given."""
    ipr = IPRoute(netns=netns) if netns else IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def ifindex(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise LookupError(f"no interface named {name}")
    return found[0]


def ensure_clsact(ipr: IPRoute, index: int) -> None:
    try:
        ipr.tc("add", "clsact", index)
    except NetlinkError as e:
        if e.code != errno.EEXIST:
            raise


def attach(ipr: IPRoute, index: int, prog_fd: int) -> None:
    """Install or atomically replace our ingress filter on one device."""
    ensure_clsact(ipr, index)
    ipr.tc("replace-filter", "bpf", index, HANDLE, parent=PARENT_INGRESS,
           fd=prog_fd, name=FILTER_NAME, direct_action=True, prio=PRIO,
           protocol=ETH_P_ALL)


def filters(ipr: IPRoute, index: int) -> list[dict]:
    """Every ingress filter on a device, as (prio, handle, kind, name, prog id)."""
    out = []
    try:
        msgs = ipr.get_filters(index=index, parent=PARENT_INGRESS)
    except NetlinkError as e:
        if e.code in (errno.EINVAL, errno.ENOENT):
            return []   # no clsact qdisc
        raise
    for m in msgs:
        opts = m.get_attr("TCA_OPTIONS")
        if opts is None:
            continue  # the chain header the kernel reports per priority
        out.append({
            "prio": m["info"] >> 16,
            "handle": m["handle"],
            "kind": m.get_attr("TCA_KIND"),
            "name": opts.get_attr("TCA_BPF_NAME"),
            "prog_id": opts.get_attr("TCA_BPF_ID"),
        })
    return out


def ours(ipr: IPRoute, index: int) -> bool:
    """Whether our filter is on a device (e.g. left from before a switch to tcx)."""
    return any(f["prio"] == PRIO and f["handle"] == HANDLE for f in filters(ipr, index))


def detach(ipr: IPRoute, index: int) -> None:
    """Remove our filter, and the clsact qdisc if nothing else uses it."""
    try:
        ipr.tc("del-filter", "bpf", index, HANDLE, parent=PARENT_INGRESS, prio=PRIO,
               protocol=ETH_P_ALL)
    except NetlinkError as e:
        if e.code not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
            raise
    if filters(ipr, index):
        return
    try:
        ipr.tc("del", "clsact", index)
    except NetlinkError as e:
        if e.code not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
            raise
