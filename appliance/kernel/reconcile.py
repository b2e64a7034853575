"""Make the kernel hold a desired state, changing only what differs.

`reconcile(kernel, objects)` walks the objects in dependency order
(namespaces and their namespace-wide sysctls, bridges and dummies, veths,
bridge ports, per-link sysctls, then links up, nftables, addresses,
routes), compares each with what the kernel reports, and returns the list
of changes it made; a second run with the same objects returns [] and makes
no mutating call. `remove` undoes objects in reverse order.

Links come up only after every sysctl is in place: a link that comes up
before its `disable_ipv6` would already have sent IPv6 DAD and router
solicitations, which an invisible box must never do. nftables tables come
before addresses (a rule names addresses and links by value, never needs
them to exist): a table that drops what a new address would send (vproxy's
MLD report for its link-local address) holds before the address is added.
"""
from __future__ import annotations

import re
from typing import Callable, Iterable

from appliance.kernel.base import Kernel, KernelError
from appliance.kernel.desired import (
    Address, Bridge, BridgePort, Dummy, Namespace, NftTable, Object, RouteEntry, Sysctls, Veth,
)

_ORDER = (Namespace, "namespace sysctls", Bridge, Dummy, Veth, BridgePort, Sysctls, "links up",
          NftTable, Address, RouteEntry)
_RANK = {k: i for i, k in enumerate(_ORDER)}
_PER_LINK = re.compile(r"\.conf\.(?!all\.|default\.)[^.]+\.")
Progress = Callable[[str], None]


def _rank(obj: Object) -> int:
    # Namespace-wide sysctls (all/default, bridge-nf) go before any link
    # exists, so a new link never chatters (IPv6 DAD, RS) before it is quiet.
    if isinstance(obj, Sysctls) and not any(_PER_LINK.search(k) for k, _ in obj.values):
        return _RANK["namespace sysctls"]
    return _RANK[type(obj)]


def ordered(objects: Iterable[Object]) -> list[Object]:
    return sorted(objects, key=_rank)  # stable: plan order kept within a kind


class _View:
    """Caches what the kernel reports per namespace during one reconcile."""

    def __init__(self, kernel: Kernel):
        self.k = kernel
        self._links: dict = {}
        self.pending_up: list[tuple] = []  # links to bring up once every sysctl is set

    def links(self, ns):
        if ns not in self._links:
            self._links[ns] = {l.name: l for l in self.k.links(ns)}
        return self._links[ns]

    def forget(self, ns):
        self._links.pop(ns, None)


def _bring_up(v: _View, changes: list[str], progress: Progress | None) -> None:
    for ns, name, what in v.pending_up:
        if not v.links(ns)[name].up:
            v.k.set_link(ns, name, up=True)
            changes.append(f"~ {what}: up")
            if progress:
                progress(changes[-1])
            v.forget(ns)
    v.pending_up = []


def _ensure_link_props(v: _View, ns, name, mac, master, changes, what):
    link = v.links(ns)[name]
    if mac and link.mac != mac.lower():
        v.k.set_link(ns, name, mac=mac.lower())
        changes.append(f"~ {what}: mac {link.mac} -> {mac.lower()}")
    if master and link.master != master:
        v.k.set_link(ns, name, master=master)
        changes.append(f"~ {what}: master {master}")
    v.pending_up.append((ns, name, what))
    v.forget(ns)


def _family(cidr: str) -> int:
    return 6 if ":" in cidr else 4


def _same_route(want, have) -> bool:
    # The kernel always reports the output device; a plan may leave it to the kernel.
    return (want.dst, want.via, want.type, want.table) == (have.dst, have.via, have.type, have.table) \
        and (want.dev is None or want.dev == have.dev)


def _apply_one(v: _View, obj: Object, changes: list[str]) -> None:
    k = v.k
    if isinstance(obj, Namespace):
        if obj.name not in k.list_netns():
            k.add_netns(obj.name)
            changes.append(f"+ {obj.key()}")
    elif isinstance(obj, Bridge):
        if obj.name not in v.links(obj.ns):
            k.add_bridge(obj.ns, obj.name, obj.mac)
            changes.append(f"+ {obj.key()}")
            v.forget(obj.ns)
        _ensure_link_props(v, obj.ns, obj.name, obj.mac, None, changes, obj.key())
    elif isinstance(obj, Dummy):
        if obj.name not in v.links(obj.ns):
            k.add_dummy(obj.ns, obj.name)
            changes.append(f"+ {obj.key()}")
            v.forget(obj.ns)
        _ensure_link_props(v, obj.ns, obj.name, None, None, changes, obj.key())
    elif isinstance(obj, Veth):
        have = obj.name in v.links(obj.ns)
        have_peer = obj.peer in v.links(obj.peer_ns)
        if have != have_peer:
            # Half a pair is left from something else: start this pair afresh.
            if have:
                k.del_link(obj.ns, obj.name)
            if have_peer:
                k.del_link(obj.peer_ns, obj.peer)
            have = False
        if not have:
            k.add_veth(obj.ns, obj.name, obj.peer_ns, obj.peer, obj.mac, obj.peer_mac)
            changes.append(f"+ {obj.key()}")
            v.forget(obj.ns)
            v.forget(obj.peer_ns)
        _ensure_link_props(v, obj.ns, obj.name, obj.mac, obj.master, changes, f"{obj.ns}/{obj.name}")
        _ensure_link_props(v, obj.peer_ns, obj.peer, obj.peer_mac, obj.peer_master, changes,
                           f"{obj.peer_ns}/{obj.peer}")
    elif isinstance(obj, BridgePort):
        if obj.name not in v.links(obj.ns):
            raise KernelError(f"{obj.key()}: there is no link named {obj.name} in {obj.ns or 'this namespace'}")
        _ensure_link_props(v, obj.ns, obj.name, obj.mac, obj.master, changes, obj.key())
    elif isinstance(obj, Address):
        if obj.cidr not in k.addresses(obj.ns, obj.dev, _family(obj.cidr)):
            k.add_address(obj.ns, obj.dev, obj.cidr)
            changes.append(f"+ {obj.key()}")
    elif isinstance(obj, RouteEntry):
        if not any(_same_route(obj.route, r) for r in k.routes(obj.ns)):
            k.add_route(obj.ns, obj.route)
            changes.append(f"+ {obj.key()}")
    elif isinstance(obj, Sysctls):
        want = dict(obj.values)
        have = k.get_sysctls(obj.ns, list(want))
        # A key the kernel does not have (br_netfilter not loaded) has nothing to turn off.
        diff = {key: val for key, val in want.items() if have.get(key) is not None and have[key] != val}
        if diff:
            k.set_sysctls(obj.ns, diff)
            changes.append(f"~ sysctl {obj.ns}: " + " ".join(f"{a}={b}" for a, b in diff.items()))
    elif isinstance(obj, NftTable):
        current = k.nft_table(obj.ns, obj.family, obj.name)
        if current is None or f"appliance:{obj.digest}" not in current:
            k.nft_load(obj.ns, obj.ruleset())
            changes.append(f"{'+' if current is None else '~'} {obj.key()}")
    else:  # pragma: no cover - a new kind of object without a rule is a bug
        raise TypeError(f"no reconcile rule for {type(obj).__name__}")


def reconcile(kernel: Kernel, objects: Iterable[Object], progress: Progress | None = None) -> list[str]:
    with kernel.batch():
        return _reconcile(kernel, objects, progress)


def _reconcile(kernel: Kernel, objects: Iterable[Object], progress: Progress | None) -> list[str]:
    view = _View(kernel)
    changes: list[str] = []
    up_rank = _RANK["links up"]
    for obj in ordered(objects):
        if view.pending_up and _rank(obj) > up_rank:
            _bring_up(view, changes, progress)
        before = len(changes)
        try:
            _apply_one(view, obj, changes)
        except KernelError as e:
            raise KernelError(f"{obj.key()}: {e}") from e
        if progress:
            for line in changes[before:]:
                progress(line)
    _bring_up(view, changes, progress)
    return changes


def remove(kernel: Kernel, objects: Iterable[Object]) -> list[str]:
    """Remove what the objects describe; namespaces last (they take their links along)."""
    with kernel.batch():
        return _remove(kernel, objects)


def _remove(kernel: Kernel, objects: Iterable[Object]) -> list[str]:
    changes = []
    present = set(kernel.list_netns())
    for obj in reversed(ordered(objects)):
        ns = getattr(obj, "ns", None)
        if ns is not None and ns not in present:
            continue
        if isinstance(obj, Namespace) and obj.name in present:
            kernel.del_netns(obj.name)
            present.discard(obj.name)
            changes.append(f"- {obj.key()}")
        elif isinstance(obj, NftTable):
            if kernel.nft_table(obj.ns, obj.family, obj.name) is not None:
                kernel.nft_delete_table(obj.ns, obj.family, obj.name)
                changes.append(f"- {obj.key()}")
        elif isinstance(obj, Address):
            names = {l.name for l in kernel.links(obj.ns)}
            if obj.dev in names and obj.cidr in kernel.addresses(obj.ns, obj.dev, _family(obj.cidr)):
                kernel.del_address(obj.ns, obj.dev, obj.cidr)
                changes.append(f"- {obj.key()}")
        elif isinstance(obj, RouteEntry):
            have = [r for r in kernel.routes(obj.ns) if _same_route(obj.route, r)]
            for r in have:
                kernel.del_route(obj.ns, r)
                changes.append(f"- {obj.key()}")
        elif isinstance(obj, BridgePort):
            links = {l.name: l for l in kernel.links(obj.ns)}
            if obj.name in links and links[obj.name].master == obj.master:
                kernel.set_link(obj.ns, obj.name, nomaster=True)
                changes.append(f"- {obj.key()}")
            if obj.name in links and obj.original_mac and links[obj.name].mac != obj.original_mac:
                kernel.set_link(obj.ns, obj.name, mac=obj.original_mac)
                changes.append(f"~ {obj.ns}/{obj.name}: mac back to {obj.original_mac}")
        elif isinstance(obj, (Bridge, Dummy, Veth)):
            if obj.name in {l.name for l in kernel.links(obj.ns)}:
                kernel.del_link(obj.ns, obj.name)
                changes.append(f"- {obj.key()}")
    return changes
