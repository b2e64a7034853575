"""`./manage.py dhcp leases|leases6|status|reload`: Kea through its control socket,
the DHCPv6 leases from dhcpkit's leasequery store.

The socket and the store are the located box's (`appliance.box.locate`:
--netns, --state-dir, --run-dir or the environment), unless --socket or
--leases6 names one.
"""
from __future__ import annotations

import json
import time
from typing import Callable

from appliance.box import locate, status
from appliance.services.dhcp.kea import KeaControl, KeaError


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=["leases", "leases6", "status", "reload"])
    parser.add_argument("--socket", default=None, help="Kea's control socket (default: the box's)")
    parser.add_argument("--leases6", default=None, help="dhcpkit's leasequery store (default: the box's)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    locate.add_arguments(parser)


def _layout(opts: dict):
    return locate.layout(opts.get("netns"), opts.get("state_dir"), opts.get("run_dir"))


def _socket(opts: dict) -> str:
    return opts.get("socket") or _layout(opts).kea.socket


def run(opts: dict, out: Callable[[str], None]) -> int:
    if opts["action"] in ("leases", "leases6"):
        if opts["action"] == "leases":
            reading = status.kea_leases(_socket(opts))
        else:
            reading = status.dhcp6_leases(opts.get("leases6") or _layout(opts).dhcp6.leases)
        if not reading.ok:
            out(f"error: {reading.problem}\n")
            return 1
        leases = reading.value
        if opts.get("json"):
            out(json.dumps(leases, indent=2) + "\n")
            return 0
        width = 16 if opts["action"] == "leases" else 40
        out(f"{'IP':<{width}} {'MAC':<18} {'HOSTNAME':<24} EXPIRES\n")
        for x in leases:
            expires = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(x["expires"]))
            out(f"{x['ip']:<{width}} {x['mac'] or '-':<18} {x['hostname'] or '-':<24} {expires}\n")
        out(f"{len(leases)} lease{'s' if len(leases) != 1 else ''}\n")
        return 0
    control = KeaControl(_socket(opts))
    try:
        if opts["action"] == "status":
            out(json.dumps(control.status(), indent=2) + "\n")
        elif opts["action"] == "reload":
            control.reload()
            out("reloaded\n")
    except KeaError as e:
        out(f"error: {e}\n")
        return 1
    return 0
