"""IPv6 neighbour discovery, ICMPv6 and flow labels through the compiled
datapath on a box of namespaces, judged frame by frame by Open vSwitch.

Two far ends speak real IPv6 (the kernel's own neighbour solicitations and
advertisements with their link-layer options, echo requests, MLD reports)
and a raw socket adds UDP with chosen flow labels.  The flows steer by
`nd_target`, `nd_sll`, `nd_tll`, ICMPv6 type and `ipv6_label`: what a user
sees (ping works to one address and not to the other, a label is dropped)
must follow, and every frame the far ends sent is traced by a private OVS
from its bytes (OVS's own parser): the flows OVS says each frame meets,
summed, must be exactly the datapath's flow counters.
"""
from __future__ import annotations

import os
import socket
import struct
import time
from collections import Counter
from ipaddress import IPv6Address

import pytest

from appliance.switch.bridge import seed_bridge
from appliance.switch.datapath.datapath import Datapath
from appliance.switch.flows import FlowTable
from appliance.switch.parser import parse_flows
from tests.support.dpbox import DpBox, drain
from tests.support.ovs import OvsOracle, ovs_available

pytestmark = pytest.mark.skipif(not ovs_available(), reason="Open vSwitch is not installed")

NET = "2001:db8:9::"
CLIENT, ADMIN, HIDDEN = NET + "50", NET + "1", NET + "8"
CLIENT_MAC, ADMIN_MAC = "02:00:00:00:00:50", "02:00:00:00:00:08"
SPEAKERS = ("downlink", "admin")

FLOWS = f"""\
priority=900,icmp6,icmp_type=135,nd_target={HIDDEN},actions=drop
priority=890,icmp6,icmp_type=135,nd_target={NET}/120,nd_sll={CLIENT_MAC},actions=output:admin
priority=880,icmp6,in_port=admin,icmp_type=136,icmp_code=0,nd_target={ADMIN},nd_tll={ADMIN_MAC},actions=output:downlink
priority=800,udp6,ipv6_label=0x12345,actions=drop
priority=790,udp6,ipv6_label=0x00006/0x0000f,actions=output:admin
priority=700,icmp6,icmp_type=128,icmp_code=0,actions=output:admin
priority=690,icmp6,in_port=admin,icmpv6_type=129,actions=output:downlink
priority=0,actions=NORMAL
"""


@pytest.fixture
def box(tmp_path):
    b = DpBox(prefix="dpv6")
    dp = Datapath("br0", netns=b.box, pin_root=f"/sys/fs/bpf/dpv6-{os.getpid()}-{b.box[-5:]}",
                  state_dir=tmp_path, local_device="br0")
    try:
        for port, addrs in (("downlink", (CLIENT,)), ("admin", (ADMIN, HIDDEN))):
            ns = b.ns(port)
            b.exec(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0")
            b.exec(ns, "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0")
            b.exec(ns, "sysctl", "-qw", "net.ipv6.conf.eth0.router_solicitations=0")
            for a in addrs:
                b.exec(ns, "ip", "-6", "addr", "add", f"{a}/64", "dev", "eth0", "nodad")
        yield b, dp
    finally:
        try:
            dp.detach()
        finally:
            b.close()


@pytest.fixture(scope="module")
def oracle():
    o = OvsOracle(seed_bridge().ports)
    o.start()
    try:
        yield o
    finally:
        o.stop()


def sent_frames(sock: socket.socket) -> list[bytes]:
    """Frames the far end transmitted (its outgoing side of the capture)."""
    return drain(sock, outgoing=True)


def udp6_frame(label: int, dport: int) -> bytes:
    """UDP from the client to admin with a chosen flow label."""
    src, dst = IPv6Address(CLIENT).packed, IPv6Address(ADMIN).packed
    payload = b"label"
    udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
    ip6 = struct.pack("!IHBB", 6 << 28 | label, len(udp), 17, 64) + src + dst
    return bytes.fromhex(ADMIN_MAC.replace(":", "") + CLIENT_MAC.replace(":", "") + "86dd") + ip6 + udp


def ping(b: DpBox, dst: str) -> bool:
    return b.exec(b.ns("downlink"), "ping", "-6", "-n", "-c", "1", "-W", "2", dst, check=False).returncode == 0


def neighbour_state(b: DpBox, addr: str) -> str:
    out = b.exec(b.ns("downlink"), "ip", "-6", "neigh", "show", addr, "dev", "eth0").stdout.split()
    return out[-1] if out else ""


def test_nd_icmpv6_and_labels_steer_real_frames_as_ovs_judges_them(box, oracle):
    b, dp = box
    br = seed_bridge()
    br.flows = FlowTable(parse_flows(FLOWS, br.port_map))
    dp.apply(br)
    oracle.load_flows(br.flows)
    caps = {p: b.capture(p) for p in SPEAKERS}
    frames: list[tuple[int, bytes]] = []

    def collect() -> None:
        for port, sock in caps.items():
            frames.extend((br.ports[port], f) for f in sent_frames(sock))

    try:
        # The client's solicitation for admin carries its source address
        # and is steered to admin; admin's advertisement carries its own
        # and comes straight back: ping works.
        assert ping(b, ADMIN)
        # A solicitation for the hidden address is dropped by its target:
        # the client never learns a neighbour there.
        assert not ping(b, HIDDEN)
        deadline = time.monotonic() + 10
        while neighbour_state(b, HIDDEN) not in ("FAILED", "") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert neighbour_state(b, HIDDEN) in ("FAILED", "")

        admin_rx = b.capture("admin")
        raw = b.socket_in("downlink", socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86DD))
        try:
            raw.bind(("eth0", 0))
            raw.send(udp6_frame(0x12345, 7001))  # dropped by its label
            raw.send(udp6_frame(0x00016, 7002))  # low nibble 6: to admin
        finally:
            raw.close()
        got: list[int] = []
        deadline = time.monotonic() + 5
        while 7002 not in got and time.monotonic() < deadline:
            time.sleep(0.05)
            while True:
                try:
                    f = admin_rx.recv(65535)
                except BlockingIOError:
                    break
                if f[12:14] == b"\x86\xdd" and f[20] == 17:
                    got.append(int.from_bytes(f[56:58], "big"))
        admin_rx.close()
        # The labelled frames go the same way in order: once 7002 is in,
        # 7001 would have been too.
        assert got == [7002]

        # Every frame the far ends sent, traced by OVS from its bytes: the
        # flows it meets must be exactly what the datapath counted.  The
        # catch-all NORMAL is left out: the kernel's MLD reports may leave
        # between the apply and the captures opening (counted, not seen);
        # a frame either side puts elsewhere still shows in the others.
        index = {i + 1: f for i, f in enumerate(oracle.flows)}
        want: Counter = Counter()
        have: Counter = Counter()
        deadline = time.monotonic() + 10
        while True:
            collect()
            want = Counter()
            for in_port, frame in frames:
                tr = oracle.trace_frame(frame, in_port)
                for _, cookie in tr.lookups:
                    if cookie is not None and index[cookie].priority:
                        want[index[cookie].to_ofctl(br.port_names)] += 1
            stats = dp.flow_stats(br.flows)
            have = Counter({f.to_ofctl(br.port_names): stats[f.key].n_packets
                            for f in br.flows if f.priority and stats[f.key].n_packets})
            if want == have or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert have == want
        print("\nIPv6 flows, frames counted by the datapath = OVS: ", dict(have), f"({len(frames)} frames traced)")
        for shown in ("nd_target=2001:db8:9::8", f"nd_sll={CLIENT_MAC}", f"nd_tll={ADMIN_MAC}",
                      "ipv6_label=0x12345", "ipv6_label=0x00006/0x0000f", "icmp_type=128", "icmp_type=129"):
            assert any(shown in text for text in have), (shown, have)
    finally:
        for sock in caps.values():
            sock.close()
