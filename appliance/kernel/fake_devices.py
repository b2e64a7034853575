"""In-memory `Devices`, for unit tests: made with the calls that make them in the kernel.

A veth pair's ends may sit in two namespaces; an end has carrier only when
it and its peer are both up, as in the kernel. `count()` adds to a device's
byte counters (what traffic would do).
"""
from __future__ import annotations

import itertools
from dataclasses import replace

from appliance.kernel.base import KernelError
from appliance.kernel.devices import Device


class FakeDevices:
    def __init__(self) -> None:
        self.spaces: dict[str | None, dict[str, Device]] = {None: {}}
        self.up: dict[tuple[str | None, str], bool] = {}
        self.peers: dict[tuple[str | None, str], tuple[str | None, str]] = {}
        self._ifindex = itertools.count(2)
        self.add_netns(None)

    def add_netns(self, netns: str | None) -> None:
        self.spaces.setdefault(netns, {})
        if "lo" not in self.spaces[netns]:
            self.spaces[netns]["lo"] = Device("lo", 1, "device", False)
            self.up[(netns, "lo")] = True

    def del_netns(self, netns: str) -> None:
        """As `ip netns del`: its devices go, and with its veths their peers elsewhere."""
        for name in list(self._space(netns)):
            self.remove(netns, name)
        del self.spaces[netns]

    def _space(self, netns):
        try:
            return self.spaces[netns]
        except KeyError:
            raise KernelError(f"netns {netns}: No such file or directory") from None

    def _new(self, netns, name, kind) -> None:
        space = self._space(netns)
        if name in space:
            raise KernelError(f"netns {netns or '(own)'}: link {name}: File exists")
        space[name] = Device(name, next(self._ifindex), kind, False)
        self.up[(netns, name)] = False

    def add_device(self, netns: str | None, name: str, kind: str = "device") -> None:
        self._new(netns, name, kind)

    def add_veth(self, netns: str | None, name: str, peer_netns: str | None, peer: str) -> None:
        self._space(peer_netns)
        if peer in self.spaces[peer_netns]:
            raise KernelError(f"netns {peer_netns or '(own)'}: link {peer}: File exists")
        if name in self._space(netns):
            raise KernelError(f"netns {netns or '(own)'}: link {name}: File exists")
        self._new(peer_netns, peer, "veth")   # as the kernel registers them: the peer first
        self._new(netns, name, "veth")
        self.peers[(netns, name)] = (peer_netns, peer)
        self.peers[(peer_netns, peer)] = (netns, name)

    def set_up(self, netns: str | None, name: str, up: bool = True) -> None:
        if name not in self._space(netns):
            raise KernelError(f"netns {netns or '(own)'}: no link named {name}")
        self.up[(netns, name)] = up

    def remove(self, netns: str | None, name: str) -> None:
        self._space(netns).pop(name, None)
        self.up.pop((netns, name), None)
        peer = self.peers.pop((netns, name), None)
        if peer is not None:  # a veth goes with its peer
            self.peers.pop(peer, None)
            self.spaces.get(peer[0], {}).pop(peer[1], None)

    def count(self, netns: str | None, name: str, rx: int = 0, tx: int = 0) -> None:
        dev = self._space(netns)[name]
        self.spaces[netns][name] = replace(dev, rx_bytes=dev.rx_bytes + rx, tx_bytes=dev.tx_bytes + tx)

    def devices(self, netns: str | None) -> list[Device]:
        out = []
        for name, dev in self._space(netns).items():
            up = self.up[(netns, name)]
            peer = self.peers.get((netns, name))
            carrier = up and (peer is None or self.up.get(peer, False))
            out.append(replace(dev, carrier=carrier,
                               peer_elsewhere=peer is not None and peer[0] != netns))
        return sorted(out, key=lambda d: d.ifindex)
