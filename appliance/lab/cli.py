"""`./manage.py lab up|down|status|dhcp`: the lab from the command line."""
from __future__ import annotations

import json

from appliance.kernel import KernelError
from appliance.lab.lab import Lab
from appliance.lab.topology import LabError, LabSpec


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=["up", "down", "status", "dhcp"])
    parser.add_argument("client", nargs="?", help="for dhcp: the client number or namespace name")
    parser.add_argument("--prefix", default="lab", help="prefix of every namespace name (default: lab)")
    parser.add_argument("--clients", type=int, default=3, help="number of client namespaces (default: 3)")
    parser.add_argument("--json", action="store_true", help="status as JSON")
    parser.add_argument("-6", "--ipv6", action="store_true",
                        help="for dhcp: stateless DHCPv6 (dhclient -6 -S) instead of DHCPv4")


def run(opts, out=print) -> int:
    try:
        spec = LabSpec(prefix=opts["prefix"], clients=opts["clients"])
    except LabError as e:
        out(f"lab: {e}")
        return 2
    lab = Lab(spec)
    if opts["action"] == "up":
        try:
            changes = lab.up(progress=out)
        except (KernelError, RuntimeError) as e:
            out(f"lab up failed: {e}\n(what was made stays for inspection; `lab down --prefix {spec.prefix}` removes it)")
            return 1
        out(f"lab {spec.prefix}: up, {len(changes)} change(s)" if changes else f"lab {spec.prefix}: up, no changes")
        _summary(lab, out)
    elif opts["action"] == "down":
        changes = lab.down(progress=None)
        out(f"lab {spec.prefix}: down, removed {sum(c.startswith('- netns') for c in changes)} namespace(s)")
    elif opts["action"] == "status":
        st = lab.status()
        if opts["json"]:
            out(json.dumps(st, indent=2))
        else:
            _summary(lab, out, st)
        return 0 if st["up"] else 3
    elif opts["action"] == "dhcp":
        names = spec.client_names if not opts["client"] else [
            opts["client"] if opts["client"].startswith(spec.prefix + "-") else spec.client(int(opts["client"]))]
        for c in names:
            if opts.get("ipv6"):
                lease = lab.dhcp6(c)
                out(f"{c}: dns {' '.join(lease.dns)} from DHCPv6 server {lease.server_identifier}")
                continue
            lease = lab.dhcp(c)
            out(f"{c}: {lease.address} from {lease.server_identifier} router {' '.join(lease.routers)} "
                f"dns {' '.join(lease.dns)}")
    return 0


def _summary(lab: Lab, out, st=None) -> None:
    st = st or lab.status()
    out(f"namespaces: {' '.join(n + ('' if ok else ' (missing)') for n, ok in st['namespaces'].items())}")
    for name, p in st["processes"].items():
        out(f"process {name}: pid {p['pid']} in {p['ns']} {'running' if p['alive'] else 'DEAD'}")
    for c, addrs in st["clients"].items():
        out(f"{c}: {' '.join(addrs) or 'no address (run: ./manage.py lab dhcp)'}")
    out(f"lab {lab.spec.prefix} is {'up' if st['up'] else 'NOT fully up'}")
