"""Controller events: a flow with actions=controller reports real frames to `ofctl monitor`.

A box of namespaces runs the seed's table plus one flow that sends UDP to
port 9999 to CONTROLLER; datagrams from a socket in the client namespace
must come out of the ring buffer as packet-ins naming the input port, the
frame and the flow, through `EventReader` and through the CLI.
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
from appliance.switch.datapath.events import EventReader, flows_by_slot
from appliance.switch.packet import Packet
from tests.support.dpbox import DpBox, drain


SEED = Path(__file__).resolve().parents[3] / "data" / "seed-flows.txt"
PORTS = {"uplink": 1, "downlink": 2, "admin": 3, "vgw": 4, "vproxy": 5}
CONTROLLER_FLOW = "priority=600,udp,tp_dst=9999,actions=controller"


@pytest.fixture
def box(tmp_path):
    # The CLI finds the datapath where the appliance pins it
    # (/sys/fs/bpf/appliance/<bridge>): a bridge name of our own.
    name = f"dpev{os.getpid() % 100000}"
    b = DpBox()
    dp = Datapath(name, netns=b.box, state_dir=tmp_path, local_device="br0")
    try:
        for argv in (["add-br", name], *(["add-port", name, p, f"ofport_request={n}"]
                                         for p, n in PORTS.items())):
            cli.run_vsctl(argv, out=io.StringIO(), state_dir=tmp_path)
        flows = tmp_path / "flows.txt"
        flows.write_text(SEED.read_text() + "\n" + CONTROLLER_FLOW + "\n")
        cli.run_ofctl(["add-flows", name, str(flows)], out=io.StringIO(), state_dir=tmp_path)
        bridge = BridgeStore(tmp_path).get(name)
        dp.apply(bridge)
        yield b, dp, bridge
    finally:
        try:
            dp.detach()
        finally:
            b.close()


def send(b: DpBox, count: int) -> None:
    b.neigh("downlink", "192.168.1.8", "02:00:00:00:00:08")
    s = b.socket_in("downlink")
    try:
        for i in range(count):
            s.sendto(b"ping %d" % i, ("192.168.1.8", 9999))
    finally:
        s.close()


def test_controller_flow_reports_each_frame_and_delivers_none(box):
    b, dp, bridge = box
    cap = b.capture("admin")
    try:
        with EventReader(dp) as reader:
            send(b, 3)
            events = []
            deadline = time.monotonic() + 5
            while len(events) < 3 and time.monotonic() < deadline:
                events += reader.poll(200)
        time.sleep(0.2)
        delivered = [f for f in drain(cap) if f[12:14] == b"\x08\x00" and f[36:38] == b"\x27\x0f"]
    finally:
        cap.close()
    assert len(events) == 3
    flow = flows_by_slot(dp, bridge.flows)[events[0].slot]
    assert flow.to_ofctl(bridge.port_names).startswith("priority=600,udp,tp_dst=9999")
    for i, ev in enumerate(events):
        pkt = Packet.from_bytes(ev.data, in_port=ev.in_port)
        assert ev.in_port == PORTS["downlink"] and ev.table == 0
        assert (pkt["nw_dst"], pkt["tp_dst"]) == (0xC0A80108, 9999)
        assert ev.length == 14 + 20 + 8 + len(b"ping %d" % i) == len(ev.data)
    # actions=controller alone: the frame goes to userspace, not to admin.
    assert delivered == []


def test_ofctl_monitor_prints_packet_ins_like_ovs(box, tmp_path):
    b, dp, bridge = box
    # Events wait in the ring buffer until read: send first, then monitor.
    send(b, 2)
    out = io.StringIO()
    code = cli.run_ofctl(["monitor", bridge.name, "--count=2", "--timeout=10"], out=out,
                         state_dir=tmp_path)
    text = out.getvalue()
    assert code == 0
    assert text.count("NXT_PACKET_IN2 (xid=0x0): table_id=0 cookie=0x0 total_len=48 "
                      "in_port=downlink (via action) data_len=48 (unbuffered)") == 2
    assert "in_port=downlink,dl_src=02:00:00:00:00:50,dl_dst=02:00:00:00:00:08" in text
    assert "nw_dst=192.168.1.8" in text and "udp_dst=9999" in text
    assert " flow: priority=600,udp,tp_dst=9999 actions=CONTROLLER:65535" in text
    # Nothing more to read: the timeout ends the monitor.
    out = io.StringIO()
    cli.run_ofctl(["monitor", bridge.name, "--timeout=0.3"], out=out, state_dir=tmp_path)
    assert out.getvalue() == ""
