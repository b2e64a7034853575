"""Per-device counters of the compiled datapath against the device's own interface counters.

A client behind the home port downloads 20 MB from a server behind the
uplink with curl and uploads 4 MB; what the datapath counted for the
client's MAC (dp_macs) must agree with the client's `ip -s link` within 1%,
packets and bytes each way, whether the Linux bridge (NORMAL) or a redirect
(output:) carries the frames, and across a re-apply between the two
transfers (the map is pinned and reused by the new program).

Both far ends run with TSO/GSO off: a veth hands a GSO skb on whole and
counts it as one packet, where a wire (and the datapath, which counts
segments) carries one frame per segment; with offloads off the two agree.
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
from appliance.switch.datapath.datapath import Datapath
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


@pytest.fixture
def box(tmp_path):
    b = DpBox(ports=(SERVER, CLIENT), prefix="dpmac")
    dp = Datapath("br0", netns=b.box, pin_root=f"/sys/fs/bpf/dpmac-{os.getpid()}-{b.box[-5:]}",
                  state_dir=tmp_path, local_device="br0", home_ports=("downlink",))
    server = None
    try:
        for p, peer in ((SERVER, CLIENT), (CLIENT, SERVER)):
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
