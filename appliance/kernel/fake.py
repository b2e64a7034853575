"""An in-memory kernel with the same behaviour as LinuxKernel, for unit tests.

It keeps namespaces, links, addresses, routes, sysctls, nftables tables and
processes (`FakeProcesses`, with the programs the test gives it) as data,
records every mutating call in `calls`, and can be told to fail a given call
(`fail_on`) so tests can check what a failed apply leaves behind.
"""
from __future__ import annotations

import itertools
import re
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Iterator

from appliance.kernel.base import KernelError, Link, Route
from appliance.kernel.fake_process import FakeProcesses

_OWN = "(own)"


@dataclass
class _Ns:
    links: dict[str, Link] = field(default_factory=dict)
    addrs: dict[str, set[str]] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    nft: dict[tuple[str, str], str] = field(default_factory=dict)


class FakeKernel(FakeProcesses):
    def __init__(self, programs=None) -> None:
        super().__init__(programs)
        self.ns: dict[str, _Ns] = {_OWN: _Ns()}
        self.peers: dict[tuple[str, str], tuple[str, str]] = {}
        self._ifindex = itertools.count(2)
        self._mac = itertools.count(1)
        self.ns[_OWN].links["lo"] = Link("lo", "device", "00:00:00:00:00:00", True, ifindex=1)

    @contextmanager
    def batch(self) -> Iterator[None]:
        yield  # nothing shared: every call is a dict lookup

    def _has_netns(self, ns: str) -> bool:
        return ns in self.ns

    def _get(self, ns: str | None) -> _Ns:
        try:
            return self.ns[ns or _OWN]
        except KeyError:
            raise KernelError(f"netns {ns}: no such network namespace") from None

    def _link(self, ns, name) -> Link:
        try:
            return self._get(ns).links[name]
        except KeyError:
            raise KernelError(f"netns {ns or _OWN}: no link named {name}") from None

    def _new_mac(self) -> str:
        n = next(self._mac)
        return "02:fa:%02x:%02x:%02x:%02x" % ((n >> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255)

    # namespaces
    def list_netns(self):
        return sorted(n for n in self.ns if n != _OWN)

    def add_netns(self, name):
        self._record("add_netns", name)
        if name not in self.ns:
            self.ns[name] = _Ns(links={"lo": Link("lo", "device", "00:00:00:00:00:00", True, ifindex=1)})

    def del_netns(self, name):
        self._record("del_netns", name)
        gone = self.ns.pop(name, None)
        if gone:
            # Deleting a namespace destroys its veths, and with them their peers.
            for (lns, lname), (pns, pname) in list(self.peers.items()):
                if lns == name:
                    if pns in self.ns:
                        self._drop(self.ns[pns], pname)
                    self.peers.pop((lns, lname), None)
                    self.peers.pop((pns, pname), None)
            self._drop_netns_processes(name)

    # links
    def links(self, ns):
        return list(self._get(ns).links.values())

    def _add(self, ns, link: Link):
        space = self._get(ns)
        if link.name in space.links:
            raise KernelError(f"netns {ns or _OWN}: link {link.name}: File exists")
        space.links[link.name] = link

    def add_veth(self, ns, name, peer_ns, peer, mac=None, peer_mac=None):
        self._record("add_veth", ns, name, peer_ns, peer)
        self._get(peer_ns)
        if peer in self._get(peer_ns).links:
            raise KernelError(f"netns {peer_ns or _OWN}: link {peer}: File exists")
        self._add(ns, Link(name, "veth", mac or self._new_mac(), False, ifindex=next(self._ifindex)))
        self._add(peer_ns, Link(peer, "veth", peer_mac or self._new_mac(), False, ifindex=next(self._ifindex)))
        self.peers[(ns or _OWN, name)] = (peer_ns or _OWN, peer)
        self.peers[(peer_ns or _OWN, peer)] = (ns or _OWN, name)

    def add_bridge(self, ns, name, mac=None):
        self._record("add_bridge", ns, name)
        self._add(ns, Link(name, "bridge", mac or self._new_mac(), False, ifindex=next(self._ifindex)))

    def add_dummy(self, ns, name):
        self._record("add_dummy", ns, name)
        self._add(ns, Link(name, "dummy", self._new_mac(), False, ifindex=next(self._ifindex)))

    def set_link(self, ns, name, *, up=None, master=None, nomaster=False, mac=None):
        self._record("set_link", ns, name, up, master, nomaster, mac)
        link = self._link(ns, name)
        if master is not None:
            self._link(ns, master)
            link = replace(link, master=master)
        elif nomaster:
            link = replace(link, master=None)
        if mac is not None:
            link = replace(link, mac=mac.lower())
        if up is not None:
            link = replace(link, up=up)
        self._get(ns).links[name] = link

    def del_link(self, ns, name):
        self._record("del_link", ns, name)
        space = self._get(ns)
        if name in space.links:
            self._drop(space, name)
            peer = self.peers.pop((ns or _OWN, name), None)
            if peer:
                pns, pname = peer
                if pns in self.ns:
                    self._drop(self.ns[pns], pname)
                self.peers.pop(peer, None)

    @staticmethod
    def _drop(space: _Ns, name: str) -> None:
        # As the kernel does: a link takes its addresses and routes along,
        # and its bridge ports are freed.
        space.links.pop(name, None)
        space.addrs.pop(name, None)
        space.routes = [r for r in space.routes if r.dev != name]
        for lname, link in list(space.links.items()):
            if link.master == name:
                space.links[lname] = replace(link, master=None)

    # addresses and routes
    def addresses(self, ns, name, family=4):
        self._link(ns, name)
        return sorted(a for a in self._get(ns).addrs.get(name, set()) if (":" in a) == (family == 6))

    def add_address(self, ns, name, cidr):
        self._record("add_address", ns, name, cidr)
        self._link(ns, name)
        addrs = self._get(ns).addrs.setdefault(name, set())
        if cidr in addrs:
            raise KernelError(f"address {cidr} on {name}: File exists")
        addrs.add(cidr)

    def del_address(self, ns, name, cidr):
        self._record("del_address", ns, name, cidr)
        self._get(ns).addrs.get(name, set()).discard(cidr)

    def routes(self, ns):
        return list(self._get(ns).routes)

    def add_route(self, ns, route):
        self._record("add_route", ns, route)
        space = self._get(ns)
        if route.dev:
            self._link(ns, route.dev)
        if any(r.dst == route.dst and r.table == route.table and r.family == route.family for r in space.routes):
            raise KernelError(f"route {route.dst}: File exists")
        space.routes.append(route)

    def del_route(self, ns, route):
        self._record("del_route", ns, route)
        space = self._get(ns)
        space.routes = [r for r in space.routes if r != route]

    # sysctl and nftables
    def get_sysctls(self, ns, keys):
        space = self._get(ns)
        return {k: space.sysctls.get(k) for k in keys}

    def set_sysctls(self, ns, values):
        self._record("set_sysctls", ns, dict(values))
        self._get(ns).sysctls.update({k: str(v) for k, v in values.items()})

    def nft_tables(self, ns):
        return sorted(self._get(ns).nft)

    def nft_table(self, ns, family, name):
        return self._get(ns).nft.get((family, name))

    def nft_load(self, ns, ruleset):
        self._record("nft_load", ns, ruleset)
        space = self._get(ns)
        # Statement by statement, as nft runs a file (in one transaction).
        for line in ruleset.splitlines():
            m = re.match(r"^\s*(delete\s+)?table\s+(\S+)\s+(\S+)", line)
            if m and m.group(1):
                space.nft.pop((m.group(2), m.group(3)), None)
            elif m:
                space.nft[(m.group(2), m.group(3))] = ruleset

    def nft_delete_table(self, ns, family, name):
        self._record("nft_delete_table", ns, family, name)
        self._get(ns).nft.pop((family, name), None)

    # neighbours: tests set `neighbours[(ns, ip)] = mac`
    def arp_probe(self, ns, ifname, ip, timeout=1.5):
        self._link(ns, ifname)
        return getattr(self, "neighbours", {}).get((ns, ip))

    def neighbour_mac(self, ns, ip):
        return getattr(self, "neighbours", {}).get((ns, ip))

    # tests set `fdb[(ns, mac)] = port`
    def bridge_port_of(self, ns, mac):
        return getattr(self, "fdb", {}).get((ns, mac.lower()))

    def arp_request(self, ns, ifname, sender_ip, target_ip):
        self._link(ns, ifname)
        self._record("arp_request", ns, ifname, sender_ip, target_ip)

    def arp_announce(self, ns, ifname, ip):
        self._link(ns, ifname)
        self._record("arp_announce", ns, ifname, ip)
