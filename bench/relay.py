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
- what a kernel fast path for ``direct`` routes would give: the client's
  connections to an address DNATed to the server by nftables in vproxy
  (conntrack, no relay), against routed with the same conntrack load. The
  address is outside the fake range: in it, the local route the TPROXY
  socket needs makes the kernel drop forwarded packets (`ip_forward`);
- connections per second (connect, one request, a 1-byte answer, close)
  from 4 client processes, routed vs through the relay;
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
Only not terminating TCP comes near 1.0: the kernel DNAT rows.
"""

from __future__ import annotations

import argparse
import glob
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
from appliance.lab.relaylab import IPERF_PORT, TEST_PORT, WEB_IP, RelayLab  # noqa: E402


def cpu_seconds(pid: int | str) -> float:
    """utime + stime of a process (its softirq work too: this kernel has no IRQ time accounting)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ksoftirqd_seconds() -> float:
    total = 0.0
    for comm in glob.glob("/proc/[0-9]*/comm"):
        try:
            if Path(comm).read_text().startswith("ksoftirqd/"):
                total += cpu_seconds(comm.split("/")[2])
        except (OSError, ValueError):
            pass  # gone meanwhile
    return total


def iperf(lab: RelayLab, target: str, seconds: int, reverse: bool = False,
          relay_pid: int | None = None) -> tuple[float, float]:
    """One iperf3 run: (Gbit/s, CPU seconds per GB over iperf3 + relay + ksoftirqd)."""
    soft, relay = ksoftirqd_seconds(), cpu_seconds(relay_pid) if relay_pid else 0.0
    res = lab.sh("client", ["iperf3", "-c", target, "-p", str(IPERF_PORT), "-t", str(seconds),
                            "-J", *(["-R"] if reverse else [])], timeout=seconds + 30)
    soft = ksoftirqd_seconds() - soft
    relay = (cpu_seconds(relay_pid) - relay) if relay_pid else 0.0
    data = json.loads(res.stdout)
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


NAT_ADDRESS = "198.18.0.1"  # stands for a fake address the kernel would NAT itself


def kernel_dnat(lab: RelayLab) -> None:
    """From now on vproxy runs conntrack; NAT_ADDRESS:iperf3 goes to the server."""
    table = f"""table ip bench_dnat {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr {NAT_ADDRESS} tcp dport {IPERF_PORT} dnat to {WEB_IP}
  }}
}}
"""
    lab.sh("vproxy", ["nft", "-f", "-"], input=table)


def set_splice(lab: RelayLab, on: bool) -> None:
    lab.write_config(splice=on)
    lab.procs["relay"].send_signal(signal.SIGHUP)
    time.sleep(0.5)


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
    with RelayLab() as lab:
        fake = lab.resolve("direct.test")  # a fake address whose route is direct, to WEB_IP
        pid = lab.query("stats")["pid"]
        rows, costs = [], []
        for label, reverse in (("iperf3 TCP upload, Gbit/s", False), ("iperf3 TCP download, Gbit/s", True)):
            runs: dict[str, list[tuple[float, float]]] = {"routed": [], "splice": [], "copy": []}
            for _ in range(args.repeat):  # interleaved: each round sees about the same load
                runs["routed"].append(iperf(lab, WEB_IP, args.seconds, reverse))
                runs["splice"].append(iperf(lab, fake, args.seconds, reverse, pid))
                set_splice(lab, False)
                runs["copy"].append(iperf(lab, fake, args.seconds, reverse, pid))
                set_splice(lab, True)
                loads.append(os.getloadavg()[0])
            rate = {k: statistics.median(r for r, _ in v) for k, v in runs.items()}
            cost = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
            rows.append((label, rate["routed"], rate["splice"], rate["copy"]))
            costs.append((label.split(",")[0] + ", CPU s/GB", cost["routed"], cost["splice"], cost["copy"]))
        kernel_dnat(lab)
        nat_rows = []
        for label, reverse in (("upload", False), ("download", True)):
            routed_nat, dnat = [], []
            for _ in range(args.repeat):
                routed_nat.append(iperf(lab, WEB_IP, args.seconds, reverse))
                dnat.append(iperf(lab, NAT_ADDRESS, args.seconds, reverse))
                loads.append(os.getloadavg()[0])
            for unit, i in (("Gbit/s", 0), ("CPU s/GB", 1)):
                nat_rows.append((f"kernel DNAT {label}, {unit}", statistics.median(r[i] for r in routed_nat),
                                 statistics.median(r[i] for r in dnat)))
        cps_routed = connections_per_second(lab, WEB_IP, args.seconds)
        cps_relay = connections_per_second(lab, fake, args.seconds)
        rows.append(("connections/s (4 clients)", cps_routed, cps_relay, None))
        per_conn, rss = memory_per_idle_connection(lab, fake, args.idle)

    print(textwrap.dedent(f"""
        relay benchmark: client -> vproxy -> internet namespaces, one run, {os.cpu_count()} CPUs
        baseline = the same client and server routed by vproxy's kernel (no relay)
        iperf3 rows: median of {args.repeat} interleaved rounds of {args.seconds}s; load average (1 min)
        {min(loads):.1f}..{max(loads):.1f} during the run
    """).strip())
    head = f"{'measure':<30} {'routed':>10} {'relay':>10} {'ratio':>7} {'relay copy':>11} {'ratio':>7}"
    print(head)
    print("-" * len(head))
    for name, base, relay, copy in rows:
        copy_cols = f"{copy:>11.2f} {copy / base:>7.2f}" if copy is not None else f"{'-':>11} {'-':>7}"
        print(f"{name:<30} {base:>10.2f} {relay:>10.2f} {relay / base:>7.2f} {copy_cols}")
    for name, base, relay, copy in costs:
        print(f"{name:<30} {base:>10.3f} {relay:>10.3f} {base / relay:>7.2f} {copy:>11.3f} {base / copy:>7.2f}")
    print("kernel DNAT rows: relay column = DNAT to the server (conntrack), routed = the same with "
          "conntrack loaded; for CPU s/GB the ratio is routed/DNAT cost")
    for name, base, nat in nat_rows:
        ratio = nat / base if "Gbit" in name else base / nat
        print(f"{name:<30} {base:>10.3f} {nat:>10.3f} {ratio:>7.2f}")
    print(f"{'relay memory per idle conn':<30} {'-':>10} {per_conn / 1024:>8.1f}Ki {'':>7} "
          f"(RSS {rss / 1024:.1f} MiB with {args.idle} held)")
    print("CPU s/GB rows: the ratio column is routed/relay cost, the throughput ratio expected "
          "when the CPUs are the limit")
    for (name, base, relay, _), (_, cbase, crelay, _) in zip(rows[:2], costs):
        ratio = relay / base
        print(f"target {name.split(',')[0]}: relay >= 0.8 x routed: {ratio:.2f} -> "
              f"{'met' if ratio >= 0.8 else 'NOT met'} (cost ratio {cbase / crelay:.2f})")
    print(f"command: sudo .venv/bin/python bench/relay.py --seconds {args.seconds} --idle {args.idle} "
          f"--repeat {args.repeat}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
