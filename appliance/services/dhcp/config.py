"""Kea DHCPv4's configuration, made from the box's settings (pure).

Kea runs in netns `gw` on `gw0`, which carries the modem's IP and MAC, so the
server identifier Kea puts in every reply is naturally the gateway address.
Leases live in a memfile on disk (they survive restarts and re-applies), the
control socket and the `lease_cmds` hook let the CLI and console list them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from appliance.box.settings import Settings

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

    @classmethod
    def under(cls, state_dir: str, run_dir: str) -> "KeaPaths":
        return cls(
            config=f"{state_dir}/dhcp/kea-dhcp4.conf",
            leases=f"{state_dir}/dhcp/dhcp4.leases",
            socket=f"{run_dir}/dhcp/kea4.sock",
            run_dir=f"{run_dir}/dhcp",
        )

    def env(self) -> dict[str, str]:
        # Kea writes its pid file and logger lock into these, /run/kea by
        # default; one directory per instance lets tests run several.
        return {"KEA_PIDFILE_DIR": self.run_dir, "KEA_LOCKFILE_DIR": self.run_dir}


def kea_config(settings: Settings, paths: KeaPaths, *, interface: str = INTERFACE,
               hooks_dir: str = KEA_HOOKS_DIR) -> dict:
    """The `Dhcp4` configuration for the settings, as a JSON-ready dict."""
    dhcp = settings.dhcp
    options = [
        {"name": "routers", "data": str(settings.router)},
        {"name": "domain-name-servers", "data": ", ".join(map(str, settings.dns_servers))},
    ]
    if dhcp.options.domain:
        options.append({"name": "domain-name", "data": dhcp.options.domain})
    if dhcp.options.ntp:
        options.append({"name": "ntp-servers", "data": ", ".join(map(str, dhcp.options.ntp))})
    reservations = []
    for lease in dhcp.static_leases:
        r = {"hw-address": lease.mac, "ip-address": str(lease.ip)}
        if lease.hostname:
            r["hostname"] = lease.hostname
        reservations.append(r)
    return {
        "Dhcp4": {
            "interfaces-config": {"interfaces": [interface], "dhcp-socket-type": "raw"},
            "control-socket": {"socket-type": "unix", "socket-name": paths.socket},
            "lease-database": {
                "type": "memfile",
                "persist": True,
                "name": paths.leases,
                "lfc-interval": LFC_INTERVAL,
            },
            "hooks-libraries": [{"library": f"{hooks_dir}/libdhcp_lease_cmds.so"}],
            # Clients holding a lease from the modem's own DHCP get a NAK and
            # come back to us, instead of being ignored.
            "authoritative": True,
            "valid-lifetime": dhcp.lease_time,
            "renew-timer": dhcp.lease_time // 2,
            "rebind-timer": dhcp.lease_time * 7 // 8,
            # The pools never hold reserved addresses (settings forbid it),
            # so Kea may skip looking for out-of-pool reservations in them.
            "reservations-out-of-pool": True,
            "subnet4": [{
                "id": SUBNET_ID,
                "subnet": str(settings.lan.prefix),
                "interface": interface,
                "pools": [{"pool": f"{p.start} - {p.end}"} for p in dhcp.pools],
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
