#!/usr/bin/env python3
"""Per-packet cost of the compiled datapath as the flow table grows.

For 15 (the seed), 100, 1,000 and 10,000 flows: ns per packet measured by
BPF_PROG_TEST_RUN (production build, repeat >= 100,000, median of the
packets below) and the time to compile + clang + load + swap the program
onto a device in a throwaway namespace.  Tables above 64 flows use tuple
space search; the generated flows use the shapes a home network has
(per-host MAC steering, per-address+port DNS/proxy rules, per-port
blocks), so the number of distinct masks stays small as in OVS.

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

from appliance.switch.bridge import seed_bridge  # noqa: E402
from appliance.switch.datapath import contract as C  # noqa: E402
from appliance.switch.datapath.datapath import Datapath  # noqa: E402
from appliance.switch.datapath.libbpf import BpfObject, Map, test_run  # noqa: E402
from appliance.switch.flows import FlowTable  # noqa: E402
from appliance.switch.packet import Packet, ipv4, mac  # noqa: E402
from appliance.switch.parser import parse_flows  # noqa: E402

REPEAT = 200_000
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


def main() -> None:
    ns = f"dpscale{os.getpid()}"
    pin_root = f"/sys/fs/bpf/dpscale{os.getpid()}"
    rows = []
    subprocess.run(["ip", "netns", "add", ns], check=True)
    state = tempfile.TemporaryDirectory()
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
            obj = BpfObject(str(res.object_path), ("dp_ingress",),
                            reuse={"dp_ports": _pinned(dp, "dp_ports")})
            # Test runs come in on loopback (ifindex 1): call it downlink.
            Map(obj.map_fd("dp_ifports"), 4, 4).update(C.U32.pack(1), C.U32.pack(2))
            for image in res.program.tables:
                if image.map_name:
                    m = Map(obj.map_fd(image.map_name), image.key_size, 16)
                    for k, v in image.entries:
                        m.update(k, v)
            fd = obj.prog_fd("dp_ingress")
            ns_per = {}
            for name, (pkt, _port) in PACKETS.items():
                runs = [test_run(fd, pkt.to_bytes(), repeat=REPEAT).duration_ns for _ in range(3)]
                ns_per[name] = statistics.median(runs)
            strategies = sorted({t.strategy for t in res.program.tables})
            rows.append((n, "/".join(strategies), ns_per["normal"], ns_per["dns"], apply_s, reswap_s))
            obj.close()
            dp.detach()
    finally:
        subprocess.run(["ip", "netns", "del", ns])
        state.cleanup()
        try:
            os.rmdir(pin_root)
        except OSError:
            pass
    base = rows[0]
    print(f"{'flows':>6} {'lookup':>7} {'ns/pkt NORMAL':>14} {'x15':>5} {'ns/pkt DNS':>11} {'x15':>5}"
          f" {'compile+load+swap s':>20} {'re-swap s':>10}")
    for n, strat, a, b, s, r in rows:
        print(f"{n:>6} {strat:>7} {a:>14.0f} {a / base[2]:>5.2f} {b:>11.0f} {b / base[3]:>5.2f}"
              f" {s:>20.3f} {r:>10.3f}")
    print(f"\nBPF_PROG_TEST_RUN repeat={REPEAT}, median of 3; "
          "command: .venv/bin/python bench/datapath_scale.py")


def _pinned(dp, name):
    from appliance.switch.datapath.libbpf import obj_get
    return obj_get(os.path.join(dp.pin_dir, name))


if __name__ == "__main__":
    main()
