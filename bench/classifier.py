"""Lookups per second: the reference classifier vs Open vSwitch's ofproto/trace.

Measured side by side in one run on the same tables and packets:
the seed's flow table (tests/data/seed-flows.txt, the baseline); the
Faucet tutorial's four-table VLAN pipeline (tests/data/faucet-flows.txt,
the multi-table row: untagged frames from the five hosts' ports to known,
unknown, broadcast and multicast destinations, so a packet is pushed onto
its port's VLAN, walks 3 or 4 tables and is popped); a one-table VLAN trunk
(tests/data/vlan-trunk-flows.txt, the VLAN row: tags pushed and popped in a
single lookup); and random single-table tables of 1,000 and 10,000 flows
(tests/support/flowgen.py) with packets aimed at the flows' matches.
"tables/pkt" is the mean number of lookups per packet; "x seed" is the
row's rate over the seed row's, for ours and OVS each.  The two VLAN
tables are loaded into OVS with -O OpenFlow13, as their files say.

"ours" is `classify()` (lookup + actions); "OVS" is `ofproto/trace` over
the unixctl socket of a private ovs-vswitchd with a dummy datapath
(tests/support/ovs.py), which includes the unixctl round trip: it is the
baseline the brief names, not a measure of OVS's datapath speed.

Reproduce (as root, Open vSwitch installed):

    .venv/bin/python bench/classifier.py [--seconds 2]
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # not bench/: its dns.py would shadow dnspython

from appliance.switch.bridge import Bridge, seed_bridge  # noqa: E402
from appliance.switch.classifier import Classifier, classify  # noqa: E402
from appliance.switch.packet import Packet, mac  # noqa: E402
from appliance.switch.parser import parse_flows  # noqa: E402
from tests.support import flowgen  # noqa: E402
from tests.support.ovs import OvsOracle, ovs_available  # noqa: E402


def rate(fn, packets, seconds: float) -> float:
    n, i = 0, 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            fn(packets[i % len(packets)])
            i += 1
        n += 100
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data")
# The Faucet tutorial's hosts: h1, h2, h3 on p1..p3 (VLAN 100), h4, h5 on
# p4, p5 (VLAN 200); h1, h2 and h4 are learned in its tables.
HOSTS = {p: mac(f"00:{p}{p}:{p}{p}:00:00:00") for p in (1, 2, 3, 4, 5)}
OTHER_DSTS = [mac("ff:ff:ff:ff:ff:ff"), mac("33:33:00:00:00:01"), mac("01:00:5e:00:00:01"),
              mac("00:66:66:00:00:00")]


def faucet_packets(r: random.Random, n: int) -> list[Packet]:
    """Untagged IPv4/UDP frames from each host's own port to another host or
    a broadcast, multicast or unknown destination."""
    out = []
    for _ in range(n):
        port = r.choice(tuple(HOSTS))
        dst = r.choice([m for p, m in HOSTS.items() if p != port] + OTHER_DSTS)
        out.append(Packet(in_port=port, dl_src=HOSTS[port], dl_dst=dst, dl_type=0x0800, nw_proto=17,
                          nw_src=0x0A000000 + port, nw_dst=0x0A000063, tp_src=1000 + port, tp_dst=53,
                          nw_ttl=64))
    return out


def trunk_packets(r: random.Random, n: int) -> list[Packet]:
    """Frames from p2, untagged (pushed onto VLAN 100) or tagged 100 (popped)."""
    return [Packet(in_port=2, dl_src=HOSTS[2], dl_dst=HOSTS[1], dl_type=0x0800, nw_proto=17,
                   nw_src=0x0A000002, nw_dst=0x0A000001, tp_src=1000, tp_dst=53, nw_ttl=64,
                   vlan_tci=r.choice((0, 0x1064)))
            for _ in range(n)]


def flow_file(name: str, br: Bridge) -> Bridge:
    with open(os.path.join(DATA, name)) as fh:
        br.flows.extend(parse_flows(fh.read(), br.port_map, of11=True))
    return br


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = ap.parse_args()

    seed = seed_bridge()
    with open(os.path.join(DATA, "seed-flows.txt")) as fh:
        seed.flows.extend(parse_flows(fh.read(), seed.port_map))
    r = random.Random(42)
    # (name, bridge, packets, ovs-ofctl -O)
    cases = [("seed table", seed, flowgen.packets_for(seed.flows, random.Random(7), 2000), None)]
    ports = {f"p{i}": i for i in flowgen.PORTS}
    faucet = flow_file("faucet-flows.txt", Bridge("br0", ports))
    cases.append(("Faucet, 4 tables", faucet, faucet_packets(random.Random(7), 2000), "OpenFlow13"))
    trunk = flow_file("vlan-trunk-flows.txt", Bridge("br0", ports))
    cases.append(("VLAN trunk, 1 table", trunk, trunk_packets(random.Random(7), 2000), "OpenFlow13"))
    for n in (1000, 10000):
        br = Bridge("br0", dict(ports), flowgen.random_table(r, n, n_tables=1))
        cases.append((f"{n:,} random flows", br, flowgen.packets_for(br.flows, random.Random(7), 2000), None))

    rows = []
    for name, br, packets, protocol in cases:
        t0 = time.perf_counter()
        Classifier(br.flows)
        build = time.perf_counter() - t0
        tables = sum(len(classify(br.flows, p, br).lookups) for p in packets) / len(packets)
        ours = rate(lambda p: classify(br.flows, p, br), packets, args.seconds)
        ovs = None
        if ovs_available() and os.geteuid() == 0:
            with OvsOracle(br.ports) as o:
                o.load_flows(br.flows, protocol)
                texts = [p.to_ofctl() for p in packets]
                ovs = rate(lambda t: o.trace_text(t), texts, args.seconds)
        rows.append((name, len(br.flows), tables, build * 1000, ours, ovs))

    print()
    base = rows[0]
    print(f"{'table':<20} {'flows':>6} {'tables/pkt':>10} {'index ms':>9} {'ours lookups/s':>15} {'x seed':>7}"
          f" {'OVS trace/s':>12} {'x seed':>7} {'ours/OVS':>9}")
    for name, n, tables, build_ms, ours, ovs in rows:
        ovs_s = f"{ovs:12,.0f} {ovs / base[5]:7.2f}" if ovs and base[5] else f"{'n/a':>12} {'n/a':>7}"
        ratio = f"{ours / ovs:8.1f}x" if ovs else f"{'n/a':>9}"
        print(f"{name:<20} {n:>6} {tables:>10.2f} {build_ms:9.1f} {ours:15,.0f} {ours / base[4]:7.2f} {ovs_s} {ratio}")
    print()
    print("ours = appliance.switch.classifier.classify (lookup + actions), one Python process;")
    print("OVS  = ovs-appctl ofproto/trace over unixctl (ovs Python client), dummy datapath.")
    print("x seed = the row's rate / the seed table's, same column; tables/pkt = ours' lookups per packet.")
    with open("/proc/loadavg") as fh:
        load = " ".join(fh.read().split()[:3])
    print(f"load average: {load}; reproduce: .venv/bin/python bench/classifier.py --seconds {args.seconds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
