#!/usr/bin/env python3
"""Forwarding speed of the compiled datapath against a Linux bridge and OVS.

64-byte UDP frames from `trafgen -P 2` in the client namespace (behind the
box's downlink port) through the box to a sink namespace, where an nftables
netdev-ingress rule counts and drops them.  Both sinks do the same work per
frame: it arrives addressed to the sink's own MAC (admin's in (a), (b),
(d); vproxy's after the rewrite in (c)) and is dropped at ingress, before
any protocol handler.  For:

  (a) a plain Linux bridge (bridge-nf-call-* off), traffic to admin
  (b) the compiled datapath with the seed's flows, same traffic (NORMAL)
  (c) the same, DNS to the gateway: steered to vproxy with a MAC rewrite
  (d) Open vSwitch userspace (datapath_type=netdev), the seed's flows, as (b)
  (e) (b) attached with tc clsact instead of tcx links (only where the
      kernel has tcx: the fallback for kernels before 6.6, side by side)
  (b6), (c6) IPv6 beside (b) and (c), in the same rounds: 62-byte UDP6
      frames (14 + 40 + 8, no payload) to admin (NORMAL), and DNS to the
      modem's IPv6 address steered to vproxy by the IPv6 twin of the seed's
      DNS flow.  Every row runs the seed's table as a box passing IPv6 has
      it (bench_flows: its IPv6 drop out, the IPv6 twins in)

Two figures per row, medians over `--runs` rounds in which (a), (b) and (c)
take turns, (a) first in one round and last in the next (so that the load
of a shared machine falls on all three alike):

  rx kpps   frames counted by the sink per second;
  cpu ns    CPU time per received frame of everything that forwards it:
            trafgen's processes (the softirqs that carry a frame through
            veth, bridge/tc and into the sink run in the sender's context),
            ksoftirqd, and ovs-vswitchd's threads in (d).  Other tenants'
            load changes kpps much more than this figure.

and iperf3 TCP throughput client -> admin for (a), (b), (d).

Run as root:  .venv/bin/python bench/datapath.py [--runs 5] [--seconds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # not bench/: its dns.py would shadow dnspython

from appliance.switch.bridge import seed_bridge  # noqa: E402
from appliance.switch.datapath.datapath import Datapath  # noqa: E402
from appliance.switch.flows import FlowTable  # noqa: E402
from appliance.switch.parser import parse_flows  # noqa: E402
from tests.support.dpbox import DpBox  # noqa: E402

SEED = ROOT / "tests" / "data" / "seed-flows.txt"
CLIENT_MAC = "02:00:00:00:00:50"
ADMIN_MAC = "02:00:00:00:00:08"
GW_MAC = "18:00:00:00:00:e8"
CLIENT6, ADMIN6, GW6 = "2001:db8:1::50", "2001:db8:1::8", "2001:db8:1::1"
# The seed's table as a box passing IPv6 has it (`ipv6.policy: invisible`):
# its IPv6 drop goes, and its DNS steering flows get their IPv6 twins.
SEED_IPV6_DROP = "table=0,priority=1000,ipv6,action=drop\n"
IPV6_FLOWS = f"""
table=0,priority=500,in_port=vproxy,udp6,ipv6_dst={GW6},tp_dst=53,action=output:uplink
table=0,priority=499,udp6,ipv6_dst={GW6},tp_dst=53,action=set_field:d6:00:00:00:00:bf->dl_dst,output:vproxy
"""


def bench_flows() -> str:
    text = SEED.read_text()
    assert SEED_IPV6_DROP in text
    return text.replace(SEED_IPV6_DROP, "") + IPV6_FLOWS


def trafgen_conf(dst_mac: str, dst_ip: str, dport: int) -> str:
    def mac(m):
        return ", ".join("0x" + b for b in m.split(":"))

    def ip(a):
        return ", ".join(a.split("."))
    # 14 + 20 + 8 + 18 = 60 bytes, 64 on the wire with the FCS.
    return f"""{{
  {mac(dst_mac)},
  {mac(CLIENT_MAC)},
  0x08, 0x00,
  0x45, 0x00, 0x00, 0x2e, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, csumip(14, 33),
  {ip('192.168.1.50')},
  {ip(dst_ip)},
  0x04, 0xd2, {dport >> 8:#04x}, {dport & 255:#04x}, 0x00, 0x1a, 0x00, 0x00,
  fill(0x00, 18),
}}
"""


def trafgen_conf6(dst_mac: str, dst_ip: str, dport: int) -> str:
    """The IPv6 twin of trafgen_conf: 14 + 40 + 8 = 62 bytes (the sink drops
    it at ingress, so its UDP checksum is never looked at)."""
    import ipaddress

    def mac(m):
        return ", ".join("0x" + b for b in m.split(":"))

    def ip6(a):
        return ", ".join(f"{b:#04x}" for b in ipaddress.IPv6Address(a).packed)
    return f"""{{
  {mac(dst_mac)},
  {mac(CLIENT_MAC)},
  0x86, 0xdd,
  0x60, 0x00, 0x00, 0x00, 0x00, 0x08, 0x11, 0x40,
  {ip6(CLIENT6)},
  {ip6(dst_ip)},
  0x04, 0xd2, {dport >> 8:#04x}, {dport & 255:#04x}, 0x00, 0x08, 0x00, 0x00,
}}
"""


def counter_setup(box: DpBox, port: str) -> None:
    ns = box.ns(port)
    box.exec(ns, "nft", "add", "table", "netdev", "bench")
    box.exec(ns, "nft", "add", "chain", "netdev", "bench", "in",
             "{ type filter hook ingress device eth0 priority 0; }")
    box.exec(ns, "nft", "add", "rule", "netdev", "bench", "in", "udp", "sport", "1234",
             "counter", "drop")
    # IPv6 by its Ethernet header: nft's IPv6 header checks at netdev
    # ingress let trafgen's frames by uncounted (a raw socket's same bytes
    # are counted), and nothing else sends IPv6 here.
    box.exec(ns, "nft", "add", "rule", "netdev", "bench", "in", "ether", "saddr", CLIENT_MAC,
             "ether", "type", "ip6", "counter", "drop")


def counter_read(box: DpBox, port: str) -> int:
    out = box.exec(box.ns(port), "nft", "-j", "list", "chain", "netdev", "bench", "in").stdout
    total = 0
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if rule:
            for e in rule["expr"]:
                if "counter" in e:
                    total += e["counter"]["packets"]
    return total


def _runtime_ns(pid: int) -> int:
    """CPU time of every thread of `pid` so far (0 once it is gone)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[0])
    except (OSError, ValueError):
        pass
    return total


def _pids(comm: str, pgid: int | None = None) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/comm") as fh:
                if not fh.read().strip().startswith(comm):
                    continue
            if pgid is not None and os.getpgid(int(p)) != pgid:
                continue
        except OSError:
            continue
        out.append(int(p))
    return out


class Trafgen:
    """trafgen -P 2 in its own process group.

    trafgen's parent forks one worker per CPU and, on SIGINT, only sets a
    flag for itself: the workers stop on SIGINT of their own (as Ctrl-C
    sends to the whole group).  Signalling the parent alone leaves the
    workers sending for ever, which is how earlier runs of this bench
    measured (c) against a dozen leftover senders of (a)/(b) traffic."""

    def __init__(self, box: DpBox, conf: str):
        fd, self.path = tempfile.mkstemp(suffix=".cfg")
        with os.fdopen(fd, "w") as fh:
            fh.write(conf)
        self.proc = subprocess.Popen(["ip", "netns", "exec", box.ns("downlink"), "trafgen", "-i", self.path,
                                      "-o", "eth0", "-P", "2", "-q"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)

    def pids(self) -> list[int]:
        return _pids("trafgen", self.proc.pid)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)   # whatever is left of the group
        except ProcessLookupError:
            pass
        self.proc.wait()
        for _ in range(50):
            if not self.pids():
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"trafgen workers still running: {self.pids()}")
        os.unlink(self.path)


def pps(box: DpBox, conf: str, sink: str, seconds: float,
        forwarders: tuple[int, ...] = ()) -> tuple[float, float]:
    """(received frames per second, CPU ns per received frame)."""
    tg = Trafgen(box, conf)
    try:
        time.sleep(1.0)   # warm up
        pids = tg.pids() + _pids("ksoftirqd") + list(forwarders)
        r0, c0, t0 = sum(map(_runtime_ns, pids)), counter_read(box, sink), time.monotonic()
        time.sleep(seconds)
        r1, c1, t1 = sum(map(_runtime_ns, pids)), counter_read(box, sink), time.monotonic()
    finally:
        tg.stop()
    return (c1 - c0) / (t1 - t0), (r1 - r0) / max(1, c1 - c0)


def iperf(box: DpBox, seconds: int) -> float:
    srv = subprocess.Popen(["ip", "netns", "exec", box.ns("admin"), "iperf3", "-s", "-1", "-B", "192.168.1.8"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        out = box.exec(box.ns("downlink"), "iperf3", "-J", "-c", "192.168.1.8", "-t", str(seconds),
                       check=False).stdout
        try:
            return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9
        except (ValueError, KeyError):
            return float("nan")   # no connection: shown as nan
    finally:
        srv.kill()
        srv.wait()


class OvsNetdev:
    """ovs-vswitchd with a userspace (netdev) bridge over the box's ports."""

    def __init__(self, box: DpBox):
        self.box = box
        self.dir = tempfile.mkdtemp(prefix=f"ovs-bench-{os.getpid()}-")
        self.env = dict(os.environ, OVS_RUNDIR=self.dir, OVS_LOGDIR=self.dir,
                        OVS_DBDIR=self.dir, OVS_SYSCONFDIR=self.dir)

    def run(self, *argv):
        return subprocess.run(["ip", "netns", "exec", self.box.box, *argv], env=self.env,
                              check=True, capture_output=True, text=True)

    def vsctl(self, *args):
        return self.run("ovs-vsctl", f"--db=unix:{self.dir}/db.sock", "--timeout=30", *args)

    def start(self, ports: dict[str, int], flows_text: str) -> None:
        d = self.dir
        self.run("ovsdb-tool", "create", f"{d}/conf.db", "/usr/share/openvswitch/vswitch.ovsschema")
        self.run("ovsdb-server", f"{d}/conf.db", f"--remote=punix:{d}/db.sock",
                 f"--pidfile={d}/ovsdb.pid", f"--unixctl={d}/ovsdb.ctl",
                 f"--log-file={d}/ovsdb.log", "--detach", "--no-chdir")
        self.vsctl("--no-wait", "init")
        self.run("ovs-vswitchd", f"unix:{d}/db.sock", f"--pidfile={d}/vswitchd.pid",
                 f"--unixctl={d}/vswitchd.ctl", f"--log-file={d}/vswitchd.log",
                 "--detach", "--no-chdir")
        args = ["add-br", "ovsbr", "--", "set", "bridge", "ovsbr", "datapath_type=netdev",
                "fail-mode=secure"]
        for name, num in ports.items():
            args += ["--", "add-port", "ovsbr", name, "--", "set", "Interface", name,
                     f"ofport_request={num}"]
        self.vsctl(*args)
        with tempfile.NamedTemporaryFile("w", delete=False, dir=d) as fh:
            fh.write(flows_text)
        self.run("ovs-ofctl", "del-flows", f"unix:{d}/ovsbr.mgmt")
        self.run("ovs-ofctl", "add-flows", f"unix:{d}/ovsbr.mgmt", fh.name)

    def pid(self) -> int:
        return int(Path(self.dir, "vswitchd.pid").read_text())

    def stop(self) -> None:
        for name in ("vswitchd", "ovsdb"):
            try:
                pid = int(Path(self.dir, f"{name}.pid").read_text())
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.05)
                os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


def loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--iperf-seconds", type=int, default=4)
    ap.add_argument("--no-peer", action="store_true",
                    help="bpf_redirect to the box-side veth instead of bpf_redirect_peer")
    opts = ap.parse_args()

    box = DpBox()
    pin_root = f"/sys/fs/bpf/dpbench{os.getpid()}"
    state = tempfile.TemporaryDirectory()
    dp = Datapath("br0", netns=box.box, pin_root=pin_root, state_dir=state.name, local_device="br0",
                  peer_redirect=not opts.no_peer)
    ovs = None
    with_tc_row = dp.tc.tcx_supported()
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in "abcde" if k != "e" or with_tc_row}
    runs.update({"b6": [], "c6": []})
    tcp: dict[str, list[float]] = {k: [] for k in "abd"}
    normal = trafgen_conf(ADMIN_MAC, "192.168.1.8", 9999)
    steer = trafgen_conf(GW_MAC, "192.168.1.1", 53)
    normal6 = trafgen_conf6(ADMIN_MAC, ADMIN6, 9999)
    steer6 = trafgen_conf6(GW_MAC, GW6, 53)
    load = [loadavg()]
    started = time.monotonic()
    try:
        for port in ("admin", "vproxy"):
            counter_setup(box, port)
        box.neigh("downlink", "192.168.1.8", ADMIN_MAC)
        box.neigh("admin", "192.168.1.50", CLIENT_MAC)

        def learn():
            # Let the learning switch (Linux bridge or OVS) know where admin is.
            box.exec(box.ns("admin"), "python3", "-c",
                     "import socket;s=socket.socket(2,2);[s.sendto(b'x',('192.168.1.50',9)) for _ in range(3)]")

        def measure(row, conf, sink, forwarders=()):
            learn()
            runs[row].append(pps(box, conf, sink, opts.seconds, forwarders))

        br = seed_bridge()
        br.flows = FlowTable(parse_flows(bench_flows(), br.port_map))
        # (a), (b), (c) take turns, so a burst of load elsewhere on the
        # machine does not fall on one row only; every other round starts
        # with the datapath, so neither comes first each time.
        def bridge_row():
            measure("a", normal, "admin")
            tcp["a"].append(iperf(box, opts.iperf_seconds))

        def datapath_rows():
            hooks.add(dp.apply(br).hook)
            measure("b", normal, "admin")
            measure("c", steer, "vproxy")
            measure("b6", normal6, "admin")
            measure("c6", steer6, "vproxy")
            tcp["b"].append(iperf(box, opts.iperf_seconds))
            dp.detach()
            if with_tc_row:
                dp.tc.tcx = False  # as on a kernel without tcx
                try:
                    assert dp.apply(br).hook == "tc"
                    measure("e", normal, "admin")
                    dp.detach()
                finally:
                    dp.tc.tcx = None

        hooks: set[str] = set()
        for i in range(opts.runs):
            for step in ((bridge_row, datapath_rows) if i % 2 == 0 else (datapath_rows, bridge_row)):
                step()
        # (d): the same ports, now under Open vSwitch's userspace datapath.
        for port in box.ports:
            box.exec(box.box, "ip", "link", "set", port, "nomaster")
        # OVS userspace reads and writes the veths with AF_PACKET and does
        # not complete partial checksums: with TX checksum offload on, the
        # senders' TCP segments reach admin with bad checksums
        # (TcpInCsumErrors) and iperf3 never connects.  Offloads off at the
        # senders, as OVS's documentation asks for netdev on veth.
        for port in ("downlink", "admin"):
            box.exec(box.ns(port), "ethtool", "-K", "eth0", "tx", "off", "tso", "off", check=False)
        ovs = OvsNetdev(box)
        ovs.start(br.ports, bench_flows())
        time.sleep(1)
        for _ in range(opts.runs):
            measure("d", normal, "admin", (ovs.pid(),))
            tcp["d"].append(iperf(box, opts.iperf_seconds))
    finally:
        if ovs:
            ovs.stop()
        try:
            dp.detach()
        except Exception:
            pass
        box.close()
        state.cleanup()
        try:
            os.rmdir(pin_root)
        except OSError:
            pass
        load.append(loadavg())

    med = {k: (statistics.median(p for p, _ in v), statistics.median(c for _, c in v))
           for k, v in runs.items()}
    gbps = {k: statistics.median(v) for k, v in tcp.items()}
    a, d = med["a"], med["d"]
    names = {"a": "(a) Linux bridge", "b": "(b) compiled, seed flows, NORMAL",
             "c": "(c) compiled, steered to vproxy + MAC rewrite",
             "d": "(d) OVS 3.1 userspace (netdev), seed flows",
             "e": "(e) = (b) attached with tc instead of tcx",
             "b6": "(b6) = (b) with IPv6 (UDP6 to admin)",
             "c6": "(c6) = (c) with IPv6 (DNS to the modem's IPv6)"}
    twin = {"b6": "b", "c6": "c"}
    print(f"{'row':<47} {'rx kpps':>8} {'/(a)':>5} {'/(d)':>6} {'cpu ns':>7} {'(a)/':>5}"
          f" {'TCP Gbit/s':>10} {'/(a)':>5} {'/(d)':>5}   each run: kpps/cpu ns")
    for k in (k for k in runs if k not in twin):
        p, c = med[k]
        line = (f"{names[k]:<47} {p / 1e3:>8.0f} {p / a[0]:>5.2f} {p / d[0]:>6.2f}"
                f" {c:>7.0f} {a[1] / c:>5.2f}")
        if k in gbps:
            line += f" {gbps[k]:>10.2f} {gbps[k] / gbps['a']:>5.2f} {gbps[k] / gbps['d']:>5.2f}"
        else:
            line += " " * 23
        line += "   " + " ".join(f"{r / 1e3:.0f}/{c:.0f}" for r, c in runs[k])
        print(line)
    print(f"\n{'IPv6 beside IPv4, same rounds':<47} {'rx kpps':>8} {'/IPv4':>6} {'cpu ns':>7} {'IPv4/':>6}"
          "   each run: kpps/cpu ns")
    for k, v4 in twin.items():
        (p, c), (p4, c4) = med[k], med[v4]
        print(f"{names[k]:<47} {p / 1e3:>8.0f} {p / p4:>6.2f} {c:>7.0f} {c4 / c:>6.2f}   "
              + " ".join(f"{r / 1e3:.0f}/{cc:.0f}" for r, cc in runs[k]))
    print(f"\n64-byte UDP from trafgen -P 2, median of {opts.runs} x {opts.seconds:.0f} s, (a)/(b)/(c) in turns; "
          f"iperf3 {opts.iperf_seconds} s, median of {opts.runs}.\n"
          "cpu ns: CPU time of trafgen, ksoftirqd (and ovs-vswitchd in (d)) per received frame; "
          "(a)/ = (a)'s cpu ns over the row's: the speed ratio on an idle machine; "
          "/IPv4 and IPv4/ compare (b6), (c6) with (b), (c) the same way.\n"
          f"load average before: {load[0]}, after: {load[1]} ({time.monotonic() - started:.0f} s, "
          f"{os.cpu_count()} CPUs); (b)/(c) attached with {'/'.join(sorted(hooks))}\n"
          f"command: .venv/bin/python bench/datapath.py --runs {opts.runs} --seconds {opts.seconds:g}"
          + (" --no-peer" if opts.no_peer else ""))


if __name__ == "__main__":
    main()
