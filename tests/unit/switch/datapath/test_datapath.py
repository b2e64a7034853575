"""The datapath's apply, swap, counters and detach, on the kernel's fakes.

What the namespace tests show with real frames (tests/integration/datapath)
is here shown on what the datapath leaves in the kernel: which program runs
on which device and how, which maps and pins exist, which counters a flow
keeps. No root, no clang: the object "built" is the generated C itself,
which the fake loads without reading.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from appliance.kernel import tc
from appliance.kernel.bpf import BpfError
from appliance.kernel.fake_bpf import FakeBpf
from appliance.kernel.fake_devices import FakeDevices
from appliance.kernel.fake_tc import FakeTc
from appliance.switch.bridge import seed_bridge
from appliance.switch.datapath import contract as C
from appliance.switch.datapath.datapath import MAPS, Datapath, flow_identity
from appliance.switch.datapath.events import monitor
from appliance.switch.flows import FlowTable
from appliance.switch.parser import parse_flows

BOX = "dpbox"
PIN_ROOT = "/sys/fs/bpf/dptest"
TABLE = """\
priority=100,udp,tp_dst=53,actions=output:vproxy
priority=90,arp,actions=NORMAL
priority=10,actions=NORMAL
"""


def write_source(source: str, out_dir, test: bool = False, defines=()) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"dp-{hashlib.sha256(source.encode()).hexdigest()[:16]}.c"
    path.write_text(source)
    return path


class Kernel:
    """The fakes a datapath runs on: the seed's port devices in namespace BOX."""

    def __init__(self, tcx: bool = True):
        self.devices = FakeDevices()
        self.devices.add_netns(BOX)
        self.bpf = FakeBpf(maps=MAPS)
        self.tc = FakeTc(self.bpf, self.devices, tcx=tcx)
        self.devices.add_device(BOX, "br0", "bridge")
        for port in ("uplink", "downlink"):
            self.devices.add_device(BOX, port)           # NICs
        self.devices.add_netns("far")
        for port in ("admin", "vgw", "vproxy"):
            self.devices.add_veth(BOX, port, "far", port + "0")

    def ifindex(self, name: str) -> int:
        return next(d.ifindex for d in self.devices.devices(BOX) if d.name == name)

    def datapath(self, state_dir, name: str = "br0", home_ports=("downlink",)) -> Datapath:
        return Datapath(name, netns=BOX, pin_root=PIN_ROOT, state_dir=state_dir, local_device="br0",
                        home_ports=home_ports, bpf=self.bpf, tc=self.tc, devices=self.devices,
                        build=write_source)


def bridge(text: str = TABLE):
    br = seed_bridge()
    br.flows = FlowTable(parse_flows(text, br.port_map))
    return br


def running(k: Kernel, dp: Datapath) -> dict[str, int]:
    """Device -> id of the program tcx runs on it."""
    out = {}
    for dev in ("uplink", "downlink", "admin", "vgw", "vproxy"):
        progs = k.tc.tcx_programs(BOX, k.ifindex(dev))
        assert len(progs) <= 1
        if progs:
            out[dev] = progs[0]
    return out


def pinned_map(k: Kernel, dp: Datapath, name: str):
    return k.bpf.pinned[f"{dp.pin_dir}/{name}"]


def test_apply_runs_the_program_on_every_port_and_binds_the_ports(tmp_path):
    k = Kernel()
    dp = k.datapath(tmp_path)
    result = dp.apply(bridge())
    assert result.hook == "tcx"
    assert result.devices == {dev: k.ifindex(dev) for dev in ("uplink", "downlink", "admin", "vgw", "vproxy")}
    ids = running(k, dp)
    assert set(ids) == set(result.devices) and len(set(ids.values())) == 1
    assert all(k.tc.filters(BOX, i) == [] for i in result.devices.values())
    # Port numbers -> devices; veths whose peers sit elsewhere are redirected into the peer;
    # LOCAL is the bridge, delivered to its own stack.
    ports = pinned_map(k, dp, "dp_ports")
    by_port = {C.U32.unpack(key)[0]: C.PORT.unpack(val) for key, val in ports.data.items()}
    assert by_port == {1: (k.ifindex("uplink"), 0), 2: (k.ifindex("downlink"), C.PORT_HOME),
                       3: (k.ifindex("admin"), C.PORT_PEER), 4: (k.ifindex("vgw"), C.PORT_PEER),
                       5: (k.ifindex("vproxy"), C.PORT_PEER),
                       C.OFPP_LOCAL: (k.ifindex("br0"), C.PORT_INGRESS)}
    assert dp.attached()


def test_a_port_without_its_device_is_left_out_until_the_device_exists(tmp_path):
    k = Kernel()
    k.devices.remove(BOX, "vgw")
    dp = k.datapath(tmp_path)
    assert "vgw" not in dp.apply(bridge()).devices
    assert C.U32.pack(4) not in pinned_map(k, dp, "dp_ports").data
    k.devices.add_veth(BOX, "vgw", "far", "vgw0")
    assert "vgw" in dp.apply(bridge()).devices
    assert "vgw" in running(k, dp)


def test_a_swap_updates_the_same_links_in_place(tmp_path):
    k = Kernel()
    dp = k.datapath(tmp_path)
    dp.apply(bridge())
    links = {dev: k.tc.link(dp.link_pin(dev)) for dev in running(k, dp)}
    before = running(k, dp)
    dp.apply(bridge(TABLE + "priority=5,tcp,actions=drop\n"))
    after = running(k, dp)
    assert set(after) == set(before) and set(after.values()) != set(before.values())
    for dev, link in links.items():
        again = k.tc.link(dp.link_pin(dev))
        assert again.id == link.id and again.prog_id == after[dev]
    assert not any(call[0] == "filter_attach" for call in k.tc.calls)


def test_without_tcx_a_clsact_filter_runs_it_and_tcx_takes_over_later(tmp_path):
    k = Kernel(tcx=False)
    dp = k.datapath(tmp_path)
    assert dp.apply(bridge()).hook == "tc"
    for dev in ("uplink", "vproxy"):
        filters = k.tc.filters(BOX, k.ifindex(dev))
        assert [(f.prio, f.handle) for f in filters] == [(tc.PRIO, tc.HANDLE)]
        assert k.tc.link(dp.link_pin(dev)) is None
    k.tc.tcx = True   # the kernel was upgraded
    assert dp.apply(bridge()).hook == "tcx"
    assert set(running(k, dp)) == {"uplink", "downlink", "admin", "vgw", "vproxy"}
    assert all(k.tc.filters(BOX, k.ifindex(d)) == [] for d in running(k, dp))
    assert k.tc.clsact == set()


def test_counters_stay_with_their_flows_across_a_recompile(tmp_path):
    k = Kernel()
    dp = k.datapath(tmp_path)
    first = bridge()
    dp.apply(first)
    stats = pinned_map(k, dp, "dp_stats")
    slots = dp.slots()
    for n, f in enumerate(first.flows):  # what the program would have counted, on two CPUs
        stats.set(C.U32.pack(slots[flow_identity(f)]), C.STATS.pack(n + 1, 100 * (n + 1)), cpu=0)
        stats.set(C.U32.pack(slots[flow_identity(f)]), C.STATS.pack(1, 10), cpu=1)
    dns, arp, rest = first.flows
    # The ARP flow goes, a TCP flow comes.
    second = bridge("priority=100,udp,tp_dst=53,actions=output:vproxy\n"
                    "priority=20,tcp,actions=drop\n"
                    "priority=10,actions=NORMAL\n")
    result = dp.apply(second)
    assert (result.added, result.removed) == (1, 1)
    got = {f.to_ofctl(): (s.n_packets, s.n_bytes) for f, s in
           zip(second.flows, [dp.flow_stats(second.flows)[f.key] for f in second.flows])}
    assert got == {dns.to_ofctl(): (2, 110), rest.to_ofctl(): (4, 310),
                   "priority=20,tcp actions=drop": (0, 0)}
    # The ARP flow's slot is zeroed for whichever flow takes it next.
    assert stats.get(C.U32.pack(slots[flow_identity(arp)])) == bytes(C.STATS.size)


def test_a_refused_program_leaves_the_old_one_running(tmp_path):
    k = Kernel()
    dp = k.datapath(tmp_path)
    dp.apply(bridge())
    before, state = running(k, dp), dp.slots()
    k.bpf.fail_on.add("load")
    with pytest.raises(BpfError, match="injected failure"):
        dp.apply(bridge(TABLE + "priority=5,tcp,actions=drop\n"))
    assert running(k, dp) == before and dp.slots() == state


def test_detach_leaves_nothing_behind(tmp_path):
    k = Kernel(tcx=False)
    dp = k.datapath(tmp_path)
    dp.apply(bridge())
    k.tc.tcx = True
    dp.apply(bridge())        # links now, the filters went
    dp.detach()
    assert k.bpf.pinned == {} and k.bpf.dirs == set()
    assert k.tc.filter_list == {} and k.tc.clsact == set()
    assert running(k, dp) == {}
    assert k.bpf.open_fds() == []
    assert not dp.attached() and not dp.state_path.exists()


def test_detach_keeps_the_pin_root_another_bridge_uses(tmp_path):
    k = Kernel()
    one, other = k.datapath(tmp_path), k.datapath(tmp_path, "br1")
    one.apply(bridge())
    other.apply(bridge())
    one.detach()
    assert k.bpf.dirs == {PIN_ROOT, other.pin_dir} and other.attached()
    other.detach()
    assert k.bpf.dirs == set()


def test_monitor_prints_what_the_program_sent_to_the_controller(tmp_path):
    k = Kernel()
    dp = k.datapath(tmp_path)
    table = bridge("priority=50,udp,tp_dst=9999,actions=controller\n")
    dp.apply(table)
    frame = bytes.fromhex("ffffffffffff020000000050080045000020000100004011f9c6c0a80132c0a801ff"
                          "270f270f000c0000") + b"ping"
    slot = dp.slots()[flow_identity(list(table.flows)[0])]
    pinned_map(k, dp, "dp_events").output(C.EVENT_HEAD.pack(2, slot, 0, len(frame)) + frame
                                          + bytes(C.EVENT_BYTES - len(frame)))
    out = io.StringIO()
    open_before = k.bpf.open_fds()
    assert monitor(dp, table.flows, out, table.port_names, count=1, timeout=1) == 1
    text = out.getvalue()
    assert text.startswith("NXT_PACKET_IN2 (xid=0x0): table_id=0 cookie=0x0 total_len=46 in_port=downlink")
    assert "udp" in text and "tp_dst=9999" in text
    assert "flow: priority=50,udp,tp_dst=9999 actions=CONTROLLER:65535" in text
    assert k.bpf.open_fds() == open_before   # the reader closed its own


def test_detach_after_the_namespace_went_still_removes_the_pins(tmp_path):
    k = Kernel(tcx=False)
    dp = k.datapath(tmp_path)
    dp.apply(bridge())
    k.devices.del_netns(BOX)          # the devices go, and their filters with them
    dp.detach()
    assert k.bpf.pinned == {} and k.bpf.dirs == set() and not dp.attached()


def count_mac(k: Kernel, dp: Datapath, mac: int, cpu: int, tx=(0, 0), rx=(0, 0), seen: int = 0) -> None:
    """What the program counts for one device on one CPU (c/dp_runtime.h: dp_mac_tx, dp_mac_rx)."""
    pinned_map(k, dp, "dp_macs").set(C.U64.pack(mac), C.MAC_STATS.pack(*tx, *rx, seen), cpu=cpu)


def test_per_device_counters_sum_the_cpus_and_survive_a_recompile(tmp_path):
    k = Kernel()
    dp = k.datapath(tmp_path)
    dp.apply(bridge())
    count_mac(k, dp, 0x02AA00000001, 0, tx=(3, 300), rx=(5, 7000), seen=10)
    count_mac(k, dp, 0x02AA00000001, 1, tx=(1, 60), rx=(2, 3000), seen=20)
    count_mac(k, dp, 0x02AA00000002, 1, tx=(1, 42), seen=5)
    dp.apply(bridge(TABLE + "priority=5,tcp,actions=drop\n"))    # a new program, the same map
    stats = dp.mac_stats()
    assert set(stats) == {"02:aa:00:00:00:01", "02:aa:00:00:00:02"}
    one = stats["02:aa:00:00:00:01"]
    assert (one.tx_packets, one.tx_bytes, one.rx_packets, one.rx_bytes, one.last_tx_ns) == (4, 360, 7, 10000, 20)
    # A console reading them, or forgetting one, leaves no fd open.
    before = k.bpf.open_fds()
    assert dp.forget_mac("02:AA:00:00:00:02") and set(dp.mac_stats()) == {"02:aa:00:00:00:01"}
    assert k.bpf.open_fds() == before


def test_per_device_counters_are_bounded(tmp_path):
    k = Kernel()
    dp = k.datapath(tmp_path)
    dp.apply(bridge())
    for n in range(C.MAX_MACS + 10):
        count_mac(k, dp, 0x020000000000 + n, 0, tx=(1, 60))
    stats = dp.mac_stats()
    assert len(stats) == C.MAX_MACS and "02:00:00:00:00:00" not in stats   # the longest silent went


def test_no_datapath_no_device_counters(tmp_path):
    dp = Kernel().datapath(tmp_path)
    assert dp.mac_stats() == {} and not dp.forget_mac("02:aa:00:00:00:01")


def test_pausing_writes_the_running_programs_map_and_survives_a_recompile(tmp_path):
    k = Kernel()
    dp = k.datapath(tmp_path)
    assert not dp.set_paused({"02:aa:00:00:00:01"}) and dp.paused() == set()   # nothing runs yet
    dp.apply(bridge())
    assert dp.set_paused({"02:AA:00:00:00:01", "02:aa:00:00:00:02"})
    assert pinned_map(k, dp, "dp_paused").data == {C.U64.pack(0x02AA00000001): C.U32.pack(0),
                                                   C.U64.pack(0x02AA00000002): C.U32.pack(0)}
    dp.apply(bridge(TABLE + "priority=5,tcp,actions=drop\n"))
    assert dp.paused() == {"02:aa:00:00:00:01", "02:aa:00:00:00:02"}
    dp.set_paused({"02:aa:00:00:00:02"})
    assert dp.paused() == {"02:aa:00:00:00:02"}
    with pytest.raises(ValueError, match="at most 1024"):
        dp.set_paused({f"02:00:00:00:{n >> 8:02x}:{n & 0xff:02x}" for n in range(C.MAX_PAUSED + 1)})


def test_the_box_dns_port_is_marked(tmp_path):
    k = Kernel()
    dp = Datapath("br0", netns=BOX, pin_root=PIN_ROOT, state_dir=tmp_path, local_device="br0",
                  home_ports=("downlink",), dns_ports=("vproxy",), bpf=k.bpf, tc=k.tc, devices=k.devices,
                  build=write_source)
    dp.apply(bridge())
    flags = {C.U32.unpack(key)[0]: C.PORT.unpack(val)[1] for key, val in pinned_map(k, dp, "dp_ports").data.items()}
    assert flags[2] == C.PORT_HOME and flags[5] == C.PORT_PEER | C.PORT_DNS and flags[1] == 0


def test_a_home_side_of_veths_is_counted_per_skb_on_every_port(tmp_path):
    # The lab's home port is a veth, whose far end counts a GSO skb as one packet.
    k = Kernel()
    dp = k.datapath(tmp_path, home_ports=("admin",))
    dp.apply(bridge())
    flags = {C.U32.unpack(key)[0]: C.PORT.unpack(val)[1] for key, val in pinned_map(k, dp, "dp_ports").data.items()
             if C.U32.unpack(key)[0] != C.OFPP_LOCAL}
    assert all(f & C.PORT_SKB_COUNT for f in flags.values()) and flags[3] & C.PORT_HOME
    # A NIC on the home side (the box): segments, as the wire carries them.
    dp = k.datapath(tmp_path / "nic")
    dp.apply(bridge())
    assert not any(C.PORT.unpack(v)[1] & C.PORT_SKB_COUNT for v in pinned_map(k, dp, "dp_ports").data.values())
