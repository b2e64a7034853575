#!/usr/bin/env python3
"""DHCP speed: Kea's perfdhcp against the box's Kea, leases per second.

Two columns, measured in one run: straight to Kea (a client namespace on a
veth to netns gw) and through the box (datapath + virtual gateway). The
second column is a lab home (`appliance.lab`) with the box applied in its
box namespace; perfdhcp runs in a lab client, so every packet crosses the
compiled datapath into netns gw and back. The same run times the box's
first apply and a no-change apply. Everything runs in namespaces of its
own, removed at the end.

    sudo .venv/bin/python bench/dhcp.py [--rate 4000] [--seconds 10]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # not bench/: its dns.py would shadow dnspython

from appliance.box.plan import Layout, Observed, plan  # noqa: E402
from appliance.box.settings import default_settings  # noqa: E402
from appliance.services.dhcp.kea import KeaControl, KeaError  # noqa: E402
from appliance.services.supervisor import Supervisor  # noqa: E402

GW_MAC = "18:00:00:00:00:e8"


def ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def perfdhcp(ns: str, rate: int, seconds: int) -> dict:
    p = subprocess.run(["ip", "netns", "exec", ns, "perfdhcp", "-4", "-l", "eth0", "-r", str(rate),
                        "-R", "60000", "-p", str(seconds)], capture_output=True, text=True, timeout=seconds + 60)
    rate_m = re.search(r"Rate: ([\d.]+) 4-way exchanges/second", p.stdout)
    acks = re.search(r"Statistics for: REQUEST-ACK\*+\nsent packets: (\d+)\nreceived packets: (\d+)", p.stdout)
    if not rate_m or not acks:
        raise RuntimeError(f"perfdhcp gave no statistics:\n{p.stdout}\n{p.stderr}")
    return {"leases_per_s": float(rate_m.group(1)), "requests": int(acks.group(1)), "acks": int(acks.group(2))}


def direct(rate: int, seconds: int) -> dict:
    tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
    gw, client = f"bd{tag}g", f"bd{tag}c"
    tmp = Path(tempfile.mkdtemp(prefix="benchdhcp-", dir="/tmp"))
    # A /16 so the pool outlasts the run (perfdhcp takes a new lease per exchange).
    settings = default_settings(
        "enp5s0", "enp1s0", gateway={"ip": "10.0.0.1", "mac": GW_MAC}, lan={"prefix": "10.0.0.0/16"},
        admin={"address": "10.0.0.8"}, vproxy={"address": "10.0.0.9", "mac": "d6:00:00:00:00:bf"},
        dhcp={"pools": [{"start": "10.0.1.1", "end": "10.0.255.254"}], "lease_time": 3600})
    p = plan(settings, Observed.of({"enp5s0": "5c:00:00:00:00:7d", "enp1s0": "5c:00:00:00:00:7c"}),
             Layout(state_dir=str(tmp / "state"), run_dir=str(tmp / "run")))
    spec = dataclasses.replace(p.services[0], netns=gw)
    sup = Supervisor(tmp / "services")
    try:
        ip("netns", "add", gw)
        ip("netns", "add", client)
        ip("-n", gw, "link", "add", "gw0", "type", "veth", "peer", "name", "eth0", "netns", client)
        ip("-n", gw, "link", "set", "gw0", "address", GW_MAC)
        ip("-n", gw, "addr", "add", "10.0.0.1/16", "dev", "gw0")
        ip("-n", client, "addr", "add", "10.0.0.250/16", "dev", "eth0")  # perfdhcp relays from it
        for ns, dev in ((gw, "gw0"), (gw, "lo"), (client, "eth0"), (client, "lo")):
            ip("-n", ns, "link", "set", dev, "up")
        for d in p.directories:
            Path(d).mkdir(parents=True, exist_ok=True)
        for f in p.files:
            Path(f.path).write_text(f.content)
        sup.start(spec)
        control = KeaControl(tmp / "run" / "dhcp" / "kea4.sock")
        for _ in range(200):
            try:
                control.status()
                break
            except KeaError:
                time.sleep(0.05)
        return perfdhcp(client, rate, seconds)
    finally:
        sup.stop(spec.name)
        for ns in (gw, client):
            for pid in ip("netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            ip("netns", "del", ns, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def bench_settings(**kw):
    # A /16 so the pool outlasts the run (perfdhcp takes a new lease per exchange).
    return default_settings(
        "enp5s0", "enp1s0", gateway={"ip": "10.0.0.1", "mac": GW_MAC}, lan={"prefix": "10.0.0.0/16"},
        admin={"address": "10.0.0.8"}, vproxy={"address": "10.0.0.9", "mac": "d6:00:00:00:00:bf"},
        dhcp={"pools": [{"start": "10.0.1.1", "end": "10.0.255.254"}], "lease_time": 3600}, **kw)


def through_box(rate: int, seconds: int) -> dict:
    from appliance.box.locate import box as box_for
    from appliance.lab.lab import Lab
    from appliance.lab.topology import LabSpec

    spec = LabSpec(prefix="bx" + secrets.token_hex(2), clients=1)
    lab = Lab(spec)
    tmp = Path(tempfile.mkdtemp(prefix="benchbox-", dir="/tmp"))
    box = box_for(spec.box, state=str(tmp / "state"), run=str(tmp / "run"))
    try:
        lab.up(progress=None)
        c = spec.client(1)
        ip("-n", c, "addr", "add", "10.0.0.250/16", "dev", "eth0")  # perfdhcp relays from it
        t0 = time.perf_counter()
        res = box.apply(bench_settings())
        first = time.perf_counter() - t0
        if not res.ok:
            raise RuntimeError(f"apply failed: {res.error}")
        t0 = time.perf_counter()
        again = box.apply(bench_settings())
        noop = time.perf_counter() - t0
        assert again.ok and not again.changes
        out = perfdhcp(c, rate, seconds)
        return {**out, "first_apply_s": first, "noop_apply_s": noop}
    finally:
        try:
            box.teardown()
        finally:
            lab.down(progress=None)
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=4000, help="exchanges/s perfdhcp attempts")
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    d = direct(args.rate, args.seconds)
    b = through_box(args.rate, args.seconds)
    print(f"perfdhcp -r {args.rate} -p {args.seconds}, Kea {subprocess.run(['kea-dhcp4', '-v'], capture_output=True, text=True).stdout.strip()}, memfile on disk")
    print(f"{'path':<28} {'leases/s':>10} {'REQUESTs':>10} {'ACKs':>10} {'ratio':>8}")
    print(f"{'direct to Kea (baseline)':<28} {d['leases_per_s']:>10.0f} {d['requests']:>10} {d['acks']:>10} {1.0:>8.2f}")
    print(f"{'through the box':<28} {b['leases_per_s']:>10.0f} {b['requests']:>10} {b['acks']:>10} "
          f"{b['leases_per_s'] / d['leases_per_s']:>8.2f}")
    print(f"apply (box in the lab): first {b['first_apply_s']:.2f} s, no-change {b['noop_apply_s']:.2f} s")
    print(f"reproduce: sudo .venv/bin/python bench/dhcp.py --rate {args.rate} --seconds {args.seconds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
