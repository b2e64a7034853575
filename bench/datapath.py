#!/usr/bin/env python3
"""Forwarding speed of the compiled datapath against a Linux bridge and OVS.

64-byte UDP frames from `trafgen -P 2` in the client namespace (behind the
box's downlink port) through the box to a sink namespace, where an nftables
netdev-ingress rule counts and drops them.  Received packets per second,
median of 3 runs, for:

  (a) a plain Linux bridge (bridge-nf-call-* off), traffic to admin
  (b) the compiled datapath with the seed's flows, same traffic (NORMAL)
  (c) the same, DNS to the gateway: steered to vproxy with a MAC rewrite
  (d) Open vSwitch userspace (datapath_type=netdev), the seed's flows, as (b)

and iperf3 TCP throughput client -> admin for (a), (b), (d).  All rows in
one run, ratios against (a) and (d).

Run as root:  .venv/bin/python bench/datapath.py [--seconds 3]
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


def counter_setup(box: DpBox, port: str) -> None:
    ns = box.ns(port)
    box.exec(ns, "nft", "add", "table", "netdev", "bench")
    box.exec(ns, "nft", "add", "chain", "netdev", "bench", "in",
             "{ type filter hook ingress device eth0 priority 0; }")
    box.exec(ns, "nft", "add", "rule", "netdev", "bench", "in", "udp", "sport", "1234",
             "counter", "drop")


def counter_read(box: DpBox, port: str) -> int:
    out = box.exec(box.ns(port), "nft", "-j", "list", "chain", "netdev", "bench", "in").stdout
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if rule:
            for e in rule["expr"]:
                if "counter" in e:
                    return e["counter"]["packets"]
    return 0


def pps(box: DpBox, conf: str, sink: str, seconds: float) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as fh:
        fh.write(conf)
    try:
        proc = subprocess.Popen(["ip", "netns", "exec", box.ns("downlink"), "trafgen", "-i", fh.name,
                                 "-o", "eth0", "-P", "2", "-q"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1.0)   # warm up
            c0, t0 = counter_read(box, sink), time.monotonic()
            time.sleep(seconds)
            c1, t1 = counter_read(box, sink), time.monotonic()
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return (c1 - c0) / (t1 - t0)
    finally:
        os.unlink(fh.name)


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
    results: dict[str, dict] = {}
    normal = trafgen_conf(ADMIN_MAC, "192.168.1.8", 9999)
    steer = trafgen_conf(GW_MAC, "192.168.1.1", 53)
    try:
        for port in ("admin", "vproxy"):
            counter_setup(box, port)
        box.neigh("downlink", "192.168.1.8", ADMIN_MAC)
        box.neigh("admin", "192.168.1.50", CLIENT_MAC)

        def learn():
            # Let the learning switch (Linux bridge or OVS) know where admin is.
            box.exec(box.ns("admin"), "python3", "-c",
                     "import socket;s=socket.socket(2,2);[s.sendto(b'x',('192.168.1.50',9)) for _ in range(3)]")

        def measure(row, conf, sink, tcp):
            learn()
            results[row] = {"pps": statistics.median(pps(box, conf, sink, opts.seconds)
                                                     for _ in range(opts.runs))}
            if tcp:
                results[row]["gbps"] = iperf(box, opts.iperf_seconds)

        measure("a", normal, "admin", True)
        br = seed_bridge()
        br.flows = FlowTable(parse_flows(SEED.read_text(), br.port_map))
        dp.apply(br)
        measure("b", normal, "admin", True)
        measure("c", steer, "vproxy", False)
        dp.detach()
        # (d): the same ports, now under Open vSwitch's userspace datapath.
        for port in box.ports:
            box.exec(box.box, "ip", "link", "set", port, "nomaster")
        # OVS userspace reads and writes the veths with AF_PACKET and does
        # not complete partial checksums or segment TSO frames: offloads off
        # at the senders, as OVS's documentation asks for netdev on veth.
        for port in ("downlink", "admin"):
            box.exec(box.ns(port), "ethtool", "-K", "eth0", "tx", "off", "tso", "off", check=False)
        ovs = OvsNetdev(box)
        ovs.start(br.ports, SEED.read_text())
        time.sleep(1)
        measure("d", normal, "admin", True)
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

    a, d = results["a"], results["d"]
    names = {"a": "(a) Linux bridge", "b": "(b) compiled, seed flows, NORMAL",
             "c": "(c) compiled, steered to vproxy + MAC rewrite",
             "d": "(d) OVS 3.1 userspace (netdev), seed flows"}
    print(f"{'row':<48} {'rx kpps':>9} {'/(a)':>6} {'/(d)':>6} {'TCP Gbit/s':>11} {'/(a)':>6} {'/(d)':>6}")
    for k in "abcd":
        r = results[k]
        line = f"{names[k]:<48} {r['pps'] / 1e3:>9.0f} {r['pps'] / a['pps']:>6.2f} {r['pps'] / d['pps']:>6.2f}"
        if "gbps" in r:
            line += f" {r['gbps']:>11.2f} {r['gbps'] / a['gbps']:>6.2f} {r['gbps'] / d['gbps']:>6.2f}"
        print(line)
    print(f"\n64-byte UDP from trafgen -P 2, median of {opts.runs} x {opts.seconds:.0f} s; "
          f"iperf3 {opts.iperf_seconds} s.\ncommand: .venv/bin/python bench/datapath.py")


if __name__ == "__main__":
    main()
