"""`Devices`: the same assertions on `FakeDevices` and on the running kernel (`LinuxDevices`).

Two scratch namespaces: one veth pair across them, one inside the first.
Frames are sent with a packet socket on the far end of the pair (the
fake is told the same bytes with `count`); IPv6 is off, so nothing else
is sent meanwhile.
"""
from __future__ import annotations

import socket
import time

import pytest

from appliance.kernel.base import KernelError
from appliance.kernel.devices import LinuxDevices
from appliance.kernel.fake_devices import FakeDevices
from appliance.kernel.setns import in_netns
from tests.support.scratchns import ScratchNamespaces, sh


FRAME = bytes.fromhex("ffffffffffff02000000000188b5") + bytes(86)   # 100 bytes, local experimental type


class Side:
    def __init__(self, kind: str, box: str, far: str):
        self.kind, self.box, self.far = kind, box, far
        if kind == "fake":
            self.devices = FakeDevices()
            self.devices.add_netns(box)
            self.devices.add_netns(far)
        else:
            self.devices = LinuxDevices()

    def add_veth(self, ns, name, peer_ns, peer) -> None:
        if self.kind == "fake":
            self.devices.add_veth(ns, name, peer_ns, peer)
        else:
            sh(ns, "ip", "link", "add", name, "type", "veth", "peer", "name", peer, "netns", peer_ns)

    def set_up(self, ns, name) -> None:
        if self.kind == "fake":
            self.devices.set_up(ns, name)
        else:
            sh(ns, "ip", "link", "set", name, "up")

    def send(self, ns, name, frame: bytes) -> None:
        """One frame out of `name`: its peer receives it."""
        if self.kind == "fake":
            peer_ns, peer = self.devices.peers[(ns, name)]
            self.devices.count(ns, name, tx=len(frame))
            self.devices.count(peer_ns, peer, rx=len(frame))
            return
        s = in_netns(ns, socket.socket, socket.AF_PACKET, socket.SOCK_RAW)
        try:
            s.bind((name, 0))
            s.send(frame)
        finally:
            s.close()

    def device(self, ns, name):
        return next(d for d in self.devices.devices(ns) if d.name == name)


@pytest.fixture(params=["fake", "linux"])
def side(request):
    with ScratchNamespaces("kcd", 2) as (box, far):
        yield Side(request.param, box, far)


def eventually(predicate, what: str, seconds: float = 5.0):
    deadline = time.monotonic() + seconds
    while True:
        if value := predicate():
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


def test_veths_say_where_their_peer_is(side):
    side.add_veth(side.box, "up0", side.far, "eth0")
    side.add_veth(side.box, "lp0", side.box, "lp1")
    devs = side.devices.devices(side.box)
    assert [d.name for d in devs] == ["lo", "up0", "lp1", "lp0"]     # by ifindex: a peer comes first
    assert [d.ifindex for d in devs] == sorted({d.ifindex for d in devs}) and devs[0].ifindex == 1
    by_name = {d.name: d for d in devs}
    assert {n: d.kind for n, d in by_name.items()} == {"lo": "device", "up0": "veth", "lp0": "veth",
                                                        "lp1": "veth"}
    assert {n: d.peer_elsewhere for n, d in by_name.items()} == {"lo": False, "up0": True, "lp0": False,
                                                                  "lp1": False}
    assert [d.name for d in side.devices.devices(side.far)] == ["lo", "eth0"]


def test_a_veth_has_carrier_once_both_ends_are_up(side):
    side.add_veth(side.box, "up0", side.far, "eth0")
    side.set_up(side.box, "up0")
    assert not side.device(side.box, "up0").carrier
    side.set_up(side.far, "eth0")
    eventually(lambda: side.device(side.box, "up0").carrier, "carrier on up0")


def test_byte_counters_count_the_frames(side):
    side.add_veth(side.box, "up0", side.far, "eth0")
    side.set_up(side.box, "up0")
    side.set_up(side.far, "eth0")
    eventually(lambda: side.device(side.box, "up0").carrier, "carrier on up0")
    before = side.device(side.box, "up0")
    for _ in range(3):
        side.send(side.far, "eth0", FRAME)
    eventually(lambda: side.device(side.box, "up0").rx_bytes >= before.rx_bytes + 300, "300 bytes in")
    after, sent = side.device(side.box, "up0"), side.device(side.far, "eth0")
    assert after.rx_bytes - before.rx_bytes == 300 and after.tx_bytes == before.tx_bytes
    assert sent.tx_bytes >= 300


def test_a_missing_namespace_is_an_error_naming_it(side):
    with pytest.raises(KernelError, match=f"{side.box}x"):
        side.devices.devices(side.box + "x")
