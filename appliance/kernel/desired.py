"""Desired network state as plain data: what a plan asks the kernel to hold.

Plans (the box's, the lab's) are lists of these objects; `reconcile` makes
the kernel match them. Frozen dataclasses so two plans compare and diff.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from appliance.kernel.base import Route


@dataclass(frozen=True)
class Namespace:
    name: str

    def key(self) -> str:
        return f"netns {self.name}"


@dataclass(frozen=True)
class Bridge:
    ns: str | None
    name: str
    mac: str | None = None

    def key(self) -> str:
        return f"bridge {self.ns}/{self.name}"


@dataclass(frozen=True)
class Dummy:
    ns: str | None
    name: str

    def key(self) -> str:
        return f"dummy {self.ns}/{self.name}"


@dataclass(frozen=True)
class Veth:
    """A veth pair; each end may have a fixed MAC and a bridge to join."""

    ns: str | None
    name: str
    peer_ns: str | None
    peer: str
    mac: str | None = None
    peer_mac: str | None = None
    master: str | None = None
    peer_master: str | None = None

    def key(self) -> str:
        return f"veth {self.ns}/{self.name} <-> {self.peer_ns}/{self.peer}"


@dataclass(frozen=True)
class BridgePort:
    """An existing link (a NIC) made a port of a bridge; removing it only frees the link.

    `mac` gives the link another MAC while it is a port (and `original_mac`
    is put back when it stops being one).
    """

    ns: str | None
    name: str
    master: str
    mac: str | None = None
    original_mac: str | None = None

    def key(self) -> str:
        return f"bridge-port {self.ns}/{self.name} master {self.master}"


@dataclass(frozen=True)
class Address:
    ns: str | None
    dev: str
    cidr: str

    def key(self) -> str:
        return f"address {self.ns}/{self.dev} {self.cidr}"


@dataclass(frozen=True)
class RouteEntry:
    ns: str | None
    route: Route

    def key(self) -> str:
        r = self.route
        via = f" via {r.via}" if r.via else ""
        dev = f" dev {r.dev}" if r.dev else ""
        kind = "local " if r.type == "local" else ""
        table = f" table {r.table}" if r.table != "main" else ""
        return f"route {self.ns}: {kind}{r.dst}{via}{dev}{table}"


@dataclass(frozen=True)
class Sysctls:
    ns: str | None
    values: tuple[tuple[str, str], ...]

    def key(self) -> str:
        return f"sysctl {self.ns}: " + " ".join(f"{k}={v}" for k, v in self.values)


@dataclass(frozen=True)
class NftTable:
    """One nftables table, owned whole: its body is replaced atomically."""

    ns: str | None
    family: str
    name: str
    body: str  # the statements inside `table FAMILY NAME { ... }`

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.body.encode()).hexdigest()[:16]

    def ruleset(self) -> str:
        # The digest rides in the table's comment so a later apply can tell,
        # from `nft list table`, whether the kernel holds this exact body.
        return (
            f"table {self.family} {self.name}\n"
            f"delete table {self.family} {self.name}\n"
            f"table {self.family} {self.name} {{\n"
            f'  comment "appliance:{self.digest}"\n'
            f"{self.body}\n}}\n"
        )

    def key(self) -> str:
        return f"nft {self.ns}: table {self.family} {self.name} ({self.digest})"


Object = Namespace | Bridge | Dummy | Veth | BridgePort | Address | RouteEntry | Sysctls | NftTable
