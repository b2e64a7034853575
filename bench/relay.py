"""Relay benchmark: through the relay vs plain routing, same namespaces, one run.

    sudo .venv/bin/python bench/relay.py [--seconds 5] [--idle 1000]

Builds `appliance.lab.relaylab` (client -> vproxy -> internet, the DNS
server and the relay in vproxy) and measures, side by side:

- iperf3 TCP throughput from the client to the internet namespace's iperf3
  server: routed by vproxy's kernel (the baseline: no relay), through the
  relay with splice (the default), and through the relay copying through
  user space (``splice: false``, to show what splice buys);
- connections per second (connect, one request, a 1-byte answer, close)
  from 4 client processes, routed vs through the relay;
- the relay process's memory per idle connection (RSS growth while
  `--idle` connections are held open after one exchange each).

Target: relay throughput >= 0.8 x routed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # not bench/: its dns.py would shadow dnspython

from appliance.lab import relaylab  # noqa: E402
from appliance.lab.relaylab import IPERF_PORT, TEST_PORT, WEB_IP, RelayLab  # noqa: E402


def iperf(lab: RelayLab, target: str, seconds: int, reverse: bool = False) -> float:
    res = lab.sh("client", ["iperf3", "-c", target, "-p", str(IPERF_PORT), "-t", str(seconds),
                            "-J", *(["-R"] if reverse else [])], timeout=seconds + 30)
    data = json.loads(res.stdout)
    return data["end"]["sum_received"]["bits_per_second"] / 1e9


CPS_CLIENT = """
import socket, sys, time
target, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
n, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    s = socket.create_connection((target, port))
    s.sendall(b"bytes 1\\n")
    while s.recv(64):
        pass
    s.close()
    n += 1
print(n)
"""


def connections_per_second(lab: RelayLab, target: str, seconds: float, workers: int = 4) -> float:
    procs = [subprocess.Popen(["ip", "netns", "exec", lab.ns["client"], relaylab.PYTHON, "-c",
                               CPS_CLIENT, target, str(TEST_PORT), str(seconds)],
                              stdout=subprocess.PIPE, text=True) for _ in range(workers)]
    total = sum(int(p.communicate(timeout=seconds + 60)[0]) for p in procs)
    return total / seconds


HOLD_CLIENT = """
import resource, socket, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
target, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = []
for _ in range(count):
    s = socket.create_connection((target, port))
    s.sendall(b"hold\\n")
    socks.append(s)
for s in socks:
    assert s.recv(16) == b"ok\\n"
print("held", flush=True)
sys.stdin.readline()
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def memory_per_idle_connection(lab: RelayLab, target: str, count: int) -> tuple[float, int]:
    pid = lab.query("stats")["pid"]
    before = rss_kib(pid)
    proc = subprocess.Popen(["ip", "netns", "exec", lab.ns["client"], relaylab.PYTHON, "-c",
                             HOLD_CLIENT, target, str(TEST_PORT), str(count)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        while lab.query("stats")["live_tcp"] < count:
            time.sleep(0.1)
        after = rss_kib(pid)
    finally:
        proc.kill()
        proc.wait()
    return (after - before) * 1024 / count, after


def set_splice(lab: RelayLab, on: bool) -> None:
    lab.write_config(splice=on)
    lab.procs["relay"].send_signal(signal.SIGHUP)
    time.sleep(0.5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--idle", type=int, default=1000)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (namespaces, nftables)", file=sys.stderr)
        return 1
    with RelayLab() as lab:
        fake = lab.resolve("direct.test")  # a fake address whose route is direct, to WEB_IP
        rows = []
        for label, reverse in (("iperf3 TCP upload, Gbit/s", False), ("iperf3 TCP download, Gbit/s", True)):
            routed = iperf(lab, WEB_IP, args.seconds, reverse)
            spliced = iperf(lab, fake, args.seconds, reverse)
            set_splice(lab, False)
            copied = iperf(lab, fake, args.seconds, reverse)
            set_splice(lab, True)
            rows.append((label, routed, spliced, copied))
        cps_routed = connections_per_second(lab, WEB_IP, args.seconds)
        cps_relay = connections_per_second(lab, fake, args.seconds)
        rows.append(("connections/s (4 clients)", cps_routed, cps_relay, None))
        per_conn, rss = memory_per_idle_connection(lab, fake, args.idle)

    print(textwrap.dedent(f"""
        relay benchmark: client -> vproxy -> internet namespaces, one run, {os.cpu_count()} CPUs
        baseline = the same client and server routed by vproxy's kernel (no relay)
    """).strip())
    head = f"{'measure':<30} {'routed':>10} {'relay':>10} {'ratio':>7} {'relay copy':>11} {'ratio':>7}"
    print(head)
    print("-" * len(head))
    for name, base, relay, copy in rows:
        copy_cols = f"{copy:>11.2f} {copy / base:>7.2f}" if copy is not None else f"{'-':>11} {'-':>7}"
        print(f"{name:<30} {base:>10.2f} {relay:>10.2f} {relay / base:>7.2f} {copy_cols}")
    print(f"{'relay memory per idle conn':<30} {'-':>10} {per_conn / 1024:>8.1f}Ki {'':>7} "
          f"(RSS {rss / 1024:.1f} MiB with {args.idle} held)")
    for name, base, relay, _ in rows[:2]:
        ratio = relay / base
        print(f"target {name.split(',')[0]}: relay >= 0.8 x routed: {ratio:.2f} -> "
              f"{'met' if ratio >= 0.8 else 'NOT met'}")
    print(f"command: sudo .venv/bin/python bench/relay.py --seconds {args.seconds} --idle {args.idle}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
