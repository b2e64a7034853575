"""Lookups per second: the reference classifier vs Open vSwitch's ofproto/trace.

Measured side by side in one run on the same tables and packets:
the seed's flow table (tests/data/seed-flows.txt) and random single-table
tables of 1,000 and 10,000 flows (tests/support/flowgen.py), with packets
aimed at the flows' matches. "ours" is `classify()` (lookup + actions);
"OVS" is `ofproto/trace` over the unixctl socket of a private
ovs-vswitchd with a dummy datapath (tests/support/ovs.py), which includes
the unixctl round trip: it is the baseline the brief names, not a measure
of OVS's datapath speed.

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = ap.parse_args()

    seed = seed_bridge()
    with open(os.path.join(os.path.dirname(__file__), "..", "tests", "data", "seed-flows.txt")) as fh:
        seed.flows.extend(parse_flows(fh.read(), seed.port_map))
    r = random.Random(42)
    cases = [("seed table", seed)]
    for n in (1000, 10000):
        br = Bridge("br0", {f"p{i}": i for i in flowgen.PORTS}, flowgen.random_table(r, n, n_tables=1))
        cases.append((f"{n:,} random flows", br))

    rows = []
    for name, br in cases:
        packets = flowgen.packets_for(br.flows, random.Random(7), 2000)
        t0 = time.perf_counter()
        Classifier(br.flows)
        build = time.perf_counter() - t0
        ours = rate(lambda p: classify(br.flows, p, br), packets, args.seconds)
        ovs = None
        if ovs_available() and os.geteuid() == 0:
            with OvsOracle(br.ports) as o:
                o.load_flows(br.flows)
                texts = [p.to_ofctl() for p in packets]
                ovs = rate(lambda t: o.trace_text(t), texts, args.seconds)
        rows.append((name, len(br.flows), build * 1000, ours, ovs))

    print()
    print(f"{'table':<20} {'flows':>7} {'index ms':>9} {'ours lookups/s':>15} {'OVS trace/s':>12} {'ours/OVS':>9}")
    for name, n, build_ms, ours, ovs in rows:
        ovs_s = f"{ovs:12,.0f}" if ovs else f"{'n/a':>12}"
        ratio = f"{ours / ovs:8.1f}x" if ovs else f"{'n/a':>9}"
        print(f"{name:<20} {n:>7} {build_ms:9.1f} {ours:15,.0f} {ovs_s} {ratio}")
    print()
    print("ours = appliance.switch.classifier.classify (lookup + actions), one Python process;")
    print("OVS  = ovs-appctl ofproto/trace over unixctl (ovs Python client), dummy datapath.")
    print("reproduce: .venv/bin/python bench/classifier.py --seconds", args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
