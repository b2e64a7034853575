"""`./manage.py dhcp leases|status|reload`: Kea through its control socket.

The socket is the located box's (`appliance.box.locate`: --netns,
--state-dir, --run-dir or the environment), unless --socket names one.
"""
from __future__ import annotations

import json
import time
from typing import Callable

from appliance.box import locate, status
from appliance.services.dhcp.kea import KeaControl, KeaError


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=["leases", "status", "reload"])
    parser.add_argument("--socket", default=None, help="Kea's control socket (default: the box's)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    locate.add_arguments(parser)


def _socket(opts: dict) -> str:
    return opts.get("socket") or locate.layout(opts.get("netns"), opts.get("state_dir"), opts.get("run_dir")).kea.socket


def run(opts: dict, out: Callable[[str], None]) -> int:
    socket = _socket(opts)
    if opts["action"] == "leases":
        reading = status.kea_leases(socket)
        if not reading.ok:
            out(f"error: {reading.problem}\n")
            return 1
        leases = reading.value
        if opts.get("json"):
            out(json.dumps(leases, indent=2) + "\n")
            return 0
        out(f"{'IP':<16} {'MAC':<18} {'HOSTNAME':<24} EXPIRES\n")
        for x in leases:
            expires = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(x["expires"]))
            out(f"{x['ip']:<16} {x['mac']:<18} {x['hostname'] or '-':<24} {expires}\n")
        out(f"{len(leases)} lease{'s' if len(leases) != 1 else ''}\n")
        return 0
    control = KeaControl(socket)
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
