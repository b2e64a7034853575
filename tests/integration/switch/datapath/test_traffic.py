"""The compiled datapath on a box of namespaces: real frames, real captures.

The seed's flow table on a box with uplink, downlink, admin, vgw and
vproxy ports; frames from real sockets in the namespaces must arrive where
the flows say, with the rewritten MACs, and nowhere else.  Also: swaps are
atomic and lossless, a bad table leaves the old program running, a
redirect loop is cut, and detach leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from appliance.kernel import tc
from appliance.switch.bridge import seed_bridge
from appliance.switch.datapath.compiler import CompileError
from appliance.switch.datapath.datapath import Datapath
from appliance.switch.flows import FlowTable
from appliance.switch.parser import parse_flows
from tests.support.dpbox import DpBox, PortSpec, drain


SEED = Path(__file__).resolve().parents[3] / "data" / "seed-flows.txt"
GW_MAC = bytes.fromhex("1800000000e8")
VPROXY_MAC = bytes.fromhex("d600000000bf")
CLIENT_MAC = bytes.fromhex("020000000050")


def seed_bridge_with_flows(extra: str = ""):
    br = seed_bridge()
    br.flows = FlowTable(parse_flows(SEED.read_text() + extra, br.port_map))
    return br


@pytest.fixture
def box(tmp_path):
    b = DpBox()
    dp = Datapath("br0", netns=b.box, pin_root=f"/sys/fs/bpf/dptest-{os.getpid()}-{b.box[-5:]}",
                  state_dir=tmp_path, local_device="br0")
    try:
        yield b, dp
    finally:
        try:
            dp.detach()  # takes the pin directories with it
        finally:
            b.close()


def hooked(b: DpBox, dp: Datapath, dev: str) -> tuple[list[tc.Filter], list[int]]:
    """(tc ingress filters, tcx ingress program ids) on a device of the box."""
    index = next(d.ifindex for d in dp.devices.devices(b.box) if d.name == dev)
    return dp.tc.filters(b.box, index), dp.tc.tcx_programs(b.box, index)


def kernel_has_tcx() -> bool:
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    return (major, minor) >= (6, 6)


def udp_from(box: DpBox, port: str, dst: str, dport: int, count: int = 1, payload=b"x" * 18):
    s = box.socket_in(port)
    try:
        for _ in range(count):
            s.sendto(payload, (dst, dport))
    finally:
        s.close()


def arrivals(box: DpBox, caps: dict, wait: float = 0.3):
    time.sleep(wait)
    return {name: drain(sock) for name, sock in caps.items()}


def only_udp(frames, dport):
    out = []
    for f in frames:
        if len(f) >= 38 and f[12:14] == b"\x08\x00" and f[23] == 17 and \
                int.from_bytes(f[36:38], "big") == dport:
            out.append(f)
    return out


def test_seed_flows_steer_real_frames(box):
    b, dp = box
    br = seed_bridge_with_flows()
    res = dp.apply(br)
    assert sorted(res.devices) == ["admin", "downlink", "uplink", "vgw", "vproxy"]
    b.neigh("downlink", "192.168.1.1", "18:00:00:00:00:e8")
    b.neigh("downlink", "192.168.1.8", "02:00:00:00:00:08")
    caps = {p: b.capture(p) for p in b.ports}
    try:
        # DNS to the gateway: rewritten to vproxy's MAC, to vproxy only.
        udp_from(b, "downlink", "192.168.1.1", 53, count=3)
        got = {p: only_udp(f, 53) for p, f in arrivals(b, caps).items()}
        assert len(got["vproxy"]) == 3
        assert all(f[0:6] == VPROXY_MAC and f[6:12] == CLIENT_MAC for f in got["vproxy"])
        assert got["uplink"] == got["vgw"] == got["admin"] == got["downlink"] == []

        # Fake-IP range: also to vproxy with its MAC.
        b.neigh("downlink", "100.100.1.1", "18:00:00:00:00:e8")
        b.exec(b.ns("downlink"), "ip", "route", "add", "100.96.0.0/11", "via", "192.168.1.1")
        udp_from(b, "downlink", "100.100.1.1", 4000, count=2)
        got = {p: only_udp(f, 4000) for p, f in arrivals(b, caps).items()}
        assert len(got["vproxy"]) == 2 and all(f[0:6] == VPROXY_MAC for f in got["vproxy"])
        assert sum(len(v) for k, v in got.items() if k != "vproxy") == 0

        # Other unicast to the gateway MAC: uplink only, MAC untouched.
        udp_from(b, "downlink", "192.168.1.1", 8080, count=2)
        got = {p: only_udp(f, 8080) for p, f in arrivals(b, caps).items()}
        assert len(got["uplink"]) == 2 and all(f[0:6] == GW_MAC for f in got["uplink"])
        assert sum(len(v) for k, v in got.items() if k != "uplink") == 0

        # Everything else is NORMAL: the Linux bridge delivers to admin
        # only, once it has learnt admin's MAC from a frame admin sent.
        b.neigh("admin", "192.168.1.50", "02:00:00:00:00:50")
        udp_from(b, "admin", "192.168.1.50", 9998)
        arrivals(b, caps, wait=0.1)
        udp_from(b, "downlink", "192.168.1.8", 9999, count=2)
        got = {p: only_udp(f, 9999) for p, f in arrivals(b, caps).items()}
        assert len(got["admin"]) == 2
        assert sum(len(v) for k, v in got.items() if k != "admin") == 0

        # DNS from vproxy to the gateway goes to the uplink, not back to vproxy.
        b.neigh("vproxy", "192.168.1.1", "18:00:00:00:00:e8")
        udp_from(b, "vproxy", "192.168.1.1", 53, count=2)
        got = {p: only_udp(f, 53) for p, f in arrivals(b, caps).items()}
        assert len(got["uplink"]) == 2 and all(f[0:6] == GW_MAC for f in got["uplink"])
        assert sum(len(v) for k, v in got.items() if k != "uplink") == 0
    finally:
        for s in caps.values():
            s.close()
    stats = dp.flow_stats(br.flows)
    dns = next(f for f in br.flows if f.priority == 499)
    assert stats[dns.key].n_packets == 3
    assert stats[dns.key].n_bytes == 3 * (14 + 20 + 8 + 18)


def test_dump_flows_durations_count_from_when_each_flow_was_added(box):
    """As OVS's: a flow that stays through a new install keeps its age (and counters); a flow
    the install adds starts from zero."""
    _, dp = box
    br = seed_bridge_with_flows()
    dp.apply(br)
    dns = next(f for f in br.flows if f.priority == 499)
    deadline = time.monotonic() + 10
    while (first := dp.flow_stats(br.flows)[dns.key].duration) < 1.0:
        assert time.monotonic() < deadline, f"the duration stayed at {first}"
        time.sleep(0.2)
    more = seed_bridge_with_flows("priority=7,udp,tp_dst=4242,actions=drop\n")
    dp.apply(more)
    new = next(f for f in more.flows if f.priority == 7)
    stats = dp.flow_stats(more.flows)
    assert stats[dns.key].duration >= first
    assert 0.0 <= stats[new.key].duration < first


def test_paged_frames_from_trafgen_are_parsed(box, tmp_path):
    # trafgen's frames reach tc ingress with their headers in pages, not in
    # the linear area: the program must copy them out before parsing.
    b, dp = box
    dp.apply(seed_bridge_with_flows())
    conf = tmp_path / "dns.cfg"
    conf.write_text("{ 0x18,0,0,0,0,0xe8, 0x02,0,0,0,0,0x50, 0x08,0x00, "
                    "0x45,0,0,0x2e, 0,0,0x40,0, 0x40,0x11, csumip(14, 33), "
                    "192,168,1,50, 192,168,1,1, 0x04,0xd2, 0,0x35, 0,0x1a, 0,0, fill(0, 18) }")
    cap = b.capture("vproxy")
    try:
        b.exec(b.ns("downlink"), "trafgen", "-i", str(conf), "-o", "eth0", "-n", "4", "-q")
        time.sleep(0.3)
        got = only_udp(drain(cap), 53)
        assert len(got) == 4 and all(f[0:6] == VPROXY_MAC for f in got)
    finally:
        cap.close()


def test_arp_for_gateway_reaches_uplink_only(box):
    b, dp = box
    dp.apply(seed_bridge_with_flows())
    caps = {p: b.capture(p) for p in b.ports}
    try:
        # No neighbour entry: the client's kernel ARPs for the gateway.
        udp_from(b, "downlink", "192.168.1.1", 9)
        got = arrivals(b, caps, wait=0.3)
        arp_req = {p: [f for f in fr if f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x01"]
                   for p, fr in got.items()}
        # Broadcast ARP for 192.168.1.1 goes to the modem, never to the virtual gateway.
        assert len(arp_req["uplink"]) >= 1
        assert arp_req["vgw"] == [] and arp_req["admin"] == [] and arp_req["vproxy"] == []
        # The modem's reply comes back to the client by NORMAL switching, and
        # the datagram follows to the uplink.
        assert any(f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02" for f in got["downlink"])
        assert len(only_udp(got["uplink"], 9)) == 1
    finally:
        for s in caps.values():
            s.close()


def swap_tables():
    """Two tables that differ by one flow no test frame matches: every apply is a real swap."""
    return [seed_bridge_with_flows(),
            seed_bridge_with_flows("\ntable=0,priority=1,dl_type=0x88b5,actions=drop\n")]


@contextlib.contextmanager
def counting_dns_sink(b: DpBox):
    """Count, in vproxy, the DNS datagrams the seed's flow steers there; yields [count]."""
    b.neigh("downlink", "192.168.1.1", "18:00:00:00:00:e8")
    # The DNS flow rewrites dl_dst to vproxy, whose stack then takes the
    # frame addressed to 192.168.1.1 only if it owns it: give it that address.
    b.exec(b.ns("vproxy"), "ip", "addr", "add", "192.168.1.1/32", "dev", "eth0")
    sink = b.socket_in("vproxy")
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sink.bind(("0.0.0.0", 53))
    sink.settimeout(2)
    received = [0]
    stop = threading.Event()

    def receive():
        while True:
            try:
                sink.recv(2048)
                received[0] += 1
            except socket.timeout:
                if stop.is_set():
                    return

    rx = threading.Thread(target=receive)
    rx.start()
    try:
        yield received
    finally:
        time.sleep(0.5)  # what is still in flight arrives
        stop.set()
        rx.join()
        sink.close()


def test_swap_is_atomic_and_loses_nothing(box):
    b, dp = box
    tables = swap_tables()
    dp.apply(tables[0])
    first_link = dp.tc.link(dp.link_pin("downlink"))
    sent = 0
    swaps = 0
    with counting_dns_sink(b) as received:
        s = b.socket_in("downlink")
        try:
            for i in range(100):
                dp.apply(tables[i % 2])
                swaps += 1
                for _ in range(20):
                    s.sendto(b"q" * 32, ("192.168.1.1", 53))
                    sent += 1
                # One program on the port, whichever hook the kernel offers.
                fl, progs = hooked(b, dp, "downlink")
                if dp.tc.tcx_supported():
                    assert fl == [] and len(progs) == 1
                    # The same link, now running the new program: updated, not re-added.
                    link = dp.tc.link(dp.link_pin("downlink"))
                    assert link.prog_id == progs[0] and link.id == first_link.id
                else:
                    assert progs == []
                    assert len(fl) == 1 and fl[0].prio == tc.PRIO and fl[0].handle == tc.HANDLE
        finally:
            s.close()
    print(f"swaps={swaps} sent={sent} received={received[0]}")
    assert swaps == 100
    assert received[0] == sent


def test_tcx_links_are_used_where_the_kernel_has_them(box):
    b, dp = box
    assert dp.tc.tcx_supported() == kernel_has_tcx()
    if not dp.tc.tcx_supported():
        pytest.skip("kernel without tcx: the tc path is what the other tests exercise")
    result = dp.apply(seed_bridge_with_flows())
    assert result.hook == "tcx"
    for dev, index in result.devices.items():
        fl, progs = hooked(b, dp, dev)
        assert fl == [] and len(progs) == 1
        link = dp.tc.link(dp.link_pin(dev))
        assert link.ifindex == index and link.prog_id == progs[0]
    assert "clsact" not in b.exec(b.box, "tc", "qdisc", "show").stdout


def test_swap_under_concurrent_load_loses_nothing(box):
    # A sender that never pauses while the program is swapped 50 times.
    b, dp = box
    tables = swap_tables()
    dp.apply(tables[0])
    sent = [0]
    stop_tx = threading.Event()

    def send():
        s = b.socket_in("downlink")
        try:
            while not stop_tx.is_set():
                s.sendto(b"q" * 32, ("192.168.1.1", 53))
                sent[0] += 1
                if sent[0] % 50 == 0:
                    time.sleep(0.001)     # let the receiver keep up
        finally:
            s.close()

    with counting_dns_sink(b) as received:
        tx = threading.Thread(target=send)
        tx.start()
        try:
            for i in range(50):
                assert dp.apply(tables[(i + 1) % 2]).hook == ("tcx" if dp.tc.tcx_supported() else "tc")
        finally:
            stop_tx.set()
            tx.join()
    print(f"sent={sent[0]} received={received[0]}")
    assert sent[0] > 500
    assert received[0] == sent[0]


def test_tc_fallback_and_move_to_tcx(box, monkeypatch):
    # Without tcx the program sits in a clsact filter; once the kernel has
    # tcx, the next apply moves it to a link and removes the filter.
    b, dp = box
    monkeypatch.setattr(dp.tc, "tcx", False)
    result = dp.apply(seed_bridge_with_flows())
    assert result.hook == "tc"
    for dev in result.devices:
        fl, _ = hooked(b, dp, dev)
        assert len(fl) == 1 and fl[0].prio == tc.PRIO
        assert dp.tc.link(dp.link_pin(dev)) is None
    assert dp.apply(seed_bridge_with_flows()).hook == "tc"
    assert all(len(hooked(b, dp, dev)[0]) == 1 for dev in result.devices)
    monkeypatch.undo()
    if not dp.tc.tcx_supported():
        return
    result = dp.apply(seed_bridge_with_flows())
    assert result.hook == "tcx"
    for dev in result.devices:
        fl, progs = hooked(b, dp, dev)
        assert fl == [] and len(progs) == 1
    assert "clsact" not in b.exec(b.box, "tc", "qdisc", "show").stdout
    # And back: a fallback apply replaces the links with filters.
    monkeypatch.setattr(dp.tc, "tcx", False)
    result = dp.apply(seed_bridge_with_flows())
    for dev in result.devices:
        fl, progs = hooked(b, dp, dev)
        assert len(fl) == 1 and progs == []
        assert not os.path.exists(dp.link_pin(dev))


def test_bad_table_is_rejected_and_old_program_keeps_running(box):
    b, dp = box
    good = seed_bridge_with_flows()
    dp.apply(good)
    bad = seed_bridge_with_flows("\ntable=0,priority=7,tcp,actions=resubmit(,1)\n"
                                 "table=1,priority=7,actions=resubmit(,0)\n")
    with pytest.raises(CompileError) as err:
        dp.apply(bad)
    assert "resubmit(,0)" in str(err.value) and "loop" in str(err.value)
    # The old program still steers DNS to vproxy.
    b.neigh("downlink", "192.168.1.1", "18:00:00:00:00:e8")
    cap = b.capture("vproxy")
    try:
        udp_from(b, "downlink", "192.168.1.1", 53)
        time.sleep(0.2)
        assert len(only_udp(drain(cap), 53)) == 1
    finally:
        cap.close()


def test_redirect_loop_is_cut(tmp_path):
    # Two ports that are the two ends of one veth inside the box: a flow
    # sending each to the other is a loop the kernel would spin on forever.
    b = DpBox(ports=(PortSpec("client", "10.9.0.1/24", "02:00:00:00:09:01"),))
    dp = Datapath("lb0", netns=b.box, pin_root=f"/sys/fs/bpf/dptest-{os.getpid()}-loop",
                  state_dir=tmp_path)
    try:
        b.exec(b.box, "ip", "link", "add", "lp0", "type", "veth", "peer", "name", "lp1")
        b.exec(b.box, "ip", "link", "set", "lp0", "up")
        b.exec(b.box, "ip", "link", "set", "lp1", "up")
        from appliance.switch.bridge import Bridge
        br = Bridge("lb0")
        for name in ("client", "lp0", "lp1"):
            br.add_port(name)
        br.flows = FlowTable(parse_flows(
            "in_port=client,actions=output:lp0\n"
            "in_port=lp0,actions=output:lp1\n"
            "in_port=lp1,actions=output:lp0\n", br.port_map))
        dp.apply(br)
        b.neigh("client", "10.9.0.2", "02:00:00:00:09:02")
        udp_from(b, "client", "10.9.0.2", 7, count=5)
        time.sleep(0.3)
        assert dp.misc()["loop_drops"] == 5
    finally:
        try:
            dp.detach()  # takes the pin directories with it
        finally:
            b.close()


def test_detach_removes_filters_qdiscs_and_pins(box):
    b, dp = box
    dp.apply(seed_bridge_with_flows())
    assert os.path.exists(os.path.join(dp.pin_dir, "dp_stats"))
    dp.detach()
    for port in b.ports:
        assert hooked(b, dp, port) == ([], [])
    qd = b.exec(b.box, "tc", "qdisc", "show").stdout
    assert "clsact" not in qd
    assert not os.path.exists(dp.pin_dir)
