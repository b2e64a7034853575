"""Where the box's live datapath sends a home client's DNS query now (run with the box's venv, as root).

    python dp_decide.py [--netns NS] [--until-open SECONDS] [--then COMMAND]

NS: a lab box's namespace (the image's box has none). With --until-open it
asks again every 0.1 s until the query no longer meets a flow that needs the
health register (the datapath fell open), at most SECONDS, and says after how
long (measured here, not across ssh) since the wall-clock time --since, or
since COMMAND (--then), run once this process is ready, ended.

One frame, a DNS query from a client on the downlink to the gateway, is run
through the program attached to the box's ports (its pin) with
BPF_PROG_TEST_RUN on the downlink's ifindex: the compiled program, its maps
and the health map the watchdog writes are the live ones; nothing is sent.
Its decision shows in the flows' own counters (`dump-flows`), so this prints
the flows whose counters moved and the health register, as JSON.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import struct
import subprocess
import time

from appliance.box import locate
from appliance.box.layout import GW_DEV
from appliance.box.switchload import DatapathLoader
from appliance.kernel.desired import Veth
from appliance.kernel.libbpf import LinuxBpf
from appliance.services.health.heartbeat import HealthMap
from appliance.switch.packet import Packet

SKB_SIZE = 192       # sizeof(struct __sk_buff) in the 6.1 headers
SKB_IFINDEX = 40     # offsetof(struct __sk_buff, ifindex): the device the frame came in on
CLIENT_MAC = 0x02C0FFEE0001


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--netns", default=None)
    ap.add_argument("--until-open", type=float, default=None)
    ap.add_argument("--since", type=float, default=None, help="wall-clock time `after` counts from")
    ap.add_argument("--then", default=None,
                    help="a shell command run once this is ready to decide; `after` counts from its end")
    opts = ap.parse_args()
    decide = Decider(opts.netns)
    start = time.time() if opts.since is None else opts.since
    out = decide()
    if opts.then is not None:
        # Here, not before this process: under emulation its start alone takes seconds.
        subprocess.run(opts.then, shell=True, check=True)
        start = time.time()
        out = decide()
    while opts.until_open is not None and any("reg15" in f for f in out["moved"]):
        if time.time() - start > opts.until_open:
            break
        time.sleep(0.1)
        out = decide()
    out["after"] = round(time.time() - start, 2)
    print(json.dumps(out))
    return 0


class Decider:
    def __init__(self, netns: str | None):
        box = locate.box(netns)
        applied = box.applied()
        settings, plan = applied.settings, applied.plan
        loader = DatapathLoader.of(box)
        self.bridge = loader.bridge_of(plan.switch)
        self.dp = loader.datapath(self.bridge.name)
        downlink = next(link for link in box.kernel.links(netns) if link.name == settings.ports.downlink)
        gateway = int(ipaddress.IPv4Address(settings.gateway.ip))
        client = int(next(iter(ipaddress.IPv4Network(settings.lan.prefix).hosts()))) + 199
        gateway_mac = next(o.mac for o in plan.kernel if isinstance(o, Veth) and o.name == GW_DEV)
        self.frame = Packet(dl_src=CLIENT_MAC, dl_dst=int(gateway_mac.replace(":", ""), 16),
                            dl_type=0x0800, nw_proto=17, nw_ttl=64, nw_src=client, nw_dst=gateway,
                            tp_src=40053, tp_dst=53).to_bytes()
        ctx = bytearray(SKB_SIZE)
        struct.pack_into("<I", ctx, SKB_IFINDEX, downlink.ifindex)
        self.ctx = bytes(ctx)
        self.bpf = LinuxBpf()

    def __call__(self) -> dict:
        flows, dp = self.bridge.flows, self.dp
        before = dp.flow_stats(flows)
        prog = self.bpf.open_pinned(os.path.join(dp.pin_dir, "prog"))
        try:
            run = self.bpf.test_run(prog, self.frame, self.ctx)
        finally:
            self.bpf.close(prog)
        after = dp.flow_stats(flows)
        moved = [f.to_ofctl() for f in flows
                 if f.key in after and after[f.key].n_packets > before.get(f.key, after[f.key]).n_packets]
        return {"moved": moved, "retval": run.retval,
                "health": HealthMap(f"{dp.pin_dir}/dp_health", self.bpf).bits()}


if __name__ == "__main__":
    raise SystemExit(main())
