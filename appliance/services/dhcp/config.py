"""Kea DHCPv4's configuration, made from the DHCP service's own settings (pure).

`DhcpSettings` is what Kea needs to know, and nothing of the box's document:
the box's plan binds the document's `dhcp` section to it (as it binds the
`dns` and `relay` sections to theirs), so this module knows no box.

Kea runs in netns `gw` on `gw0`, which carries the modem's IP and MAC, so the
server identifier Kea puts in every reply is naturally the gateway address.
Leases live in a memfile on disk (they survive restarts and re-applies), the
control socket and the `lease_cmds` hook let the CLI and console list them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

KEA_HOOKS_DIR = "/usr/lib/x86_64-linux-gnu/kea/hooks"
INTERFACE = "gw0"
SUBNET_ID = 1
# Kea's lease file cleanup (kea-lfc) runs this often, in seconds.
LFC_INTERVAL = 3600


@dataclass(frozen=True)
class KeaPaths:
    """Where one Kea instance keeps its files."""

    config: str
    leases: str
    socket: str
    run_dir: str  # pid and lock files (KEA_PIDFILE_DIR, KEA_LOCKFILE_DIR)

    def env(self) -> dict[str, str]:
        # Kea writes its pid file and logger lock into these, /run/kea by
        # default; one directory per instance lets tests run several.
        return {"KEA_PIDFILE_DIR": self.run_dir, "KEA_LOCKFILE_DIR": self.run_dir}


@dataclass(frozen=True)
class Reservation:
    mac: str
    ip: str
    hostname: str | None = None


@dataclass(frozen=True)
class DhcpSettings:
    """One subnet served on one interface: what `kea_config` renders."""

    subnet: str  # "192.168.1.0/24"
    pools: tuple[tuple[str, str], ...]  # (first, last) address
    router: str
    dns_servers: tuple[str, ...]
    paths: KeaPaths
    lease_time: int = 86400
    domain: str | None = None
    ntp: tuple[str, ...] = ()
    reservations: tuple[Reservation, ...] = ()
    interface: str = INTERFACE
    hooks_dir: str = KEA_HOOKS_DIR


def kea_config(dhcp: DhcpSettings) -> dict:
    """The `Dhcp4` configuration, as a JSON-ready dict."""
    options = [
        {"name": "routers", "data": dhcp.router},
        {"name": "domain-name-servers", "data": ", ".join(dhcp.dns_servers)},
    ]
    if dhcp.domain:
        options.append({"name": "domain-name", "data": dhcp.domain})
    if dhcp.ntp:
        options.append({"name": "ntp-servers", "data": ", ".join(dhcp.ntp)})
    reservations = []
    for lease in dhcp.reservations:
        r = {"hw-address": lease.mac, "ip-address": lease.ip}
        if lease.hostname:
            r["hostname"] = lease.hostname
        reservations.append(r)
    return {
        "Dhcp4": {
            "interfaces-config": {"interfaces": [dhcp.interface], "dhcp-socket-type": "raw"},
            "control-socket": {"socket-type": "unix", "socket-name": dhcp.paths.socket},
            "lease-database": {
                "type": "memfile",
                "persist": True,
                "name": dhcp.paths.leases,
                "lfc-interval": LFC_INTERVAL,
            },
            "hooks-libraries": [{"library": f"{dhcp.hooks_dir}/libdhcp_lease_cmds.so"}],
            # Clients holding a lease from the modem's own DHCP get a NAK and
            # come back to us, instead of being ignored.
            "authoritative": True,
            "valid-lifetime": dhcp.lease_time,
            "renew-timer": dhcp.lease_time // 2,
            "rebind-timer": dhcp.lease_time * 7 // 8,
            # The pools never hold reserved addresses (the box's settings
            # forbid it), so Kea may skip looking for out-of-pool
            # reservations in them.
            "reservations-out-of-pool": True,
            "subnet4": [{
                "id": SUBNET_ID,
                "subnet": dhcp.subnet,
                "interface": dhcp.interface,
                "pools": [{"pool": f"{first} - {last}"} for first, last in dhcp.pools],
                "option-data": options,
                "reservations": reservations,
            }],
            "loggers": [{
                "name": "kea-dhcp4",
                "output_options": [{"output": "stderr"}],
                "severity": "INFO",
            }],
        }
    }


def render(config: dict) -> str:
    return json.dumps(config, indent=2) + "\n"
