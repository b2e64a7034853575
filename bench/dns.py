"""DNS benchmark: this server vs dnsmasq vs Unbound, same cached workload, one run.

    sudo .venv/bin/python bench/dns.py [--seconds 8] [--rate 5000]

Everything runs in a private network namespace on its loopback: an
authoritative dnsmasq holds the zone `bench.test`; this server, a caching
dnsmasq and Unbound all forward to it. After a warm-up pass every answer is
cached, then `dnsperf` measures each resolver in turn:

- throughput: queries/s at saturation (`-q` outstanding queries);
- latency: p50/p99 at a fixed offered load (`-Q rate`, from `dnsperf -v`),
  since latency at saturation only measures the queue length;
- this server's fake-IP answer path (names under a fake-ip rule), for
  names already mapped (answered from the fast path) and for new names
  (every query a name never seen: parse, policy, a new mapping in the
  fake-IP pool and its write to the SQLite store). New names have their own
  offered load for the latency run (`--new-rate`), below what the slow path
  sustains, and their own name lists (200000 for the throughput run, so the
  run never comes back to a name). After the run the server is stopped
  cleanly and the rows of its fake-IP store are counted.

`--server-root DIR` runs this server from another checkout (e.g. `git
archive HEAD appliance | tar -x -C DIR`) with this same benchmark, for a
before/after comparison in the same conditions.

The server runs with its query log and rate limiter active (the limit set
high enough not to drop a benchmark that comes from one client).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NS = f"dnsbench-{os.getpid()}-{random.randint(0, 0xffff):04x}"
AUTH, OURS, DNSMASQ, UNBOUND = 5300, 5301, 5302, 5303
NAMES = 200
NEW_NAMES = 200_000


def ns(*args: object) -> list[str]:
    return ["ip", "netns", "exec", NS, *map(str, args)]


def dnsperf(port: int, data: Path, *extra: object, timeout: float = 120) -> str:
    result = subprocess.run(ns("dnsperf", "-s", "127.0.0.1", "-p", port, "-d", data, *extra),
                            capture_output=True, text=True, timeout=timeout)
    return result.stdout + result.stderr


def throughput(port: int, data: Path, seconds: float) -> dict:
    out = dnsperf(port, data, "-l", seconds, "-q", 64, "-c", 4)
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))
    lost = re.search(r"Queries lost:\s+(\d+)", out).group(1)
    avg = float(re.search(r"Average Latency \(s\):\s+([\d.]+)", out).group(1))
    sent = int(re.search(r"Queries sent:\s+(\d+)", out).group(1))
    return {"qps": qps, "lost": int(lost), "avg_ms": avg * 1000, "sent": sent}


def latency(port: int, data: Path, rate: int, seconds: float) -> dict:
    out = dnsperf(port, data, "-l", seconds, "-Q", rate, "-v")
    samples = sorted(float(line.split()[-1]) for line in out.splitlines() if line.startswith("> "))
    if not samples:
        return {"p50_ms": float("nan"), "p99_ms": float("nan")}
    return {"p50_ms": statistics.median(samples) * 1000,
            "p99_ms": samples[int(len(samples) * 0.99) - 1] * 1000}


def wait_answer(port: int, name: str) -> None:
    for _ in range(100):
        r = subprocess.run(ns("dig", "-p", port, "@127.0.0.1", name, "+short", "+time=1", "+tries=1"),
                           capture_output=True, text=True)
        if r.stdout.strip():
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing answers on port {port}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rate", type=int, default=5000, help="offered q/s for the latency run")
    parser.add_argument("--new-rate", type=int, default=1000,
                        help="offered q/s for the latency run of new fake-IP names")
    parser.add_argument("--server-root", type=Path, default=ROOT,
                        help="run this server from that checkout (default: this one)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/dns.py needs root (a private network namespace)", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="dnsbench-"))
    procs: list[subprocess.Popen] = []
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        subprocess.run(ns("ip", "link", "set", "lo", "up"), check=True)
        records = [f"--host-record=n{i}.bench.test,198.51.100.{i % 250 + 1}" for i in range(NAMES)]
        records += [f"--host-record=f{i}.fake.bench.test,198.51.100.{i % 250 + 1}" for i in range(NAMES)]
        common = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                  "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1", "--user=root"]
        procs.append(subprocess.Popen(ns(*common, f"--port={AUTH}", "--local=/bench.test/",
                                         "--local-ttl=3600", f"--pid-file={tmp}/auth.pid", *records)))
        procs.append(subprocess.Popen(ns(*common, f"--port={DNSMASQ}", f"--server=127.0.0.1#{AUTH}",
                                         "--cache-size=10000", f"--pid-file={tmp}/dnsmasq.pid")))
        (tmp / "unbound.conf").write_text(f"""server:
  interface: 127.0.0.1@{UNBOUND}
  do-daemonize: no
  use-syslog: no
  logfile: ""
  username: ""
  chroot: ""
  directory: "{tmp}"
  pidfile: "{tmp}/unbound.pid"
  module-config: "iterator"
  interface-automatic: no
  do-not-query-localhost: no
  num-threads: 1
  local-zone: "test." nodefault
forward-zone:
  name: "bench.test."
  forward-addr: 127.0.0.1@{AUTH}
""")
        procs.append(subprocess.Popen(ns("unbound", "-d", "-c", tmp / "unbound.conf"),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        (tmp / "dns.yaml").write_text(f"""listen: ["127.0.0.1:{OURS}"]
upstreams: [{{url: "udp://127.0.0.1:{AUTH}"}}]
control_socket: null
rate_limit: {{per_client_qps: 100000000, burst: 1000000}}
fake_ip: {{db_path: "{tmp}/fakeip.sqlite3"}}
rules: [{{match: suffix, value: fake.bench.test, then: {{action: fake-ip, route: direct}}}}]
""")
        ours = subprocess.Popen(ns(sys.executable, "-m", "appliance.services.dns", "--config",
                                   tmp / "dns.yaml", "--log-level", "WARNING"),
                                cwd=args.server_root, stdout=subprocess.PIPE, text=True)
        procs.append(ours)
        if not ours.stdout.readline().startswith("ready"):
            raise RuntimeError("the DNS server did not start")
        for port in (AUTH, DNSMASQ, UNBOUND, OURS):
            wait_answer(port, "n1.bench.test")
        cached = tmp / "cached.txt"
        cached.write_text("".join(f"n{i}.bench.test A\n" for i in range(NAMES)))
        fake = tmp / "fake.txt"
        fake.write_text("".join(f"f{i}.fake.bench.test A\n" for i in range(NAMES)))
        for port, data in ((OURS, cached), (DNSMASQ, cached), (UNBOUND, cached), (OURS, fake)):
            dnsperf(port, data, "-n", 2)  # warm-up: every answer now cached
        new_sat = tmp / "new-sat.txt"
        new_sat.write_text("".join(f"t{i}.fake.bench.test A\n" for i in range(NEW_NAMES)))
        lat_seconds = min(args.seconds, 5)
        new_lat = tmp / "new-lat.txt"
        new_lat.write_text("".join(f"l{i}.fake.bench.test A\n"
                                   for i in range(int(args.new_rate * lat_seconds * 1.2) + 100)))
        rows = []
        for label, port, data, data_lat, rate in (
                ("this server (cached)", OURS, cached, cached, args.rate),
                ("dnsmasq 2.90 (cached)", DNSMASQ, cached, cached, args.rate),
                ("unbound (cached)", UNBOUND, cached, cached, args.rate),
                ("this server (fake-ip)", OURS, fake, fake, args.rate),
                ("this server (fake new)", OURS, new_sat, new_lat, args.new_rate)):
            row = {"label": label, "rate": rate}
            row.update(throughput(port, data, args.seconds))
            row.update(latency(port, data_lat, rate, lat_seconds))
            rows.append(row)
        ours.terminate()  # a clean stop: the fake-IP store gets every mapping
        ours.wait(30)
        with sqlite3.connect(f"file:{tmp}/fakeip.sqlite3?mode=ro", uri=True) as db:
            stored = db.execute("SELECT count(*) FROM fakeip").fetchone()[0]
        base = rows[1]["qps"]
        print(f"\nDNS, cached workload of {NAMES} names, loopback in netns, "
              f"{os.cpu_count()} CPUs, dnsperf -q 64 -c 4 for {args.seconds:g}s; "
              f"latency at -Q {args.rate}")
        print(f"{'server':24} {'queries/s':>10} {'x dnsmasq':>9} {'lost':>6} "
              f"{'avg ms@sat':>10} {'at -Q':>6} {'p50 ms':>7} {'p99 ms':>7}")
        for r in rows:
            print(f"{r['label']:24} {r['qps']:10.0f} {r['qps'] / base:9.2f} {r['lost']:6d} "
                  f"{r['avg_ms']:10.2f} {r['rate']:6d} {r['p50_ms']:7.3f} {r['p99_ms']:7.3f}")
        new = rows[-1]
        if new["sent"] > NEW_NAMES:
            print(f"warning: the new-names run sent {new['sent']} queries for {NEW_NAMES} names: "
                  f"it came back to names already mapped")
        print(f"fake-IP store after a clean stop: {stored} rows "
              f"({NAMES} warm names + new names asked: {min(new['sent'], NEW_NAMES)} at saturation,"
              f" about {int(args.new_rate * lat_seconds)} at -Q {args.new_rate})")
        root = "" if args.server_root == ROOT else f" --server-root {args.server_root}"
        print(f"\nreproduce: sudo .venv/bin/python bench/dns.py --seconds {args.seconds:g} "
              f"--rate {args.rate} --new-rate {args.new_rate}{root}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)  # the new-name lists and store: tens of MB
    return 0


if __name__ == "__main__":
    sys.exit(main())
