"""DNS benchmark: this server vs dnsmasq vs Unbound on loopback, and through the box in the lab.

    sudo .venv/bin/python bench/dns.py [--seconds 8] [--rate 5000] [--compare-root DIR] [--no-lab] [--no-ipv6]

dnsperf measures every row in one run, side by side:

- throughput: queries/s at saturation (`-q 64 -c 4 -T <CPUs>`), its ratio to the
  row's baseline (dnsmasq on loopback, the modem's dnsmasq in the lab);
- latency: p50/p99/p99.9 at a fixed offered load (`-Q rate`, from `dnsperf -v`),
  since latency at saturation only measures the queue length.

Loopback, in a private network namespace (two authoritative dnsmasq: one
with TTL 3600 for `bench.test` and `fwd.test`, one with TTL 0 for `fwd0.test`;
this server, a caching dnsmasq and Unbound forward to them):

- cached: 200 names asked again and again;
- forwarded: never-seen names with TTL 0 (every query goes upstream and
  nothing is kept: forwarding alone, dnsmasq's fastest case);
- never-seen names with TTL 3600 (every query goes upstream and fills the cache);
  again with 100 regex block rules none of the names match (an AdBlock list's
  `/.../` lines: every new name is searched against all of them), against
  the row without them;
- this server's fake-IP path: names under a fake-ip rule already mapped
  ("fake known"), and never seen ("fake new": parse, policy, a new mapping in
  the pool and its write to the SQLite store).
- IPv6: this server's cached, forwarded and fake-known rows again over
  ::1 (the same A questions; only the transport differs), each measured
  right after its IPv4 row and against it (issue 15: IPv6 within 0.9 of
  IPv4; on a shared machine, rows minutes apart differ more than that).

In the lab (`tests/e2e/boxlab.py`): dnsperf in a client namespace asks the
gateway 192.168.1.1, first before the box is applied (the modem's dnsmasq
answers, forwarding to the internet's zone), then after (the box answers
from netns vproxy, forwarding to the modem): cached (the lab's site names,
TTL 300; the box with `dns.kernel_cache` on, the default, then off; `--cached-only`:
only these rows), uncached (never-seen names, NXDOMAIN from the zone: both forward
every query), fake known and fake new (the box only), and fake known again
with the pool full while 50 new fake-IP names a second arrive (each
recycles an address: a home's steady state once its pool has filled). Latency of the cached
rows is taken at half the modem's saturation rate. IPv6: the cached rows
again with the client asking the modem's global address 2001:db8:1::1 from
its SLAAC address (the modem's dnsmasq before the apply, the box after), and
the box's uncached row, each right after the same server's IPv4 row and
against it.

When queries through the box time out in a latency run, or the run through the box fails, the
bench prints the box's health transitions and the tails of its DNS server's, watchdog's and modem
watch's logs before the lab goes.

This server runs with its query log on and the per-client limits raised
so one benchmarking client is not limited: the rate limit (`per_client_qps`
1e8, burst 1e6) and the new fake-IP mappings a client may cause
(`fake_ip.new_per_client` 0: none; at its default of 20 a second, burst
500, "fake new" past the burst measured the real answers the limit gives,
i.e. forwarding). Everything else is the default, `workers` included (one
process per CPU), and the pool's 65,536 mappings: a run of new names past
that recycles one mapping per name, as a home would at that point. `--compare-root DIR` also runs the loopback rows of this server
from another checkout (e.g. `git worktree add /tmp/main main`), same run,
same conditions, rows marked "before". `--server-root DIR` runs only that
checkout's server.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NS = f"dnsbench-{os.getpid()}-{random.randint(0, 0xffff):04x}"
AUTH, AUTH0, OURS, OURS0, DNSMASQ, UNBOUND, BEFORE, BEFORE0 = 5300, 5310, 5301, 5311, 5302, 5303, 5304, 5314
OURS_RX = 5321  # this server with REGEX_RULES regex rules
REGEX_RULES = 100
NAMES = 200
UNIQUE = 600_000  # never-seen names per list: more than any run asks
HIGH_LIMIT = "{per_client_qps: 100000000, burst: 1000000}"


def dnsperf_argv(ns: str | None, server: str, port: int, data: Path, *extra: object) -> list[str]:
    argv = ["dnsperf", "-s", server, "-p", str(port), "-d", str(data), *map(str, extra)]
    return ["ip", "netns", "exec", ns, *argv] if ns else argv


def dnsperf(ns: str | None, server: str, port: int, data: Path, *extra: object,
            timeout: float = 180) -> str:
    result = subprocess.run(dnsperf_argv(ns, server, port, data, *extra), capture_output=True,
                            text=True, timeout=timeout)
    return result.stdout + result.stderr


# dnsperf's threads for the saturation runs: one per CPU. With its default of one, dnsperf itself
# was the limit for the fastest server: the box's kernel cache answered 89k q/s with 23% of the
# CPUs idle, and 118k with two threads (the modem's dnsmasq, bound by its own one thread: 42k and 46k).
CLIENT_THREADS = os.cpu_count() or 1


def throughput(ns, server, port, data, seconds) -> dict:
    out = dnsperf(ns, server, port, data, "-l", seconds, "-q", 64, "-c", 4, "-T", CLIENT_THREADS)
    try:
        return {"qps": float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1)),
                "lost": int(re.search(r"Queries lost:\s+(\d+)", out).group(1)),
                "avg_ms": float(re.search(r"Average Latency \(s\):\s+([\d.]+)", out).group(1)) * 1000,
                "sent": int(re.search(r"Queries sent:\s+(\d+)", out).group(1))}
    except AttributeError:
        raise RuntimeError(f"dnsperf said:\n{out}") from None


def latency(ns, server, port, data, rate, seconds) -> dict:
    out = dnsperf(ns, server, port, data, "-l", seconds, "-Q", rate, "-v")
    samples = []
    timeouts = 0
    for line in out.splitlines():
        if line.startswith("> "):
            try:
                samples.append(float(line.split()[-1]))
            except ValueError:  # "> T ...": timed out, counted as dnsperf's 5 s timeout
                samples.append(5.0)
                timeouts += 1
    samples.sort()
    if not samples:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "p999_ms": float("nan"), "timeouts": 0}

    def ms_at(share: float) -> float:
        return samples[max(0, int(len(samples) * share) - 1)] * 1000

    return {"p50_ms": statistics.median(samples) * 1000, "p99_ms": ms_at(0.99), "p999_ms": ms_at(0.999),
            "timeouts": timeouts}


class Names:
    """Query files: a fixed set asked again and again, or never-seen names (each used once)."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.count = 0

    def fixed(self, names: list[str]) -> Path:
        self.count += 1
        path = self.tmp / f"q{self.count}.txt"
        path.write_text("".join(f"{n} A\n" for n in names))
        return path

    def unique(self, pattern: str, count: int = UNIQUE) -> Path:
        # A random tag: a second list of the same pattern never repeats a name of the first.
        tag = f"{random.getrandbits(32):08x}"
        return self.fixed([pattern.format(f"{tag}-{i}") for i in range(count)])


def row(rows, label, baseline, ns, server, port, sat, lat, rate, seconds, lat_seconds) -> dict:
    r = {"label": label, "baseline": baseline, "rate": rate}
    r.update(throughput(ns, server, port, sat, seconds))
    r.update(latency(ns, server, port, lat, rate, lat_seconds))
    rows.append(r)
    print(f"  {label}: {r['qps']:.0f} q/s", file=sys.stderr, flush=True)
    return r


def wait_answer(port: int, name: str, ns: str = NS, server: str = "127.0.0.1") -> None:
    for _ in range(150):
        r = subprocess.run(["ip", "netns", "exec", ns, "dig", "-p", str(port), f"@{server}", name,
                            "+short", "+time=1", "+tries=1"], capture_output=True, text=True)
        if r.stdout.strip():
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing answers on {server} port {port}")


def our_config(tmp: Path, name: str, port: int, upstream: int, workers: bool, regexes: int = 0) -> Path:
    path = tmp / f"{name}.yaml"
    # Shaped like AdBlock lists' regex lines; no bench name matches one.
    extra = "".join(f'\n  - {{match: regex, value: "^banner{i}[a-z0-9-]*\\\\.(ads|track)[0-9]*\\\\.", '
                    f'then: {{action: block}}}}' for i in range(regexes))
    path.write_text(f"""listen: ["127.0.0.1:{port}", "[::1]:{port}"]
allow_clients: ["127.0.0.0/8", "::1/128"]
upstreams: [{{url: "udp://127.0.0.1:{upstream}"}}]
control_socket: null
rate_limit: {HIGH_LIMIT}
fake_ip: {{db_path: "{tmp}/{name}-fakeip.sqlite3", new_per_client: 0}}
rules:
  - {{match: suffix, value: fake.bench.test, then: {{action: fake-ip, route: direct}}}}{extra}
""")
    return path


def start_ours(tmp, procs, name, root, port, upstream, regexes: int = 0) -> subprocess.Popen:
    conf = our_config(tmp, name, port, upstream, root == ROOT, regexes)
    proc = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-m", "appliance.services.dns",
                             "--config", str(conf), "--log-level", "WARNING"],
                            cwd=root, stdout=subprocess.PIPE, text=True)
    procs.append(proc)
    if not proc.stdout.readline().startswith("ready"):
        raise RuntimeError(f"the DNS server from {root} did not start")
    return proc


def loopback(args, tmp: Path, names: Names, rows: list) -> None:
    procs: list[subprocess.Popen] = []
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up"], check=True)
        records = [f"--host-record=n{i}.bench.test,198.51.100.{i % 250 + 1}" for i in range(NAMES)]
        records += [f"--host-record=f{i}.fake.bench.test,198.51.100.{i % 250 + 1}" for i in range(NAMES)]
        common = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                  "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1", "--user=root"]
        ns = ["ip", "netns", "exec", NS]
        procs.append(subprocess.Popen(ns + common + [
            f"--port={AUTH}", "--local=/bench.test/", "--address=/fwd.test/198.51.100.7",
            "--local-ttl=3600", f"--pid-file={tmp}/auth.pid", *records]))
        procs.append(subprocess.Popen(ns + common + [
            f"--port={AUTH0}", "--address=/fwd0.test/198.51.100.8", "--local-ttl=0",
            f"--pid-file={tmp}/auth0.pid"]))
        procs.append(subprocess.Popen(ns + common + [
            f"--port={DNSMASQ}", f"--server=127.0.0.1#{AUTH}", f"--server=/fwd0.test/127.0.0.1#{AUTH0}",
            "--cache-size=10000", f"--pid-file={tmp}/dnsmasq.pid"]))
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
forward-zone:
  name: "fwd.test."
  forward-addr: 127.0.0.1@{AUTH}
forward-zone:
  name: "fwd0.test."
  forward-addr: 127.0.0.1@{AUTH0}
""")
        procs.append(subprocess.Popen(ns + ["unbound", "-d", "-c", str(tmp / "unbound.conf")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        ours = start_ours(tmp, procs, "ours", args.server_root, OURS, AUTH)
        start_ours(tmp, procs, "ours0", args.server_root, OURS0, AUTH0)
        start_ours(tmp, procs, "oursrx", args.server_root, OURS_RX, AUTH, REGEX_RULES)
        servers = [("this server", OURS, OURS0), ("dnsmasq", DNSMASQ, DNSMASQ), ("unbound", UNBOUND, UNBOUND)]
        if args.compare_root:
            start_ours(tmp, procs, "before", args.compare_root, BEFORE, AUTH)
            start_ours(tmp, procs, "before0", args.compare_root, BEFORE0, AUTH0)
            servers.insert(1, ("before", BEFORE, BEFORE0))
        for port in (AUTH, DNSMASQ, UNBOUND, OURS) + ((BEFORE,) if args.compare_root else ()):
            wait_answer(port, "n1.bench.test")
        cached = names.fixed([f"n{i}.bench.test" for i in range(NAMES)])
        fake = names.fixed([f"f{i}.fake.bench.test" for i in range(NAMES)])
        for _, port, _ in servers:
            dnsperf(NS, "127.0.0.1", port, cached, "-n", 2)  # warm-up: every answer now cached
        for label, port, _ in servers[:2 if args.compare_root else 1]:
            dnsperf(NS, "127.0.0.1", port, fake, "-n", 2)
        s, ls, rate = args.seconds, min(args.seconds, 5), args.rate
        print("loopback:", file=sys.stderr)
        base = "dnsmasq"

        def ipv6_twin(v4: dict, port: int, sat: Path, lat: Path) -> None:
            """The same workload over ::1, measured right after its IPv4 row (the same moment
            of a shared machine), against it."""
            if not args.no_ipv6:
                workload, server = v4["label"].split(": ", 1)
                r = row(rows, f"{workload} over IPv6: {server}", v4["label"], NS, "::1", port,
                        sat, lat, rate, s, ls)
                r["base_qps"] = v4["qps"]

        for label, port, _ in servers:
            r = row(rows, f"loopback cached: {label}", base, NS, "127.0.0.1", port, cached, cached, rate, s, ls)
            if label == "this server":
                ipv6_twin(r, port, cached, cached)
        for label, _, port in servers:
            r = row(rows, f"loopback forwarded (TTL 0): {label}", base, NS, "127.0.0.1", port,
                    names.unique("u{}.fwd0.test"), names.unique("u{}.fwd0.test", int(rate * ls) + 1000),
                    rate, s, ls)
            if label == "this server":
                ipv6_twin(r, port, names.unique("w{}.fwd0.test"),
                          names.unique("w{}.fwd0.test", int(rate * ls) + 1000))
        for label, port, _ in servers:
            r = row(rows, f"loopback never-seen (TTL 3600): {label}", base, NS, "127.0.0.1", port,
                    names.unique("v{}.fwd.test"), names.unique("v{}.fwd.test", int(rate * ls) + 1000), rate, s, ls)
            if label == "this server":
                row(rows, f"loopback never-seen, {REGEX_RULES} regex rules: {label}", r["label"], NS,
                    "127.0.0.1", OURS_RX, names.unique("x{}.fwd.test"),
                    names.unique("x{}.fwd.test", int(rate * ls) + 1000), rate, s, ls)["base_qps"] = r["qps"]
        for label, port, _ in servers[:2 if args.compare_root else 1]:
            r = row(rows, f"loopback fake known: {label}", base, NS, "127.0.0.1", port, fake, fake, rate, s, ls)
            if label == "this server":
                ipv6_twin(r, port, fake, fake)
            row(rows, f"loopback fake new: {label}", base, NS, "127.0.0.1", port,
                names.unique("t{}.fake.bench.test"),
                names.unique("t{}.fake.bench.test", int(args.new_rate * ls) + 1000), args.new_rate, s, ls)
        ours.terminate()  # a clean stop: the fake-IP store gets every mapping
        ours.wait(30)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


@contextlib.contextmanager
def box_accounted(box, rows: list):
    """Around the rows through the box: when some had queries time out, or the run failed (the
    box never answered after an apply...), what the box said meanwhile (its health transitions,
    the DNS server's, the watchdog's and the modem watch's logs), printed before the lab and its
    files go."""
    try:
        yield
    except Exception as exc:
        print(f"  the run through the box failed: {exc}", file=sys.stderr)
        _print_box_logs(box)
        raise
    failed = [r for r in rows if "the box" in r["label"] and r.get("timeouts")]
    for r in failed:
        print(f"  {r['label']}: {r['timeouts']} queries of its latency run timed out", file=sys.stderr)
    if failed:
        _print_box_logs(box)


def _print_box_logs(box) -> None:
    layout = box.layout
    for path in (layout.health_events, f"{layout.services_dir}/dns.stderr",
                 f"{layout.services_dir}/watchdog.stderr", f"{layout.services_dir}/modem-watch.stderr"):
        try:
            tail = Path(path).read_text(errors="replace").splitlines()[-20:]
        except OSError as exc:
            tail = [f"(not read: {exc})"]
        print(f"  --- {path}", *("    " + line for line in tail), sep="\n", file=sys.stderr)


# New fake-IP names a second while the known ones are measured with the pool full: each recycles
# the least recently used address (a home's steady state once its pool has filled).
TRICKLE = 50


def fill_fake_pool(box, client: str, gw: str, names: Names) -> None:
    """Ask new fake-IP names until the box's pool is full (the fake new rows may have done it)."""
    from appliance.services.dns.control import DnsControl

    with DnsControl(f"{box.layout.run_dir}/dns.sock") as c:
        stats = c.call("stats")
    missing = stats["fake_ip_capacity"] - stats["fake_ip_entries"]
    if missing > 0:
        dnsperf(client, gw, 53, names.unique("p{}.proxied.test", missing + 1000), "-n", 1, "-Q", 5000,
                timeout=missing / 2000 + 60)


@contextlib.contextmanager
def arriving(client: str, gw: str, data: Path, seconds: float):
    """New names asked at TRICKLE a second in the background for `seconds`."""
    proc = subprocess.Popen(dnsperf_argv(client, gw, 53, data, "-Q", TRICKLE, "-l", seconds),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        yield
    finally:
        proc.terminate()
        proc.wait()


def lab_rows(args, tmp: Path, names: Names, rows: list) -> None:
    from appliance.box.settings import parse_settings
    from appliance.lab import topology
    from tests.support.boxlab import box_in_lab, settings_data

    dns = {"upstreams": [{"url": "udp://192.168.1.1"}],
           "rate_limit": {"per_client_qps": 100000000, "burst": 1000000},
           "fake_ip": {"new_per_client": 0},
           "rules": [{"match": "suffix", "value": "proxied.test",
                      "then": {"action": "fake-ip", "route": "direct"}}]}
    sites = [*topology.SITES, *topology.ZONES]
    cached = names.fixed(sites * 20)
    fake = names.fixed([f"k{i}.proxied.test" for i in range(NAMES)])
    s, ls = args.seconds, min(args.seconds, 5)
    with box_in_lab(tmp / "box", "b", clients=1) as (lab, box), box_accounted(box, rows):
        client = lab.spec.client(1)
        lab.dhcp(client)
        gw = "192.168.1.1"
        wait_answer(53, "www.example.test", client, gw)
        print("lab, the modem answers:", file=sys.stderr)
        dnsperf(client, gw, 53, cached, "-n", 2)
        modem_sat = throughput(client, gw, 53, cached, s)
        half = max(1000, int(modem_sat["qps"] / 2))
        base = "the modem's dnsmasq"
        modem = row(rows, "lab cached: the modem's dnsmasq", base, client, gw, 53, cached, cached, half, s, ls)
        gw6 = topology.MODEM_LAN6_IP
        if not args.no_ipv6:
            # The modem's own dnsmasq over IPv6 too (what the home gets without the box), right
            # after the same workload over IPv4, against it.
            lab.slaac(client)
            wait_answer(53, "www.example.test", client, gw6)
            row(rows, "lab cached over IPv6: the modem's dnsmasq", modem["label"], client, gw6, 53,
                cached, cached, half, s, ls)["base_qps"] = modem["qps"]
        if not args.cached_only:
            modem_unc = row(rows, "lab uncached: the modem's dnsmasq", base, client, gw, 53,
                            names.unique("q{}.example.test"),
                            names.unique("q{}.example.test", int(args.rate * ls) + 1000), args.rate, s, ls)
        result = box.apply(parse_settings(settings_data(dns=dns)))
        if not result.ok:
            raise RuntimeError(f"the box did not apply: {result.error}")
        wait_answer(53, "www.example.test", client, gw)
        print("lab, the box answers:", file=sys.stderr)
        dnsperf(client, gw, 53, cached, "-n", 2)
        dnsperf(client, gw, 53, fake, "-n", 2)
        v4 = row(rows, "lab cached: the box, kernel cache on", base, client, gw, 53, cached, cached,
                 half, s, ls)
        # The same box with dns.kernel_cache off: every cached answer from the server itself.
        result = box.apply(parse_settings(settings_data(dns={**dns, "kernel_cache": "off"})))
        if not result.ok:
            raise RuntimeError(f"the box did not apply: {result.error}")
        wait_answer(53, "www.example.test", client, gw)
        dnsperf(client, gw, 53, cached, "-n", 2)
        row(rows, "lab cached: the box, kernel cache off", base, client, gw, 53, cached, cached, half, s, ls)
        result = box.apply(parse_settings(settings_data(dns=dns)))
        if not result.ok:
            raise RuntimeError(f"the box did not apply: {result.error}")
        wait_answer(53, "www.example.test", client, gw)
        if not args.no_ipv6:
            # IPv6 through the box (kernel cache on again): the client asks the modem's global
            # address from its SLAAC address, against the same workload over IPv4.
            wait_answer(53, "www.example.test", client, gw6)
            dnsperf(client, gw6, 53, cached, "-n", 2)
            v6 = row(rows, "lab cached over IPv6: the box", v4["label"], client, gw6, 53,
                     cached, cached, half, s, ls)
            v6["base_qps"] = v4["qps"]
        if args.cached_only:
            for r in rows:
                if r["label"].startswith("lab") and "base_qps" not in r:
                    r["base_qps"] = modem["qps"]
            return
        v4 = row(rows, "lab uncached: the box", base, client, gw, 53, names.unique("q{}.example.test"),
                 names.unique("q{}.example.test", int(args.rate * ls) + 1000), args.rate, s, ls)
        if not args.no_ipv6:
            v6 = row(rows, "lab uncached over IPv6: the box", v4["label"], client, gw6, 53,
                     names.unique("r{}.example.test"),
                     names.unique("r{}.example.test", int(args.rate * ls) + 1000), args.rate, s, ls)
            v6["base_qps"] = v4["qps"]
        row(rows, "lab fake known: the box", base, client, gw, 53, fake, fake, args.rate, s, ls)
        row(rows, "lab fake new: the box", base, client, gw, 53, names.unique("n{}.proxied.test"),
            names.unique("n{}.proxied.test", int(args.new_rate * ls) + 1000), args.new_rate, s, ls)
        fill_fake_pool(box, client, gw, names)
        with arriving(client, gw, names.unique("t{}.proxied.test", int(TRICKLE * (s + ls + 10))), s + ls + 10):
            row(rows, f"lab fake known, pool full, {TRICKLE} new/s: the box", base, client, gw, 53,
                fake, fake, args.rate, s, ls)
        for r in rows:
            if r["label"].startswith("lab") and "base_qps" not in r:
                r["base_qps"] = (modem_unc if "uncached" in r["label"] else modem)["qps"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rate", type=int, default=5000, help="offered q/s for the latency runs")
    parser.add_argument("--new-rate", type=int, default=2000,
                        help="offered q/s for the latency runs of new fake-IP names")
    parser.add_argument("--server-root", type=Path, default=ROOT,
                        help="run this server from that checkout (default: this one)")
    parser.add_argument("--compare-root", type=Path, default=None,
                        help="also run the loopback rows of this server from that checkout")
    parser.add_argument("--no-lab", action="store_true", help="loopback rows only")
    parser.add_argument("--no-ipv6", action="store_true", help="IPv4 rows only")
    parser.add_argument("--no-loopback", action="store_true", help="lab rows only")
    parser.add_argument("--cached-only", action="store_true",
                        help="in the lab, only the cached rows (the modem, the box with its kernel"
                             " cache on and off)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/dns.py needs root (network namespaces)", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="dnsbench-"))
    rows: list[dict] = []
    try:
        names = Names(tmp)
        if not args.no_loopback:
            loopback(args, tmp, names, rows)
        if not args.no_lab:
            lab_rows(args, tmp, names, rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the name lists and stores: tens of MB
    for r in rows:
        if "base_qps" not in r:
            workload = r["label"].split(":")[0]
            base = {x["label"]: x["qps"] for x in rows}
            r["base_qps"] = base.get(f"{workload}: dnsmasq") or base.get(f"{workload}: before")
    print(f"\nDNS, one run, {os.cpu_count()} CPUs; dnsperf -q 64 -c 4 -T {CLIENT_THREADS} for {args.seconds:g}s at"
          f" saturation; latency at the -Q rate shown (lab cached: half the modem's saturation)")
    print(f"{'workload: server':52} {'queries/s':>10} {'x base':>7} {'lost':>6} {'avg ms@sat':>10} "
          f"{'at -Q':>6} {'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8}")
    for r in rows:
        ratio = f"{r['qps'] / r['base_qps']:7.2f}" if r["base_qps"] else "      -"
        print(f"{r['label']:52} {r['qps']:10.0f} {ratio} {r['lost']:6d} "
              f"{r['avg_ms']:10.2f} {r['rate']:6d} {r['p50_ms']:7.3f} {r['p99_ms']:7.3f} {r['p999_ms']:8.3f}")
    print("x base: against dnsmasq on loopback (fake-IP rows: against the --compare-root server),"
          " against the modem's dnsmasq in the lab; same workload; IPv6 rows: against the same"
          " server's IPv4 row; regex rules: against the same server's never-seen row without them")
    extra = "" if args.server_root == ROOT else f" --server-root {args.server_root}"
    extra += f" --compare-root {args.compare_root}" if args.compare_root else ""
    extra += " --no-lab" if args.no_lab else ""
    extra += " --no-ipv6" if args.no_ipv6 else ""
    extra += " --no-loopback" if args.no_loopback else ""
    extra += " --cached-only" if args.cached_only else ""
    print(f"\nreproduce: sudo .venv/bin/python bench/dns.py --seconds {args.seconds:g} "
          f"--rate {args.rate} --new-rate {args.new_rate}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
