"""The box's names and places: namespaces, links, OpenFlow ports, and every file it keeps.

The constants are the box's own vocabulary: the plan builds with them, the
settings refuse them as NIC names, flows name the ports by them. `Layout`
says where one box keeps its state (surviving reboots: leases, the fake-IP
store, what was applied) and its runtime files (sockets, pid files, the
supervisor's state); every path any part of the box uses is a property here,
so the console, the CLI and the services always agree on them.
"""
from __future__ import annotations

import functools
import hashlib
import os
import sys
from dataclasses import dataclass, field

from appliance.services.dhcp.config import KEA_HOOKS_DIR, KeaPaths
from appliance.services.dhcp.dhcpkit_config import Dhcp6Paths

GW_NS, VPROXY_NS = "gw", "vproxy"
BRIDGE = "vswitch"
ADMIN_DEV, GW_DEV, VPROXY_DEV = "admin0", "gw0", "vproxy0"  # the stack-side ends
# The bridge-side ends are named as the flow table names the ports.
ADMIN_PORT, VGW_PORT, VPROXY_PORT = "admin", "vgw", "vproxy"
# OpenFlow port numbers of the box's ports; flows name them by these names.
PORT_NUMBERS: dict[str, int] = {"uplink": 1, "downlink": 2, ADMIN_PORT: 3, VGW_PORT: 4, VPROXY_PORT: 5}
PORT_NAMES: dict[int, str] = {n: name for name, n in PORT_NUMBERS.items()}
NFT_TABLE = "appliance"
# Link names the box creates in its host namespace; a NIC cannot be called so.
RESERVED_LINK_NAMES = frozenset({ADMIN_PORT, ADMIN_DEV, VGW_PORT, VPROXY_PORT, BRIDGE})

STATE_ROOT = "/var/lib/appliance"
RUN_ROOT = "/run/appliance"
PIN_ROOT = "/sys/fs/bpf/appliance"  # one directory per box below it (`host` or its namespace)


@functools.cache  # the console builds a Layout per request; the answer is the process's
def interpreter() -> str:
    """This Python under one name, whichever of its names started the process.

    A service's command line is part of its revision, and the console's worker
    (started by `celery`, whose script says `python3`) and the CLI or the boot
    (`python`) are the same interpreter under two names: spelled as they were
    started, every console apply after a CLI one restarted every service.
    """
    canonical = os.path.join(sys.prefix, "bin", "python3")
    try:
        if os.path.samefile(canonical, sys.executable):
            return canonical
    except OSError:
        pass
    return sys.executable


def derived_mac(name: str) -> str:
    """A stable, locally administered unicast MAC for a port the seed leaves unfixed."""
    h = hashlib.sha256(f"appliance-port:{name}".encode()).digest()
    return ":".join(f"{b:02x}" for b in ((h[0] & 0xFC) | 0x02, *h[1:6]))


@dataclass(frozen=True)
class Layout:
    """Where one box keeps state (survives reboots) and runtime files."""

    state_dir: str = STATE_ROOT
    run_dir: str = RUN_ROOT
    kea_hooks_dir: str = KEA_HOOKS_DIR
    python: str = field(default_factory=interpreter)  # runs the box's own services (DNS, relay)

    # -- state
    @property
    def state_file(self) -> str:
        """What was applied: settings, observations, the plan (`appliance.box.stored`)."""
        return f"{self.state_dir}/applied.json"

    @property
    def good_state_file(self) -> str:
        """The last settings that applied and answered (the boot falls back to them)."""
        return f"{self.state_dir}/applied.good.json"

    @property
    def boot_note(self) -> str:
        """What the boot did when it could not apply the applied settings (`appliance.box.boot`)."""
        return f"{self.run_dir}/boot-note.json"

    @property
    def apply_lock(self) -> str:
        """Held by whoever applies or tears down this box (the console's worker, the CLI, the modem watch)."""
        return f"{self.state_dir}/apply.lock"

    @property
    def gateway_file(self) -> str:
        """The gateway's MAC as last learned from its frames (`appliance.box.modem`)."""
        return f"{self.state_dir}/gateway.json"

    @property
    def dhcp_dir(self) -> str:
        return f"{self.state_dir}/dhcp"

    @property
    def kea(self) -> KeaPaths:
        return KeaPaths(config=f"{self.dhcp_dir}/kea-dhcp4.conf", leases=f"{self.dhcp_dir}/dhcp4.leases",
                        socket=f"{self.run_dir}/dhcp/kea4.sock", run_dir=f"{self.run_dir}/dhcp")

    @property
    def dhcp6_dir(self) -> str:
        """The DHCPv6 server's own state (it runs as its own user, apart from Kea's files)."""
        return f"{self.state_dir}/dhcp6"

    @property
    def dhcp6_run_dir(self) -> str:
        return f"{self.run_dir}/dhcp6"

    @property
    def dhcp6(self) -> Dhcp6Paths:
        """The DHCPv6 server's files: its settings (the plan's, beside Kea's); dhcpkit's config and
        static leases, the leasequery store, the modem's last RA (its own state); status, socket and
        pid (its own runtime)."""
        d, run = self.dhcp6_dir, self.dhcp6_run_dir
        return Dhcp6Paths(config=f"{self.dhcp_dir}/dhcp6.json", dhcpkit=f"{d}/dhcpkit.conf",
                          assignments=f"{d}/static6.csv", leases=f"{d}/leases6.sqlite",
                          ra=f"{d}/modem-ra.json", status=f"{run}/dhcp6-status.json",
                          socket=f"{run}/dhcp6.sock", pid_file=f"{run}/dhcp6.pid")

    @property
    def dns_dir(self) -> str:
        return f"{self.state_dir}/dns"

    @property
    def dns_config(self) -> str:
        return f"{self.dns_dir}/dns.json"

    @property
    def relay_config(self) -> str:
        return f"{self.dns_dir}/relay.json"

    @property
    def dns_lists_dir(self) -> str:
        """The one directory DNS rule lists are read from (besides https URLs)."""
        return f"{self.dns_dir}/lists"

    @property
    def dns_querylog_dir(self) -> str:
        """The DNS server's query log on disk (`appliance.services.dns.querydisk`)."""
        return f"{self.dns_dir}/querylog"

    @property
    def fakeip_db(self) -> str:
        return f"{self.dns_dir}/fakeip.sqlite3"

    @property
    def datapath_dir(self) -> str:
        return f"{self.state_dir}/datapath"

    @property
    def datapath_paused(self) -> str:
        """The devices paused until resumed (the console writes it; the datapath, devices and DNS read it)."""
        return f"{self.datapath_dir}/paused.json"

    # -- runtime
    @property
    def dns_socket(self) -> str:
        return f"{self.run_dir}/dns.sock"

    @property
    def relay_socket(self) -> str:
        return f"{self.run_dir}/relay.sock"

    @property
    def services_dir(self) -> str:
        """The supervisor's state (where systemd does not run the services)."""
        return f"{self.run_dir}/services"

    @property
    def watchdog_config(self) -> str:
        """What the watchdog probes and where it writes (`appliance.services.health.watchdog`)."""
        return f"{self.run_dir}/watchdog.json"

    @property
    def modem_watch_config(self) -> str:
        """What the modem watch listens on (`appliance.box.modem`)."""
        return f"{self.run_dir}/modem-watch.json"

    @property
    def modem_watch_link(self) -> str:
        """The uplink's link as the modem watch last read it."""
        return f"{self.run_dir}/modem-watch-link.json"

    @property
    def notify_config(self) -> str:
        """Where alerts go (`appliance.services.notify`): the notifier's alone, it holds secrets."""
        return f"{self.run_dir}/notify.json"

    @property
    def health_status(self) -> str:
        """The watchdog's status, rewritten every round."""
        return f"{self.run_dir}/health.json"

    @property
    def health_events(self) -> str:
        """Every health transition and restart, kept across reboots (`record`)."""
        return f"{self.state_dir}/health/events.jsonl"

    @property
    def devices_dir(self) -> str:
        """The devices service's state and what the console asked of the devices (`appliance.services.devices`)."""
        return f"{self.state_dir}/devices"

    @property
    def devices_policy(self) -> str:
        """Groups, schedules and budgets: written by the console, read by the devices service."""
        return f"{self.devices_dir}/policy.json"

    @property
    def devices_state(self) -> str:
        """The devices service's memory: known MACs, the counters' baseline, usage per period."""
        return f"{self.devices_dir}/state.json"

    @property
    def devices_scheduled(self) -> str:
        """The MACs a schedule has off now (the devices service's word; every datapath load adds them)."""
        return f"{self.devices_dir}/scheduled.json"

    @property
    def devices_config(self) -> str:
        """Where the devices service reads and writes (`appliance.services.devices`)."""
        return f"{self.run_dir}/devices.json"

    @property
    def series_dir(self) -> str:
        """Time series for the console's charts (`appliance.services.timeseries`), a file per writer."""
        return f"{self.state_dir}/series"

    def series_file(self, writer: str) -> str:
        return f"{self.series_dir}/{writer}.sqlite"

    @property
    def runtime(self) -> tuple[str, ...]:
        """What the box's services leave in `run_dir`; teardown removes it (state stays)."""
        return (self.kea.run_dir, self.dhcp6_run_dir, self.dns_socket, self.relay_socket, self.services_dir,
                self.watchdog_config, self.modem_watch_config, self.modem_watch_link, self.health_status,
                self.notify_config, self.devices_config)
