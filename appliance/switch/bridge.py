"""Bridges and ports as data, declared the way `ovs-vsctl` declares them.

A `Bridge` has a name, ports (name -> OpenFlow port number) and its
`FlowTable`. Nothing here touches the kernel: a flow table can be loaded
and traced on any machine; the datapath binds ports to real interfaces.

`BridgeStore` keeps all bridges in one JSON file under the state dir
(``<state>/switch/bridges.json``), written atomically. Flows are stored as
dump-flows text in insertion order, because that order is the tie-break
between equal-priority flows.

Port numbers: ``ofport_request=N`` asks for N (1..65279, unique in the
bridge); otherwise the lowest free number from 1 is taken, as OVS does.
Port names must be usable in flow text: no separators (`,` `=` `:` space
parentheses), not all digits, and not a reserved port name in any case
(a port named `local` would collide with LOCAL, a known OVS trap).
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import flows as FL
from .flows import Flow, FlowTable
from .normal import MacTable

_NAME_RE = re.compile(r"[A-Za-z0-9_.@+-]{1,15}")


class BridgeError(ValueError):
    """A vsctl-level error (unknown bridge, duplicate port, bad name ...)."""


def check_name(name: str, what: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise BridgeError(f"{what} name {name!r}: use 1-15 characters from A-Z a-z 0-9 _ . @ + -")
    if name.isdigit():
        raise BridgeError(f"{what} name {name!r}: all digits would read as a port number in flows")
    if name.upper() in FL.RESERVED_PORTS:
        raise BridgeError(f"{what} name {name!r} collides with the reserved port {name.upper()}")


@dataclass
class Bridge:
    name: str
    ports: dict[str, int] = field(default_factory=dict)
    flows: FlowTable = field(default_factory=FlowTable)
    macs: MacTable = field(default_factory=MacTable)

    @property
    def port_map(self) -> dict[str, int]:
        """Name -> number for the parser; the bridge's own name is LOCAL."""
        m = dict(self.ports)
        m[self.name] = FL.OFPP_LOCAL
        return m

    @property
    def port_names(self) -> dict[int, str]:
        """Number -> name for printing."""
        return {n: name for name, n in self.ports.items()}

    def add_port(self, name: str, ofport_request: int | None = None,
                 may_exist: bool = False) -> int:
        check_name(name, "port")
        if name == self.name:
            raise BridgeError(f"port {name!r}: that is the bridge's own (LOCAL) port")
        if name in self.ports:
            if may_exist and ofport_request in (None, self.ports[name]):
                return self.ports[name]
            raise BridgeError(f"bridge {self.name} already has a port named {name}")
        used = set(self.ports.values())
        if ofport_request is not None:
            if not 1 <= ofport_request < FL.OFPP_MAX:
                raise BridgeError(f"ofport_request={ofport_request}: must be 1..{FL.OFPP_MAX - 1}")
            if ofport_request in used:
                other = next(k for k, v in self.ports.items() if v == ofport_request)
                raise BridgeError(f"ofport_request={ofport_request} is already port {other}")
            number = ofport_request
        else:
            number = 1
            while number in used:
                number += 1
        self.ports[name] = number
        return number

    def renumber(self, name: str, number: int) -> None:
        """ofport_request=N for a port that exists (`set Interface P ofport_request=N`)."""
        if name not in self.ports:
            raise BridgeError(f"bridge {self.name} has no port named {name}")
        if self.ports[name] == number:
            return
        if not 1 <= number < FL.OFPP_MAX:
            raise BridgeError(f"ofport_request={number}: must be 1..{FL.OFPP_MAX - 1}")
        other = next((k for k, v in self.ports.items() if v == number), None)
        if other is not None:
            raise BridgeError(f"ofport_request={number} is already port {other}")
        self.ports[name] = number

    def del_port(self, name: str, if_exists: bool = False) -> None:
        if name not in self.ports:
            if if_exists:
                return
            raise BridgeError(f"bridge {self.name} has no port named {name}")
        del self.ports[name]

    def to_json(self) -> dict:
        names = self.port_names
        return {
            "ports": dict(sorted(self.ports.items(), key=lambda kv: kv[1])),
            "flows": [f.to_ofctl(names) for f in self.flows],
            **({"macs": self.macs.to_json()} if self.macs.entries else {}),
        }

    @classmethod
    def from_json(cls, name: str, data: dict) -> "Bridge":
        from .parser import parse_flows
        br = cls(name, {k: int(v) for k, v in data.get("ports", {}).items()})
        # Line numbers of the stored list would mislead lint: drop them.
        flows = parse_flows("\n".join(data.get("flows", [])), br.port_map)
        br.flows = FlowTable(replace(f, line=None) for f in flows)
        br.macs = MacTable.from_json(data.get("macs", []))
        return br


def default_state_dir() -> Path:
    env = os.environ.get("APPLIANCE_STATE_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "var"


class BridgeStore:
    """All bridges, persisted as JSON in ``<state_dir>/switch/bridges.json``."""

    def __init__(self, state_dir: Path | str | None = None):
        self.path = Path(state_dir or default_state_dir()) / "switch" / "bridges.json"
        self.bridges: dict[str, Bridge] = {}
        if self.path.exists():
            data = json.loads(self.path.read_text())
            for name, b in data.get("bridges", {}).items():
                self.bridges[name] = Bridge.from_json(name, b)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"bridges": {n: b.to_json() for n, b in sorted(self.bridges.items())}}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".bridges.")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=2)
                fh.write("\n")
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise

    def get(self, name: str) -> Bridge:
        try:
            return self.bridges[name]
        except KeyError:
            known = ", ".join(sorted(self.bridges)) or "none"
            raise BridgeError(f"no bridge named {name} (bridges: {known})") from None

    def add_br(self, name: str, may_exist: bool = False) -> Bridge:
        check_name(name, "bridge")
        if name in self.bridges:
            if may_exist:
                return self.bridges[name]
            raise BridgeError(f"a bridge named {name} already exists")
        for b in self.bridges.values():
            if name in b.ports:
                raise BridgeError(f"{name} is already a port of bridge {b.name}")
        br = self.bridges[name] = Bridge(name)
        return br

    def del_br(self, name: str, if_exists: bool = False) -> None:
        if name not in self.bridges:
            if if_exists:
                return
            self.get(name)
        del self.bridges[name]

    def add_port(self, bridge: str, port: str, ofport_request: int | None = None,
                 may_exist: bool = False) -> int:
        br = self.get(bridge)
        for b in self.bridges.values():
            if b is not br and port in b.ports:
                raise BridgeError(f"{port} is already a port of bridge {b.name}")
        return br.add_port(port, ofport_request, may_exist)

    def port_to_bridge(self, port: str) -> Bridge:
        for b in self.bridges.values():
            if port in b.ports:
                return b
        raise BridgeError(f"no port named {port}")


def seed_bridge(name: str = "br0") -> Bridge:
    """The seed design's ports, with fixed numbers tests and fixtures share."""
    br = Bridge(name)
    for i, port in enumerate(SEED_PORTS, start=1):
        br.add_port(port, i)
    return br


# uplink = the seed's enp5s0, downlink = enp1s0, admin = veth0-in-br,
# vgw = gw0-in-br, vproxy = vp-veth0-in-br.
SEED_PORTS = ("uplink", "downlink", "admin", "vgw", "vproxy")


def load_flows_into(bridge: Bridge, flows: list[Flow]) -> None:
    bridge.flows.extend(flows)
