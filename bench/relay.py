"""Relay benchmark: through the relay vs plain routing, same namespaces, one run.

    sudo .venv/bin/python bench/relay.py [--seconds 5] [--idle 1000]

Builds `appliance.lab.relaylab` (client -> vproxy -> internet, the DNS
server and the relay in vproxy) and measures, side by side:

- iperf3 TCP throughput from the client to the internet namespace's iperf3
  server: routed by vproxy's kernel (the baseline: no relay), through the
  relay with splice (the default), and through the relay copying through
  user space (``splice: false``, to show what splice buys); rows are
  interleaved and repeated (`--repeat`), the median is reported;
- what each row costs: CPU seconds per GB moved, summed over the processes
  that carry it (iperf3 client and server from their own rusage, the relay
  process, ksoftirqd). The machine is shared, so throughput swings with
  other people's load while the cost per GB does not; when the two cores
  are saturated, relay/routed throughput tends to routed/relay cost, which
  is printed as the "cost ratio";
- the relay's kernel fast path for ``direct`` routes (`fastpath.py`, on
  by default): after one relayed connection to the name, iperf3's
  connections to the same fake address are DNATed by the kernel in vproxy
  and never reach the relay. The relay rows run with the fast path off, so
  they show what the first connection to a name, and every proxied
  connection, gets;
- connections per second (connect, one request, a 1-byte answer, close)
  from 4 client processes: routed, through the relay, and by the fast path;
- the relay process's memory per idle connection (RSS growth while
  `--idle` connections are held open after one exchange each).

Target: relay throughput >= 0.8 x routed.

What sets the ratio on a 2-core box: both cores are saturated in both rows,
so throughput follows CPU per byte. Routed, one TCP connection crosses
vproxy as forwarded packets; relayed, vproxy terminates it and opens a
second one, so the kernel does a second TCP receive and send per segment
(ACKs, queues, timers; the relay process's time is ~85% kernel and it moves
~220 KiB per splice() pair, so neither Python nor syscalls are the cost).
Socket buffer, pipe size, SPLICE_F_MORE, TCP_NODELAY and GSO size do not
change that (SO_RCVLOWAT stalls request/response protocols), and a BPF
sockmap relay costs more per byte than splice (`bench/relay_sockmap.py`).
Only not terminating TCP comes near 1.0: hence the fast path for the
routes that need nothing from user space once the address is known.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # not bench/: its dns.py would shadow dnspython

from appliance.lab import relaylab  # noqa: E402
from bench.cpu import cpu_seconds, threads_seconds  # noqa: E402
from appliance.lab.relaylab import IPERF_PORT, TEST_PORT, WEB_IP, RelayLab  # noqa: E402


def ksoftirqd_seconds() -> float:
    return threads_seconds("ksoftirqd/")


def iperf(lab: RelayLab, target: str, seconds: int, reverse: bool = False,
          relay_pid: int | None = None) -> tuple[float, float]:
    """One iperf3 run: (Gbit/s, CPU seconds per GB over iperf3 + relay + ksoftirqd)."""
    soft, relay = ksoftirqd_seconds(), cpu_seconds(relay_pid) if relay_pid else 0.0
    res = lab.sh("client", ["iperf3", "-c", target, "-p", str(IPERF_PORT), "-t", str(seconds),
                            "-J", *(["-R"] if reverse else [])], timeout=seconds + 30)
    soft = ksoftirqd_seconds() - soft
    relay = (cpu_seconds(relay_pid) - relay) if relay_pid else 0.0
    data = json.loads(res.stdout)
    if "error" in data:
        raise RuntimeError(f"iperf3 to {target}: {data['error']}")
    received = data["end"]["sum_received"]
    cpu = data["end"]["cpu_utilization_percent"]  # each end's own rusage over the test
    ends = (cpu["host_total"] + cpu["remote_total"]) / 100 * received["seconds"]
    return received["bits_per_second"] / 1e9, (ends + relay + soft) / (received["bytes"] / 1e9)


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


def configure(lab: RelayLab, splice: bool = True, fast: bool = False) -> None:
    """Reload the relay with splice on/off and the fast path on/off (an emptied map)."""
    lab.write_config(splice=splice, fast_path={"enabled": fast, "interfaces": ["home"]})
    lab.signal("relay", signal.SIGHUP)
    deadline = time.monotonic() + 10
    def table() -> bool:  # the relay's table exists (it is gone only once the old path stopped)
        return any(name == "appliance_relay" for _, name in lab.kernel.nft_tables(lab.ns["vproxy"]))

    while lab.query("stats")["fast_path"]["enabled"] != fast or table() != fast or (
            fast and lab.query("stats")["fast_path"]["entries"]):
        if time.monotonic() > deadline:
            raise RuntimeError("the relay did not take the new settings")
        time.sleep(0.05)
    if fast:  # one relayed connection: from then on the kernel maps the name
        lab.sh("client", ["curl", "-s", "-o", "/dev/null", "http://direct.test/whoami"])
        while lab.query("stats")["fast_path"]["entries"] < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the fast path never took the name")
            time.sleep(0.05)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3, help="iperf3 rounds per row (median reported)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (namespaces, nftables)", file=sys.stderr)
        return 1
    loads = [os.getloadavg()[0]]
    kinds = ("routed", "splice", "copy", "fast")
    with RelayLab() as lab:
        fake = lab.resolve("direct.test")  # a fake address whose route is direct, to WEB_IP
        pid = lab.query("stats")["pid"]
        rows, costs = [], []
        for label, reverse in (("iperf3 TCP upload, Gbit/s", False), ("iperf3 TCP download, Gbit/s", True)):
            runs: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
            for _ in range(args.repeat):  # interleaved: each round sees about the same load
                runs["routed"].append(iperf(lab, WEB_IP, args.seconds, reverse))
                configure(lab, splice=True, fast=False)
                runs["splice"].append(iperf(lab, fake, args.seconds, reverse, pid))
                configure(lab, splice=False, fast=False)
                runs["copy"].append(iperf(lab, fake, args.seconds, reverse, pid))
                configure(lab, splice=True, fast=True)
                runs["fast"].append(iperf(lab, fake, args.seconds, reverse, pid))
                loads.append(os.getloadavg()[0])
            rate = {k: statistics.median(r for r, _ in v) for k, v in runs.items()}
            cost = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
            rows.append((label, *(rate[k] for k in kinds)))
            costs.append((label.split(",")[0] + ", CPU s/GB", *(cost[k] for k in kinds)))
        cps = {"routed": connections_per_second(lab, WEB_IP, args.seconds)}
        configure(lab, fast=False)
        cps["splice"] = connections_per_second(lab, fake, args.seconds)
        configure(lab, fast=True)
        cps["fast"] = connections_per_second(lab, fake, args.seconds)
        rows.append(("connections/s (4 clients)", cps["routed"], cps["splice"], None, cps["fast"]))
        configure(lab, fast=False)  # idle connections held by the relay itself
        per_conn, rss = memory_per_idle_connection(lab, fake, args.idle)

    print(textwrap.dedent(f"""
        relay benchmark: client -> vproxy -> internet namespaces, one run, {os.cpu_count()} CPUs
        baseline = the same client and server routed by vproxy's kernel (no relay)
        relay = TPROXY + splice (the first connection to a name, and every proxied one);
        relay copy = recv/send instead of splice; fast path = later connections to a
        direct name, NATed by the kernel after one relayed connection
        iperf3 rows: median of {args.repeat} interleaved rounds of {args.seconds}s; load average (1 min)
        {min(loads):.1f}..{max(loads):.1f} during the run
    """).strip())
    head = (f"{'measure':<30} {'routed':>9} {'relay':>9} {'ratio':>6} {'relay copy':>11} {'ratio':>6} "
            f"{'fast path':>10} {'ratio':>6}")
    print(head)
    print("-" * len(head))

    def cols(value, base, width, invert=False):
        if value is None:
            return f"{'-':>{width}} {'-':>6}"
        ratio = base / value if invert else value / base
        fmt = ".3f" if invert else ".2f"
        return f"{value:>{width}{fmt}} {ratio:>6.2f}"

    for name, base, relay, copy, fast in rows:
        print(f"{name:<30} {base:>9.2f} {cols(relay, base, 9)} {cols(copy, base, 11)} {cols(fast, base, 10)}")
    for name, base, relay, copy, fast in costs:
        print(f"{name:<30} {base:>9.3f} {cols(relay, base, 9, True)} {cols(copy, base, 11, True)} "
              f"{cols(fast, base, 10, True)}")
    print(f"{'relay memory per idle conn':<30} {'-':>9} {per_conn / 1024:>7.1f}Ki "
          f"(RSS {rss / 1024:.1f} MiB with {args.idle} held)")
    print("CPU s/GB rows: the ratio column is routed/row cost, the throughput ratio expected "
          "when the CPUs are the limit")
    for name, base, relay, _, fast in rows[:2]:
        for what, value in (("relay", relay), ("fast path", fast)):
            ratio = value / base
            print(f"target {name.split(',')[0]}: {what} >= 0.8 x routed: {ratio:.2f} -> "
                  f"{'met' if ratio >= 0.8 else 'NOT met'}")
    print(f"command: sudo .venv/bin/python bench/relay.py --seconds {args.seconds} --idle {args.idle} "
          f"--repeat {args.repeat}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
