"""The Faucet tutorial's pipeline switching real traffic through the compiled datapath.

Five hosts in namespaces behind ports p1..p5 (p1-p3 in VLAN 100, p4-p5 in
VLAN 200), the tutorial's four tables as loaded by `ofctl -O OpenFlow13
add-flows` (tests/data/faucet-flows.txt, with the hosts on p1, p2 and p4
learned): frames reach hosts of their own VLAN, untagged, never the other
VLAN's, and broadcasts stay in their VLAN. Real pings (ARP included)
work inside a VLAN.
"""
from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

from appliance.switch import cli
from appliance.switch.bridge import BridgeStore
from appliance.switch.datapath.datapath import Datapath
from tests.support.dpbox import DpBox, PortSpec, drain

FAUCET = Path(__file__).resolve().parents[3] / "data" / "faucet-flows.txt"
HOSTS = (
    PortSpec("p1", "10.0.0.1/24", "00:11:11:00:00:00"),
    PortSpec("p2", "10.0.0.2/24", "00:22:22:00:00:00"),
    PortSpec("p3", "10.0.0.3/24", "00:33:33:00:00:00"),
    PortSpec("p4", "10.0.0.4/24", "00:44:44:00:00:00"),
    PortSpec("p5", "10.0.0.5/24", "00:55:55:00:00:00"),
)
VLAN = {"p1": 100, "p2": 100, "p3": 100, "p4": 200, "p5": 200}


@pytest.fixture
def faucet(tmp_path):
    out = io.StringIO()
    cli.run_vsctl(["add-br", "br0"], out=out, state_dir=tmp_path)
    for i, h in enumerate(HOSTS, start=1):
        cli.run_vsctl(["add-port", "br0", h.name, "--", "set", "Interface", h.name,
                       f"ofport_request={i}"], out=out, state_dir=tmp_path)
    cli.run_ofctl(["-O", "OpenFlow13", "add-flows", "br0", str(FAUCET)], out=out, state_dir=tmp_path)
    bridge = BridgeStore(tmp_path).get("br0")
    box = DpBox(HOSTS, prefix="fct")
    dp = Datapath("br0", netns=box.box, pin_root=f"/sys/fs/bpf/fcttest-{os.getpid()}-{box.box[-5:]}",
                  state_dir=tmp_path, local_device="br0")
    try:
        dp.apply(bridge)
        yield box
    finally:
        try:
            dp.detach()
        finally:
            box.close()


def udp_frames(frames: list[bytes], dport: int) -> list[bytes]:
    return [f for f in frames if len(f) >= 38 and f[12:14] == b"\x08\x00" and f[23] == 17
            and int.from_bytes(f[36:38], "big") == dport]


def send_and_collect(box: DpBox, src: str, dst_ip: str, dport: int, expect: str,
                     broadcast: bool = False) -> dict[str, list[bytes]]:
    """Send UDP from `src` until `expect` has it (or 5 s), then what every port got."""
    caps = {h.name: box.capture(h.name) for h in HOSTS}
    got = {h.name: [] for h in HOSTS}
    try:
        s = box.socket_in(src)
        if broadcast:
            import socket
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        deadline = time.monotonic() + 5
        try:
            while time.monotonic() < deadline:
                s.sendto(b"faucet", (dst_ip, dport))
                time.sleep(0.05)
                for name, c in caps.items():
                    got[name] += udp_frames(drain(c), dport)
                if got[expect]:
                    break
        finally:
            s.close()
        # Copies to the other ports left at the same time as the expected one.
        time.sleep(0.1)
        for name, c in caps.items():
            got[name] += udp_frames(drain(c), dport)
    finally:
        for c in caps.values():
            c.close()
    return got


def static_neighbours(box: DpBox) -> None:
    for h in HOSTS:
        for other in HOSTS:
            if other is not h:
                box.neigh(h.name, other.ip.split("/")[0], other.mac)


def test_same_vlan_reaches_other_vlan_does_not(faucet):
    box = faucet
    static_neighbours(box)
    # p1 -> p2: a learned destination, straight to p2, untagged.
    got = send_and_collect(box, "p1", "10.0.0.2", 4001, expect="p2")
    assert got["p2"] and all(f[12:14] == b"\x08\x00" for f in got["p2"])
    assert got["p1"] == got["p3"] == got["p4"] == got["p5"] == []
    # p1 -> p3: not learned, flooded in VLAN 100 only.
    got = send_and_collect(box, "p1", "10.0.0.3", 4002, expect="p3")
    assert got["p3"] and got["p2"]
    assert got["p1"] == got["p4"] == got["p5"] == []
    # p1 -> p4's address and MAC: p4 is in VLAN 200; the frame floods VLAN 100.
    got = send_and_collect(box, "p1", "10.0.0.4", 4003, expect="p3")
    assert got["p4"] == got["p5"] == [] and got["p2"] and got["p3"]
    # p5 -> p4: VLAN 200, learned.
    got = send_and_collect(box, "p5", "10.0.0.4", 4004, expect="p4")
    assert got["p4"] and got["p1"] == got["p2"] == got["p3"] == got["p5"] == []


def test_broadcasts_stay_in_their_vlan(faucet):
    box = faucet
    got = send_and_collect(box, "p4", "10.0.0.255", 4010, expect="p5", broadcast=True)
    assert got["p5"] and got["p1"] == got["p2"] == got["p3"] == got["p4"] == []
    got = send_and_collect(box, "p2", "10.0.0.255", 4011, expect="p3", broadcast=True)
    assert got["p1"] and got["p3"] and got["p4"] == got["p5"] == []


def test_ping_inside_a_vlan(faucet):
    box = faucet
    # ARP floods in VLAN 100; the reply to the learned p1 comes straight back.
    r = box.exec(box.ns("p1"), "ping", "-c", "2", "-W", "2", "10.0.0.2", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    r = box.exec(box.ns("p4"), "ping", "-c", "2", "-W", "2", "10.0.0.5", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
