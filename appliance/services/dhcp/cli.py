"""`./manage.py dhcp leases|status|reload`: Kea through its control socket."""
from __future__ import annotations

import json
import os
import time
from typing import Callable

from appliance.services.dhcp.config import KeaPaths
from appliance.services.dhcp.kea import KeaControl, KeaError


def default_socket() -> str:
    state = os.environ.get("APPLIANCE_STATE_DIR", "/var/lib/appliance")
    run = os.environ.get("APPLIANCE_RUN_DIR", "/run/appliance")
    return KeaPaths.under(state, run).socket


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=["leases", "status", "reload"])
    parser.add_argument("--socket", default=None, help="Kea's control socket (default: the box's)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(opts: dict, out: Callable[[str], None]) -> int:
    control = KeaControl(opts.get("socket") or default_socket())
    try:
        if opts["action"] == "leases":
            leases = control.leases()
            if opts.get("json"):
                out(json.dumps([{"ip": str(x.ip), "mac": x.mac, "hostname": x.hostname, "expires": x.expires,
                                 "state": x.state} for x in leases], indent=2) + "\n")
                return 0
            out(f"{'IP':<16} {'MAC':<18} {'HOSTNAME':<24} EXPIRES\n")
            for x in leases:
                expires = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(x.expires))
                out(f"{str(x.ip):<16} {x.mac:<18} {x.hostname or '-':<24} {expires}\n")
            out(f"{len(leases)} lease{'s' if len(leases) != 1 else ''}\n")
        elif opts["action"] == "status":
            out(json.dumps(control.status(), indent=2) + "\n")
        elif opts["action"] == "reload":
            control.reload()
            out("reloaded\n")
    except KeaError as e:
        out(f"error: {e}\n")
        return 1
    return 0
