"""The real kernel: pyroute2 for netlink, nft for nftables, processes from `LinuxProcesses`.

Reads never change anything: asking about a namespace that is not there is a
KernelError, not a new empty namespace (pyroute2 creates one unless told not to).
"""
from __future__ import annotations

import errno
import socket
import subprocess
import threading
from contextlib import contextmanager
from typing import Iterator, Sequence

from pyroute2 import IPRoute, netns as pr_netns
from pyroute2.netlink.exceptions import NetlinkError

from appliance.kernel.base import KernelError, Link, Route
from appliance.kernel.process import LinuxProcesses, require_netns

IFF_UP = 0x1
_TABLES = {"main": 254, "local": 255}
_TABLE_NAMES = {v: k for k, v in _TABLES.items()}


def _run(argv: Sequence[str], *, input: str | None = None) -> str:
    try:
        res = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=30)
    except FileNotFoundError as e:
        raise KernelError(f"{argv[0]}: not installed ({e})") from e
    if res.returncode != 0:
        raise KernelError(f"{' '.join(argv)}: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout


def _in_ns(ns: str | None, argv: Sequence[str]) -> list[str]:
    # nsenter keeps the mount namespace: cheaper than `ip netns exec` where
    # /etc/netns files do not matter (sysctl, nft).
    return list(argv) if ns is None else ["nsenter", f"--net=/run/netns/{ns}", *argv]


class LinuxKernel(LinuxProcesses):

    def __init__(self, *args, reuse_sockets: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._batch = threading.local()
        self.reuse_sockets = reuse_sockets

    # -- one netlink socket per namespace for a batch of calls ----------------
    @contextmanager
    def batch(self) -> Iterator[None]:
        """Inside it, this thread's calls reuse one netlink socket per namespace.

        Opening a socket in another namespace costs pyroute2 a helper process
        (about 6 ms); an apply's reconcile opened 25 of them for nothing.
        """
        if not self.reuse_sockets or getattr(self._batch, "sockets", None) is not None:
            yield  # no reuse (a socket per call), or nested: the outer batch owns the sockets
            return
        self._batch.sockets = {}
        try:
            yield
        finally:
            sockets, self._batch.sockets = self._batch.sockets, None
            for ip in sockets.values():
                ip.close()

    def _forget_socket(self, ns: str) -> None:
        # A namespace removed (or made anew under its name): its socket is of the old one.
        sockets = getattr(self._batch, "sockets", None)
        if sockets is not None and ns in sockets:
            sockets.pop(ns).close()

    # -- namespaces ---------------------------------------------------------
    def list_netns(self) -> list[str]:
        return sorted(pr_netns.listnetns())

    def add_netns(self, name: str) -> None:
        self._forget_socket(name)
        try:
            pr_netns.create(name)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise KernelError(f"netns {name}: {e}") from e
        with self._ip(name) as ip:
            ip.link("set", index=ip.link_lookup(ifname="lo")[0], state="up")

    def del_netns(self, name: str) -> None:
        self._forget_socket(name)
        try:
            pr_netns.remove(name)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise KernelError(f"netns {name}: {e}") from e

    # -- links --------------------------------------------------------------
    @contextmanager
    def _ip(self, ns: str | None) -> Iterator[IPRoute]:
        require_netns(ns)
        sockets = getattr(self._batch, "sockets", None)
        ip = sockets.get(ns or "") if sockets is not None else None
        if ip is None:
            try:
                # flags=0: open the namespace, never create it (pyroute2's default is O_CREAT).
                ip = IPRoute(netns=ns, flags=0) if ns else IPRoute()
            except FileNotFoundError as e:
                raise KernelError(f"netns {ns}: no such network namespace") from e
            except OSError as e:
                raise KernelError(f"netns {ns}: {e}") from e
            if sockets is not None:
                sockets[ns or ""] = ip
        try:
            yield ip
        except NetlinkError as e:
            raise KernelError(f"netns {ns or '(own)'}: {e}") from e
        finally:
            if sockets is None:
                ip.close()

    def _index(self, ip: IPRoute, ns: str | None, name: str) -> int:
        idx = ip.link_lookup(ifname=name)
        if not idx:
            raise KernelError(f"netns {ns or '(own)'}: no link named {name}")
        return idx[0]

    def links(self, ns: str | None) -> list[Link]:
        with self._ip(ns) as ip:
            msgs = list(ip.get_links())
        names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in msgs}
        out = []
        for m in msgs:
            info = m.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info else None
            master = m.get_attr("IFLA_MASTER")
            out.append(Link(
                name=m.get_attr("IFLA_IFNAME"),
                kind=kind or "device",
                mac=(m.get_attr("IFLA_ADDRESS") or "").lower(),
                up=bool(m["flags"] & IFF_UP),
                master=names.get(master) if master else None,
                mtu=m.get_attr("IFLA_MTU") or 0,
                ifindex=m["index"],
            ))
        return out

    def add_veth(self, ns, name, peer_ns, peer, mac=None, peer_mac=None) -> None:
        peer_spec: dict = {"ifname": peer}
        if peer_ns != ns:
            # A name for the peer's namespace: ip netns names are resolved by pyroute2.
            peer_spec["net_ns_fd"] = peer_ns if peer_ns else "/proc/1/ns/net"
        if peer_mac:
            peer_spec["address"] = peer_mac
        kw = {"address": mac} if mac else {}
        with self._ip(ns) as ip:
            ip.link("add", ifname=name, kind="veth", peer=peer_spec, **kw)

    def add_bridge(self, ns, name, mac=None) -> None:
        kw = {"address": mac} if mac else {}
        with self._ip(ns) as ip:
            # STP off: the box must not emit BPDUs on either side.
            ip.link("add", ifname=name, kind="bridge", br_stp_state=0, **kw)

    def add_dummy(self, ns, name) -> None:
        with self._ip(ns) as ip:
            ip.link("add", ifname=name, kind="dummy")

    def set_link(self, ns, name, *, up=None, master=None, nomaster=False, mac=None) -> None:
        with self._ip(ns) as ip:
            idx = self._index(ip, ns, name)
            kw: dict = {}
            if mac is not None:
                kw["address"] = mac
            if master is not None:
                kw["master"] = self._index(ip, ns, master)
            elif nomaster:
                kw["master"] = 0
            if kw:
                ip.link("set", index=idx, **kw)
            if up is not None:
                ip.link("set", index=idx, state="up" if up else "down")

    def del_link(self, ns, name) -> None:
        with self._ip(ns) as ip:
            idx = ip.link_lookup(ifname=name)
            if idx:
                ip.link("del", index=idx[0])

    # -- addresses and routes ----------------------------------------------
    def addresses(self, ns, name, family=4) -> list[str]:
        with self._ip(ns) as ip:
            idx = self._index(ip, ns, name)
            return sorted(
                f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                for a in ip.get_addr(index=idx, family=socket.AF_INET6 if family == 6 else socket.AF_INET)
            )

    def add_address(self, ns, name, cidr) -> None:
        addr, plen = cidr.split("/")
        with self._ip(ns) as ip:
            ip.addr("add", index=self._index(ip, ns, name), address=addr, prefixlen=int(plen))

    def del_address(self, ns, name, cidr) -> None:
        addr, plen = cidr.split("/")
        with self._ip(ns) as ip:
            ip.addr("del", index=self._index(ip, ns, name), address=addr, prefixlen=int(plen))

    def routes(self, ns) -> list[Route]:
        out = []
        with self._ip(ns) as ip:
            names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in ip.get_links()}
            routes = [*ip.get_routes(family=socket.AF_INET), *ip.get_routes(family=socket.AF_INET6)]
            for r in routes:
                if r["proto"] in (2, 9):
                    continue  # made by the kernel from an address, or learnt from an RA: not ours
                table = r.get_attr("RTA_TABLE") or r["table"]
                dst = r.get_attr("RTA_DST")
                dst = f"{dst}/{r['dst_len']}" if dst else "default" if r["family"] == socket.AF_INET else "::/0"
                oif = r.get_attr("RTA_OIF")
                out.append(Route(
                    dst=dst,
                    via=r.get_attr("RTA_GATEWAY"),
                    dev=names.get(oif) if oif else None,
                    type="local" if r["type"] == 2 else "unicast",
                    table=_TABLE_NAMES.get(table, str(table)),
                ))
        return out

    def _route_kw(self, ip: IPRoute, ns, route: Route) -> dict:
        default = "::/0" if route.family == 6 else "0.0.0.0/0"
        kw: dict = {"dst": route.dst if route.dst != "default" else default}
        if route.family == 6:
            kw["family"] = socket.AF_INET6
        if route.via:
            kw["gateway"] = route.via
        if route.dev:
            kw["oif"] = self._index(ip, ns, route.dev)
        if route.type == "local":
            kw["type"] = "local"
            kw["scope"] = 254  # host, as `ip route add local` sets it
        kw["table"] = _TABLES.get(route.table) or int(route.table)
        return kw

    def add_route(self, ns, route: Route) -> None:
        with self._ip(ns) as ip:
            ip.route("add", **self._route_kw(ip, ns, route))

    def del_route(self, ns, route: Route) -> None:
        with self._ip(ns) as ip:
            ip.route("del", **self._route_kw(ip, ns, route))

    # -- sysctl -------------------------------------------------------------
    def get_sysctls(self, ns, keys) -> dict[str, str | None]:
        require_netns(ns)
        if not keys:
            return {}
        res = subprocess.run(_in_ns(ns, ["sysctl", "-e", *keys]), capture_output=True, text=True)
        out: dict[str, str | None] = {k: None for k in keys}
        for line in res.stdout.splitlines():
            k, _, v = line.partition(" = ")
            if k in out:
                out[k] = " ".join(v.split())  # "61000\t65535" reads as "61000 65535" was written
        return out

    def set_sysctls(self, ns, values) -> None:
        if values:
            _run(_in_ns(ns, ["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in values.items())]))

    # -- nftables -----------------------------------------------------------
    def nft_tables(self, ns) -> list[tuple[str, str]]:
        require_netns(ns)
        out = _run(_in_ns(ns, ["nft", "list", "tables"]))
        tables = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "table":
                tables.append((parts[1], parts[2]))
        return tables

    def nft_table(self, ns, family, name) -> str | None:
        if (family, name) not in self.nft_tables(ns):
            return None
        return _run(_in_ns(ns, ["nft", "list", "table", family, name]))

    def nft_load(self, ns, ruleset) -> None:
        # nft -f applies a file as one transaction: all or nothing.
        _run(_in_ns(ns, ["nft", "-f", "-"]), input=ruleset)

    def nft_delete_table(self, ns, family, name) -> None:
        if (family, name) in self.nft_tables(ns):
            _run(_in_ns(ns, ["nft", "delete", "table", family, name]))

    # -- neighbours ---------------------------------------------------------
    def arp_probe(self, ns, ifname, ip, timeout: float = 1.5) -> str | None:
        import sys
        require_netns(ns)
        res = subprocess.run(_in_ns(ns, [sys.executable, "-m", "appliance.kernel.arp", ifname, ip, str(timeout)]),
                             capture_output=True, text=True, timeout=timeout + 10)
        return res.stdout.strip() or None if res.returncode == 0 else None

    def neighbour_mac(self, ns, ip) -> str | None:
        """The MAC the neighbour table holds for `ip` (reachable, stale or permanent), read only."""
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        with self._ip(ns) as ipr:
            for n in ipr.get_neighbours(family=family, dst=ip):
                mac = n.get_attr("NDA_LLADDR")
                if mac and n["state"] not in (0x20, 0x01):  # NUD_FAILED, NUD_INCOMPLETE
                    return mac.lower()
        return None

    def bridge_port_of(self, ns, mac) -> str | None:
        """The bridge port the forwarding database learnt `mac` on (its own ports' MACs aside)."""
        with self._ip(ns) as ipr:
            names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in ipr.get_links()}
            for n in ipr.get_neighbours(family=socket.AF_BRIDGE):
                if (n.get_attr("NDA_LLADDR") or "").lower() == mac.lower() and not n["state"] & 0x80:
                    return names.get(n["ifindex"])  # 0x80: NUD_PERMANENT, a port's own address
        return None

    def arp_request(self, ns, ifname, sender_ip, target_ip) -> None:
        from appliance.kernel import arp

        require_netns(ns)
        try:
            arp.request(ns, ifname, sender_ip, target_ip)
        except OSError as e:
            raise KernelError(f"netns {ns or '(own)'}: ARP request on {ifname}: {e}") from e

    def arp_announce(self, ns, ifname, ip) -> None:
        from appliance.kernel import arp

        require_netns(ns)
        try:
            arp.announce(ns, ifname, ip)
        except OSError as e:
            raise KernelError(f"netns {ns or '(own)'}: gratuitous ARP on {ifname}: {e}") from e
