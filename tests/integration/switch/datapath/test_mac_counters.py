"""Per-device counters of the compiled datapath against the device's own interface counters.

A client behind the home port downloads 20 MB from a server behind the
uplink with curl and uploads 4 MB; what the datapath counted for the
client's MAC (dp_macs) must agree with the client's `ip -s link` within 1%,
packets and bytes each way, whether the Linux bridge (NORMAL) or a redirect
(output:) carries the frames, and across a re-apply between the two
transfers (the map is pinned and reused by the new program).

With TSO/GSO on, a veth hands a GSO skb on whole and counts it as one
packet, where a wire carries one frame per segment: the datapath counts as
the home side's devices do (per skb when the home port is a veth, as here
and in the lab; per segment on a NIC). With offloads off both are the same.
The segment count itself, what is counted as received, and what a pause
lets through are shown on single frames through the test build.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time

import pytest

from appliance.switch.bridge import seed_bridge
from appliance.switch.datapath import contract as C
from appliance.switch.datapath.datapath import Datapath
from appliance.switch.datapath.testrun import TestDatapath
from appliance.switch.flows import FlowTable
from appliance.switch.parser import parse_flows
from tests.support.dpbox import DpBox, PortSpec

SERVER = PortSpec("uplink", "192.168.1.1/24", "18:00:00:00:00:e8")
CLIENT = PortSpec("downlink", "192.168.1.50/24", "02:00:00:00:00:50")
NORMAL = "priority=0,actions=NORMAL\n"
REDIRECT = ("priority=10,in_port=downlink,actions=output:uplink\n"
            "priority=10,in_port=uplink,actions=output:downlink\n" + NORMAL)
DOWNLOAD = 20 * 1024 * 1024
UPLOAD = 4 * 1024 * 1024


def table(text: str):
    br = seed_bridge()
    br.flows = FlowTable(parse_flows(text, br.port_map))
    return br


@pytest.fixture(params=["offloads-off", "offloads-on"])
def box(tmp_path, request):
    b = DpBox(ports=(SERVER, CLIENT), prefix="dpmac")
    dp = Datapath("br0", netns=b.box, pin_root=f"/sys/fs/bpf/dpmac-{os.getpid()}-{b.box[-5:]}",
                  state_dir=tmp_path, local_device="br0", home_ports=("downlink",))
    server = None
    try:
        for p, peer in ((SERVER, CLIENT), (CLIENT, SERVER)):
            if request.param == "offloads-off":
                b.exec(b.ns(p.name), "ethtool", "-K", "eth0", "tso", "off", "gso", "off")
            b.neigh(p.name, peer.ip.split("/")[0], peer.mac)   # no ARP in the counts
        (tmp_path / "www").mkdir()
        (tmp_path / "www" / "big").write_bytes(os.urandom(DOWNLOAD))
        server = subprocess.Popen(["ip", "netns", "exec", b.ns("uplink"), "python3", "-m", "http.server",
                                   "--bind", "192.168.1.1", "--directory", str(tmp_path / "www"), "8080"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield b, dp
    finally:
        try:
            if server is not None:
                server.kill()
                server.wait()
            dp.detach()
        finally:
            b.close()


def link_counters(b: DpBox) -> dict[str, int]:
    out = b.exec(b.ns("downlink"), "ip", "-s", "-j", "link", "show", "eth0").stdout
    s = json.loads(out)[0]["stats64"]
    return {"rx_bytes": s["rx"]["bytes"], "rx_packets": s["rx"]["packets"],
            "tx_bytes": s["tx"]["bytes"], "tx_packets": s["tx"]["packets"]}


def counted(dp: Datapath) -> dict[str, int]:
    st = dp.mac_stats().get(CLIENT.mac)
    if st is None:
        return dict.fromkeys(("rx_bytes", "rx_packets", "tx_bytes", "tx_packets"), 0)
    return {"rx_bytes": st.rx_bytes, "rx_packets": st.rx_packets,
            "tx_bytes": st.tx_bytes, "tx_packets": st.tx_packets}


def wait_for_server(b: DpBox) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = b.exec(b.ns("downlink"), "curl", "-sf", "-o", "/dev/null", "http://192.168.1.1:8080/",
                   check=False)
        if r.returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError("the test's HTTP server did not answer")


def upload(b: DpBox, size: int) -> None:
    """`size` bytes from the client to a sink on the server, over TCP."""
    listener = b.socket_in("uplink", socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("192.168.1.1", 9000))
    listener.listen(1)
    got = []

    def sink():
        conn, _ = listener.accept()
        n = 0
        while data := conn.recv(65536):
            n += len(data)
        got.append(n)
        conn.close()

    t = threading.Thread(target=sink)
    t.start()
    try:
        c = b.socket_in("downlink", socket.AF_INET, socket.SOCK_STREAM)
        c.connect(("192.168.1.1", 9000))
        c.sendall(os.urandom(size))
        c.shutdown(socket.SHUT_WR)
        c.recv(1)        # the server's FIN: the transfer is over on both sides
        c.close()
    finally:
        t.join(timeout=30)
        listener.close()
    assert got == [size]


def delta(after: dict, before: dict) -> dict:
    return {k: after[k] - before[k] for k in after}


def assert_within_1pct(ours: dict, theirs: dict) -> None:
    for k in theirs:
        assert abs(ours[k] - theirs[k]) <= 0.01 * theirs[k], (k, ours, theirs)


@pytest.mark.parametrize("first,second", [(NORMAL, REDIRECT), (REDIRECT, NORMAL)],
                         ids=["bridge-then-redirect", "redirect-then-bridge"])
def test_counters_match_the_clients_interface_across_a_reapply(box, first, second):
    b, dp = box
    dp.apply(table(first))
    wait_for_server(b)
    link0, ours0 = link_counters(b), counted(dp)

    r = b.exec(b.ns("downlink"), "curl", "-sf", "-o", "/dev/null", "-w", "%{size_download}",
               "http://192.168.1.1:8080/big")
    assert int(r.stdout) == DOWNLOAD
    dp.apply(table(second))            # a new program; the counters carry over
    upload(b, UPLOAD)
    theirs, ours = delta(link_counters(b), link0), delta(counted(dp), ours0)

    assert theirs["rx_bytes"] > DOWNLOAD and theirs["tx_bytes"] > UPLOAD
    assert_within_1pct(ours, theirs)
    # Only the home port's device has an entry: the server is behind the uplink.
    assert set(dp.mac_stats()) == {CLIENT.mac}


# -- the test build on single frames (BPF_PROG_TEST_RUN): what is counted, what a pause lets through

UPLINK, DOWNLINK, VPROXY = 1, 2, 5
DEV = "02:00:00:00:00:50"
OTHER = "18:00:00:00:00:e8"


def frame(dst: str, src: str, proto: int = 6, sport: int = 40000, dport: int = 80, payload: int = 1000,
          ethertype: int = 0x0800) -> bytes:
    mac = lambda m: bytes.fromhex(m.replace(":", ""))  # noqa: E731
    eth = mac(dst) + mac(src) + ethertype.to_bytes(2, "big")
    if ethertype == 0x0806:
        return eth + bytes.fromhex("0001080006040001") + mac(src) + bytes(4) + bytes(6) + bytes(4)
    l4 = (sport.to_bytes(2, "big") + dport.to_bytes(2, "big") +
          (bytes(8) + bytes([0x50, 0x10]) + bytes(6) if proto == 6 else (8 + payload).to_bytes(2, "big") + bytes(2)))
    total = 20 + len(l4) + payload
    ip = bytes([0x45, 0]) + total.to_bytes(2, "big") + bytes(4) + bytes([64, proto]) + bytes(2) + \
        bytes([192, 168, 1, 50]) + bytes([192, 168, 1, 1])
    return eth + ip + l4 + bytes(payload)


def build_for(flows: str, extra_flags: int = 0):
    br = table(flows)
    return TestDatapath(br.flows, br.ports.values(), br.port_names,
                        port_flags={UPLINK: extra_flags, DOWNLINK: C.PORT_HOME | extra_flags,
                                    VPROXY: C.PORT_DNS | extra_flags})


def test_a_gso_frame_counts_as_the_segments_the_wire_carries():
    with build_for(NORMAL) as dp:
        f = frame(OTHER, DEV)                       # 14 + 20 + 20 + 1000 bytes
        dp.run(f, in_port=DOWNLINK, gso_segs=4)     # four segments, each with its 54 bytes of headers
        dp.run(f, in_port=DOWNLINK)
        st = dp.mac_stats()[DEV]
        assert (st.tx_packets, st.tx_bytes) == (5, len(f) + 3 * 54 + len(f))
        # rx: to the known device from another port, once it leaves (NORMAL) towards the home.
        dp.run(frame(DEV, OTHER, payload=100), in_port=UPLINK)
        dp.run(frame("ff:ff:ff:ff:ff:ff", OTHER, payload=100), in_port=UPLINK)   # broadcast: no one device
        st = dp.mac_stats()[DEV]
        assert (st.rx_packets, st.rx_bytes) == (1, 14 + 20 + 20 + 100)
        assert set(dp.mac_stats()) == {DEV}          # the uplink's sender is not a home device


def test_on_a_virtual_home_side_a_gso_frame_counts_as_one_packet_as_its_veth_does():
    with build_for(NORMAL, C.PORT_SKB_COUNT) as dp:
        f = frame(OTHER, DEV)
        dp.run(f, in_port=DOWNLINK, gso_segs=4)
        st = dp.mac_stats()[DEV]
        assert (st.tx_packets, st.tx_bytes) == (1, len(f))


def test_a_frame_the_flows_drop_is_not_delivered_so_not_counted_as_received():
    with build_for("priority=10,in_port=uplink,tcp,tp_src=81,actions=drop\n" + NORMAL) as dp:
        dp.run(frame(OTHER, DEV), in_port=DOWNLINK)
        dp.run(frame(DEV, OTHER, sport=81), in_port=UPLINK)
        assert dp.mac_stats()[DEV].rx_packets == 0


@pytest.mark.parametrize("dns_to", ["vproxy", "uplink"])
def test_a_paused_device_keeps_arp_dhcp_and_dns_with_the_box_only(dns_to):
    flows = f"priority=100,udp,tp_dst=53,actions=output:{dns_to}\n" + NORMAL
    with build_for(flows) as dp:
        dp.pause({DEV})
        verdict = lambda f, port: dp.run(f, in_port=port)[0].verdict  # noqa: E731
        # From the device.
        assert verdict(frame(OTHER, DEV), DOWNLINK) == C.TC_ACT_SHOT
        assert verdict(frame("ff:ff:ff:ff:ff:ff", DEV, ethertype=0x0806), DOWNLINK) == C.TC_ACT_OK
        assert verdict(frame("ff:ff:ff:ff:ff:ff", DEV, 17, 68, 67), DOWNLINK) == C.TC_ACT_OK
        dns = verdict(frame(OTHER, DEV, 17, 5353, 53), DOWNLINK)
        assert dns == (C.TC_ACT_REDIRECT if dns_to == "vproxy" else C.TC_ACT_SHOT)
        # To the device: the box's DNS answers and DHCP pass, the rest is dropped.
        assert verdict(frame(DEV, OTHER, sport=443), UPLINK) == C.TC_ACT_SHOT
        assert verdict(frame(DEV, OTHER, 17, 53, 5353), VPROXY) == C.TC_ACT_OK
        assert verdict(frame(DEV, OTHER, 17, 53, 5353), UPLINK) == C.TC_ACT_SHOT
        assert verdict(frame(DEV, OTHER, 17, 67, 68), UPLINK) == C.TC_ACT_OK
        # Another device is not paused.
        assert verdict(frame(OTHER, "02:00:00:00:00:51"), DOWNLINK) == C.TC_ACT_OK
