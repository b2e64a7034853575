#!/usr/bin/env python3
"""Per-packet cost of the compiled datapath as the flow table grows.

For 15 (the seed), 100, 1,000 and 10,000 flows: ns per packet measured by
BPF_PROG_TEST_RUN on the production build, and the time to compile + clang + load + swap the program
onto a device in a throwaway namespace.  Tables above 64 flows use tuple
space search; the generated flows use the shapes a home network has
(per-host MAC steering, per-address+port DNS/proxy rules, per-port
blocks), so the number of distinct masks stays small as in OVS.

Two ways of timing, because a test run with `repeat` runs the program again
and again on the same skb: fine for NORMAL, which changes nothing, but a
steered frame leaves each run rewritten and with its hop count advanced,
and after 8 runs the loop guard drops it at once (the old DNS column timed
that drop).  So NORMAL is timed with repeat=200,000, and both paths are
also timed one run per call (median of many calls) less the same figure
for an empty tc program, which removes the timer's own cost.

Run as root:  .venv/bin/python bench/datapath_scale.py
"""
from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # not bench/: its dns.py would shadow dnspython

from appliance.kernel.bpf import Map  # noqa: E402
from appliance.kernel.libbpf import LinuxBpf  # noqa: E402
from appliance.switch.bridge import seed_bridge  # noqa: E402
from appliance.switch.datapath import contract as C  # noqa: E402
from appliance.switch.datapath.build import build  # noqa: E402
from appliance.switch.datapath.datapath import Datapath  # noqa: E402
from appliance.switch.flows import FlowTable  # noqa: E402
from appliance.switch.packet import Packet, ipv4, mac  # noqa: E402
from appliance.switch.parser import parse_flows  # noqa: E402

BPF = LinuxBpf()
REPEAT = 200_000
SINGLE = 4000          # one-run calls per figure
EMPTY_PROGRAM = """#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("tc") int empty(struct __sk_buff *skb) { return 0; }
char _license[] SEC("license") = "GPL";
"""
SEED = ROOT / "tests" / "data" / "seed-flows.txt"


def table_of(n: int, br) -> FlowTable:
    text = SEED.read_text()
    rnd = random.Random(n)
    lines = []
    shapes = 0
    while len(lines) + 15 < n:
        i = len(lines)
        shape = shapes % 3
        shapes += 1
        if shape == 0:
            lines.append(f"priority=300,dl_dst=02:10:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}:01,"
                         f"actions=output:{rnd.randint(1, 5)}")
        elif shape == 1:
            lines.append(f"priority=400,udp,nw_dst=10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255},tp_dst=53,"
                         "actions=mod_dl_dst:d6:00:00:00:00:bf,output:vproxy")
        else:
            lines.append(f"priority=350,tcp,in_port={rnd.randint(1, 5)},nw_src=172.16.{i >> 8 & 255}.{i & 255},"
                         "actions=drop")
    return FlowTable(parse_flows(text + "\n" + "\n".join(lines), br.port_map))


PACKETS = {
    # frame, in_port: NORMAL (lowest priority: the longest walk), DNS steer
    "normal": (Packet(dl_src=mac("02:00:00:00:00:50"), dl_dst=mac("02:00:00:00:00:08"),
                      dl_type=0x0800, nw_proto=17, nw_src=ipv4("192.168.1.50"),
                      nw_dst=ipv4("192.168.1.8"), tp_src=1234, tp_dst=9999, nw_ttl=64), 2),
    "dns": (Packet(dl_src=mac("02:00:00:00:00:50"), dl_dst=mac("18:00:00:00:00:e8"),
                   dl_type=0x0800, nw_proto=17, nw_src=ipv4("192.168.1.50"),
                   nw_dst=ipv4("192.168.1.1"), tp_src=1234, tp_dst=53, nw_ttl=64), 2),
}


def single_ns(fd: int, frame: bytes) -> float:
    """Median duration of one run per BPF_PROG_TEST_RUN call."""
    return statistics.median(BPF.test_run(fd, frame, repeat=1).duration_ns for _ in range(SINGLE))


def main() -> None:
    ns = f"dpscale{os.getpid()}"
    pin_root = f"/sys/fs/bpf/dpscale{os.getpid()}"
    rows = []
    subprocess.run(["ip", "netns", "add", ns], check=True)
    state = tempfile.TemporaryDirectory()
    empty = BPF.load(str(build(EMPTY_PROGRAM, state.name)), ("empty",))
    try:
        for port in ("uplink", "downlink", "admin", "vgw", "vproxy"):
            subprocess.run(["ip", "-n", ns, "link", "add", port, "type", "veth", "peer", "name", port + "-p"],
                           check=True)
        for n in (15, 100, 1000, 10000):
            br = seed_bridge()
            br.flows = table_of(n, br)
            dp = Datapath("br0", netns=ns, pin_root=pin_root, state_dir=state.name)
            t0 = time.perf_counter()
            res = dp.apply(br)
            apply_s = time.perf_counter() - t0
            # A swap of the same size again (objects cached: load+fill+swap only).
            t0 = time.perf_counter()
            dp.apply(br)
            reswap_s = time.perf_counter() - t0
            ports_fd = BPF.open_pinned(os.path.join(dp.pin_dir, "dp_ports"))
            obj = BPF.load(str(res.object_path), ("dp_ingress",), reuse={"dp_ports": ports_fd})
            BPF.close(ports_fd)
            # Test runs come in on loopback (ifindex 1): call it downlink.
            Map(BPF, obj.map_fd("dp_ifports"), 4, 4).update(C.U32.pack(1), C.U32.pack(2))
            for image in res.program.tables:
                if image.map_name:
                    m = Map(BPF, obj.map_fd(image.map_name), image.key_size, 16)
                    for k, v in image.entries:
                        m.update(k, v)
            fd = obj.prog_fd("dp_ingress")
            normal = PACKETS["normal"][0].to_bytes()
            dns = PACKETS["dns"][0].to_bytes()
            repeat = statistics.median(BPF.test_run(fd, normal, repeat=REPEAT).duration_ns for _ in range(3))
            base = single_ns(empty.prog_fd("empty"), normal)
            one = {name: single_ns(fd, frame) - base for name, frame in (("normal", normal), ("dns", dns))}
            strategies = sorted({t.strategy for t in res.program.tables})
            rows.append((n, "/".join(strategies), repeat, one["normal"], one["dns"], apply_s, reswap_s))
            obj.close()
            dp.detach()
    finally:
        empty.close()
        subprocess.run(["ip", "netns", "del", ns])
        state.cleanup()
        try:
            os.rmdir(pin_root)
        except OSError:
            pass
    b0 = rows[0]
    print(f"{'flows':>6} {'lookup':>7} {'NORMAL repeat':>14} {'x15':>5} {'NORMAL 1-run':>13} {'x15':>5}"
          f" {'DNS 1-run':>10} {'x15':>5} {'compile+load+swap s':>20} {'re-swap s':>10}")
    for n, strat, a, a1, d1, s, r in rows:
        print(f"{n:>6} {strat:>7} {a:>14.0f} {a / b0[2]:>5.2f} {a1:>13.0f} {a1 / b0[3]:>5.2f}"
              f" {d1:>10.0f} {d1 / b0[4]:>5.2f} {s:>20.3f} {r:>10.3f}")
    with open("/proc/loadavg") as fh:
        load = " ".join(fh.read().split()[:3])
    print(f"\nns per packet from BPF_PROG_TEST_RUN: 'repeat' = repeat={REPEAT}, median of 3; "
          f"'1-run' = median of {SINGLE} one-run calls less an empty program's.\n"
          f"load average: {load}; command: .venv/bin/python bench/datapath_scale.py")


if __name__ == "__main__":
    main()
