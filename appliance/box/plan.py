"""The box's plan: settings + what was observed -> plain data, no I/O.

`plan(settings, observed, layout)` says everything the box must hold for the
seed's design (steps 1, 5, 6, 7 of `init-nics.sh`/`init-flow.sh`):

- kernel objects for the reconciler (`appliance.kernel.desired`): the
  namespaces `gw` and `vproxy`, the bridge, veth pairs with fixed MACs
  (`gw0` = the modem's IP and MAC, `admin0` = the uplink NIC's MAC and the
  admin address, `vproxy0` = its own), the NICs' bridge membership
  (`BridgePort`), addresses, routes, sysctls, nftables tables;
- the switch: the port map (uplink, downlink, admin, vgw, vproxy -> OpenFlow
  port numbers and link names) and the flow table as `Flow` objects
  (`appliance.box.flows`);
- config files and service definitions: each service's own settings bound
  to this box (Kea's `DhcpSettings`, `DnsSettings`, `RelaySettings`) and
  rendered to the file the service reads.

The apply layer walks `Plan.kernel` (in the order given), writes
`Plan.files`, loads `Plan.switch`, then starts `Plan.services`; teardown
also removes `Plan.runtime`. `render(plan)` is a stable text form;
`diff(old, new)` is what `apply --dry-run` prints. The applied plan itself
is kept (`appliance.box.stored`), so what an older version made can be
removed by a newer one.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Mapping

from appliance.box.flows import (
    HEALTH_DHCP, HEALTH_DHCP6, HEALTH_DNS, HEALTH_RELAY, FlowEntry, add_flow_line, box_flows, parse_custom,
)
from appliance.box.layout import (  # noqa: F401 - the box's names are part of a plan's vocabulary
    ADMIN_DEV, ADMIN_PORT, BRIDGE, GW_DEV, GW_NS, NFT_TABLE, PORT_NUMBERS, VGW_PORT, VPROXY_DEV,
    PIN_ROOT, VPROXY_NS, VPROXY_PORT, Layout, derived_mac,
)
from appliance.box.ipv6 import VPROXY_DNS6, eui64_link_local
from appliance.box.modem import WatchConfig
from appliance.box.settings import Settings
from appliance.kernel.base import Route
from appliance.kernel.desired import (  # noqa: F401 - BridgePort is part of a plan's vocabulary
    Address, Bridge, BridgePort, Namespace, NftTable, Object, RouteEntry, Sysctls, Veth,
)
from appliance.services.dhcp import config as kea
from appliance.services.dhcp import dhcpkit_config as dhcpkit
from appliance.services.dns.settings import DnsSettings
from appliance.services.devices.service import DevicesConfig
from appliance.services.identity import DEVICES, DHCP6, DNS, KEA, NOTIFY, RELAY, VPROXY_GID
from appliance.services.health.heartbeat import pin_path
from appliance.services.health.probes import Probe
from appliance.services.health.watchdog import WatchdogConfig, WatchedService
from appliance.services.relay import nft as relay_nft
from appliance.services.relay.settings import RelaySettings
from appliance.services.supervisor import ServiceSpec
from appliance.switch.flows import Flow, FlowTable


class PlanError(ValueError):
    """The plan cannot be made; `field` names the setting or observation."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Observed:
    """What was read from the machine before planning."""

    nic_macs: tuple[tuple[str, str], ...] = ()  # (name, MAC) of the physical NICs
    gateway_mac: str | None = None  # found by ARP when the settings leave it out

    @classmethod
    def of(cls, nic_macs: Mapping[str, str], gateway_mac: str | None = None) -> "Observed":
        return cls(tuple(sorted((k, v.lower()) for k, v in nic_macs.items())),
                   gateway_mac.lower() if gateway_mac else None)

    def mac_of(self, nic: str) -> str | None:
        return dict(self.nic_macs).get(nic)


@dataclass(frozen=True)
class SwitchPort:
    name: str  # as flows name it
    number: int  # OpenFlow port number
    ns: str | None
    link: str  # the link the datapath attaches to


@dataclass(frozen=True)
class Switch:
    bridge: str
    ports: tuple[SwitchPort, ...]
    flows: tuple[FlowEntry, ...]  # the box's own
    custom: tuple[Flow, ...] = ()  # the settings' flows.custom, after the box's own

    @property
    def port_map(self) -> dict[str, int]:
        return {p.name: p.number for p in self.ports}

    def table(self) -> FlowTable:
        """The flow table the datapath runs: the box's own flows, then the custom ones."""
        return FlowTable([*(e.flow for e in self.flows), *self.custom])

    def flow_text(self, comments: bool = True) -> str:
        """The whole table as an `ovs-ofctl add-flows` file."""
        lines = []
        for e in self.flows:
            if comments:
                lines.append(f"# {e.why}")
            lines.append(e.text)
        if self.custom and comments:
            lines.append("# custom flows (settings: flows.custom)")
        lines.extend(add_flow_line(f) for f in self.custom)
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ConfigFile:
    path: str
    content: str
    mode: int = 0o644
    owner: tuple[int, int] | None = None  # (uid, gid): a service's own file; None: root's

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.content.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Plan:
    kernel: tuple[Object | BridgePort, ...]
    switch: Switch
    directories: tuple[str, ...] = ()
    files: tuple[ConfigFile, ...] = ()
    services: tuple[ServiceSpec, ...] = field(default_factory=tuple)
    # What the services leave at runtime, removed by teardown, then `run_dir` if empty.
    run_dir: str = ""
    runtime: tuple[str, ...] = ()
    # (path, uid, gid, mode) of the directories that belong to a service's user.
    owners: tuple[tuple[str, int, int, int], ...] = ()


# ---------------------------------------------------------------- the plan

def plan(settings: Settings, observed: Observed, layout: Layout = Layout()) -> Plan:
    uplink_mac = observed.mac_of(settings.ports.uplink)
    if uplink_mac is None:
        raise PlanError("ports.uplink", f"no MAC observed for {settings.ports.uplink}; is the NIC there?")
    if observed.mac_of(settings.ports.downlink) is None:
        raise PlanError("ports.downlink", f"{settings.ports.downlink} was not observed; is the NIC there?")
    gw_mac = settings.gateway.mac or observed.gateway_mac
    if gw_mac is None:
        raise PlanError("gateway.mac", f"not given and not discovered; ARP for {settings.gateway.ip} first")

    ports = (
        SwitchPort("uplink", PORT_NUMBERS["uplink"], None, settings.ports.uplink),
        SwitchPort("downlink", PORT_NUMBERS["downlink"], None, settings.ports.downlink),
        SwitchPort(ADMIN_PORT, PORT_NUMBERS[ADMIN_PORT], None, ADMIN_PORT),
        SwitchPort(VGW_PORT, PORT_NUMBERS[VGW_PORT], None, VGW_PORT),
        SwitchPort(VPROXY_PORT, PORT_NUMBERS[VPROXY_PORT], None, VPROXY_PORT),
    )
    s = settings
    own = box_flows(gateway_ip=s.gateway.ip, gateway_mac=gw_mac, admin_mac=uplink_mac, vproxy_mac=s.vproxy.mac,
                    fake_range=s.vproxy.fake_range, guarded_ports=s.admin.guarded_ports,
                    drop_ipv6=s.ipv6.policy == "drop", failsafe=s.failsafe, fake_range6=s.vproxy.fake_range6,
                    dhcp6=serves_dhcp6(s), intercept_all=intercepts_all(s))
    # Custom flows were checked with the settings; an error here is a bug.
    switch = Switch(BRIDGE, ports, own, parse_custom(s.flows.custom))

    dhcp = dhcp_settings(settings, layout)
    kea_file = ConfigFile(dhcp.paths.config, kea.render(kea.kea_config(dhcp)), 0o640, (0, KEA.gid))
    dns = dns_settings(settings, layout)
    dns_file = ConfigFile(layout.dns_config, json.dumps(dns.model_dump(mode="json"), indent=1) + "\n",
                          0o640, (0, VPROXY_GID))
    relay = relay_settings(settings, layout)
    # Upstream proxy passwords: the relay's own file, nobody else's.
    relay_file = ConfigFile(layout.relay_config, json.dumps(relay.model_dump(mode="json"), indent=1) + "\n",
                            0o600, (RELAY.uid, RELAY.gid))
    services = (
        ServiceSpec(
            name="dhcp4",
            argv=("kea-dhcp4", "-c", dhcp.paths.config),
            netns=GW_NS,
            env=tuple(sorted(dhcp.paths.env().items())),
            cwd=layout.dhcp_dir,
            # Kea's raw sockets write gw0's MAC as it was when Kea started:
            # a new gateway MAC restarts it, or its answers keep the old one.
            revision=_digest(kea_file.digest, gw_mac),
            ready=("udp/67",),
            # A lease lookup on the control socket; two misses before the
            # modem's DHCP is let in (a lease from the modem outlives the fault).
            probe=Probe("kea", layout.kea.socket, name=str(s.gateway.ip), timeout=1.0, fall=2, rise=2,
                        restart_after=8, bit=HEALTH_DHCP),
            identity=KEA,
            writable=(layout.dhcp_dir, dhcp.paths.run_dir),
        ),
        ServiceSpec(
            name="dns",
            argv=(layout.python, "-m", "appliance.services.dns", "--config", dns_file.path),
            netns=VPROXY_NS,
            cwd=layout.dns_dir,
            revision=dns_file.digest,
            ready=("udp/53", "tcp/53"),
            # A query as a client's arrives (the gateway's DNS is redirected to
            # this address), for a local name: the server answers it itself.
            probe=Probe("dns", f"{s.vproxy.address}:53", netns=VPROXY_NS,
                        name=f"appliance-probe.{dns.local_names.domain}", timeout=0.5, fall=1, rise=2,
                        restart_after=8, bit=HEALTH_DNS, processes=dns.workers),
            identity=DNS,
            writable=(layout.dns_dir, layout.run_dir, layout.series_dir),
        ),
        ServiceSpec(
            name="relay",
            argv=(layout.python, "-m", "appliance.services.relay", "--config", relay_file.path),
            netns=VPROXY_NS,
            cwd=layout.dns_dir,
            revision=relay_file.digest,
            ready=(f"tcp/{relay.listen_address()[1]}",),
            probe=Probe("relay", layout.relay_socket, timeout=1.0, fall=2, rise=2, restart_after=8,
                        bit=HEALTH_RELAY),
            identity=RELAY,
            writable=(layout.run_dir,),
        ),
    )
    files = (kea_file, dns_file, relay_file)
    if s.alerts.urls:
        notify_file, notify_spec = notify_service(s, layout)
        files, services = (*files, notify_file), (*services, notify_spec)
    if serves_dhcp6(s):
        dhcp6_file, dhcp6_spec = dhcp6_service(dhcp6_settings(s, gw_mac, layout), layout)
        files, services = (*files, dhcp6_file), (services[0], dhcp6_spec, *services[1:])
    return Plan(
        kernel=kernel_objects(settings, gw_mac, uplink_mac, relay),
        switch=switch,
        directories=(layout.dhcp_dir, dhcp.paths.run_dir, layout.dhcp6_dir, layout.dhcp6_run_dir,
                     layout.dns_dir, layout.dns_lists_dir),
        files=files,
        services=services,
        run_dir=layout.run_dir,
        runtime=layout.runtime,
        owners=(
            # Kea's leases, read by the DNS server for local names; its control socket.
            (layout.dhcp_dir, KEA.uid, KEA.gid, 0o755),
            (dhcp.paths.run_dir, KEA.uid, KEA.gid, 0o750),
            # dhcpkit's rendered config, leasequery store and the modem's RA (read by the DNS
            # server: the home's prefix); its status, socket and pid.
            (layout.dhcp6_dir, DHCP6.uid, DHCP6.gid, 0o755),
            (layout.dhcp6_run_dir, DHCP6.uid, DHCP6.gid, 0o755),
            # The fake-IP store: the DNS server writes it, the relay reads it.
            (layout.dns_dir, DNS.uid, VPROXY_GID, 0o750),
            (layout.dns_lists_dir, 0, VPROXY_GID, 0o750),
            # The charts' series, a file per writer: the DNS server (not root) makes its own;
            # sticky: no writer removes another's.
            (layout.series_dir, 0, VPROXY_GID, 0o1775),
            # The control sockets of the DNS server and the relay; sticky: neither removes
            # what is not its own.
            (layout.run_dir, 0, VPROXY_GID, 0o1775),
        ),
    )


def notify_service(s: Settings, layout: Layout) -> tuple[ConfigFile, ServiceSpec]:
    """The notifier (`appliance.services.notify`): the box's events to `alerts.urls`. It runs
    where the box's own traffic goes out (the admin port's default route, the modem)."""
    config = {"urls": list(s.alerts.urls), "events": list(s.alerts.events),
              "events_file": layout.health_events, "box": "appliance"}
    file = ConfigFile(layout.notify_config, json.dumps(config, indent=1) + "\n", 0o600, (NOTIFY.uid, NOTIFY.gid))
    return file, ServiceSpec(
        name="notify",
        argv=(layout.python, "-m", "appliance.services.notify", "--config", file.path),
        netns=None,
        cwd="/",
        revision=file.digest,
        identity=NOTIFY,
    )


WATCHDOG = "watchdog"
DHCP6_SERVER_PORT = 547
MODEM_WATCH = "modem-watch"
DEVICES_SERVICE = "devices"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def with_watchdog(p: Plan, settings: Settings, layout: Layout, host_ns: str | None,
                  runner: str = "supervisor", pin_root: str = PIN_ROOT) -> Plan:
    """The placed plan with its watchdog: the service last, its config file among the files.

    Made after `place`, because the watchdog's config names the namespaces
    its probes run in and the datapath's pins as placed; pure all the same.
    `runner` is what runs the services ("supervisor" or "systemd"): the
    watchdog restarts them through it.
    """
    watched = tuple(WatchedService(svc.name, svc.probe) for svc in p.services
                    if svc.probe is not None and svc.name != WATCHDOG)
    config = WatchdogConfig(
        services=watched, heartbeat=pin_path(pin_root, host_ns, p.switch.bridge),
        status=layout.health_status, events=layout.health_events,
        runner={"kind": "systemd"} if runner == "systemd" else {"kind": "supervisor", "dir": layout.services_dir},
        dns_control=layout.dns_socket, relay="relay", failsafe=settings.failsafe)
    config_file = ConfigFile(layout.watchdog_config, json.dumps(config.to_json(), indent=1) + "\n")
    spec = ServiceSpec(
        name=WATCHDOG,
        argv=(layout.python, "-m", "appliance.services.health", "--config", config_file.path),
        # Where the apply runs (the machine's own namespace), not in the box's
        # host namespace of the lab: `ip netns exec` would hide the BPF
        # filesystem with the heartbeat map. Its probes enter the namespaces
        # they need; control sockets are paths.
        netns=None,
        cwd=layout.state_dir,
        revision=config_file.digest,
        probe=Probe("watchdog", layout.health_status, timeout=1.0),
        # A hung watchdog is killed by its runner; the datapath needs no one (stale heartbeats fall open).
        watchdog_sec=5.0,
        # Root (its probes enter the namespaces), but it writes only its status and events.
        writable=(layout.run_dir, os.path.dirname(layout.health_events)),
    )
    return dataclasses.replace(
        p, files=(*(f for f in p.files if f.path != config_file.path), config_file),
        services=(*(svc for svc in p.services if svc.name != WATCHDOG), spec))


def with_devices(p: Plan, layout: Layout, host_ns: str | None, pin_root: str = PIN_ROOT) -> Plan:
    """The placed plan with the devices service (`appliance.services.devices`): new devices,
    traffic series, budgets and schedules, from the datapath's pinned per-device maps.

    It runs where the apply runs (the BPF filesystem with the pins; `ip netns exec` hides it).
    """
    pins = os.path.dirname(pin_path(pin_root, host_ns, p.switch.bridge))
    config = DevicesConfig(pin_dir=pins, paused=layout.datapath_paused,
                           policy=layout.devices_policy, state=layout.devices_state,
                           scheduled=layout.devices_scheduled, events=layout.health_events,
                           series=layout.series_file("devices"))
    config_file = ConfigFile(layout.devices_config, json.dumps(config.to_json(), indent=1) + "\n")
    spec = ServiceSpec(
        name=DEVICES_SERVICE,
        argv=(layout.python, "-m", "appliance.services.devices", "--config", config_file.path),
        netns=None,
        cwd=layout.state_dir,
        revision=config_file.digest,
        # A hung service would leave a schedule unenforced: its runner kills it (it says WATCHDOG=1 each tick).
        watchdog_sec=10.0,
        identity=DEVICES,
        writable=(layout.devices_dir, os.path.dirname(layout.health_events), layout.series_dir),
    )
    return dataclasses.replace(
        p, files=(*(f for f in p.files if f.path != config_file.path), config_file),
        services=(*(svc for svc in p.services if svc.name != DEVICES_SERVICE), spec))


def with_modem_watch(p: Plan, settings: Settings, layout: Layout, host_ns: str | None,
                     runner: str = "supervisor") -> Plan:
    """The placed plan with the modem watch (`appliance.box.modem`), unless `gateway.mac` is set.

    It runs where the apply runs (it re-applies: the datapath's pins are
    there) and opens its sockets in the namespaces it names.
    """
    rest = tuple(svc for svc in p.services if svc.name != MODEM_WATCH)
    files = tuple(f for f in p.files if f.path != layout.modem_watch_config)
    if settings.gateway.mac is not None:
        return dataclasses.replace(p, files=files, services=rest)
    gw = next(o for o in p.kernel if isinstance(o, Veth) and o.name == GW_DEV)
    config = WatchConfig(host_ns=host_ns, uplink=settings.ports.uplink, admin_dev=ADMIN_DEV,
                         admin_ip=str(settings.admin.address), gateway_ip=str(settings.gateway.ip),
                         gw_ns=gw.ns, gw_dev=GW_DEV, learned=layout.gateway_file, events=layout.health_events,
                         state_dir=layout.state_dir, run_dir=layout.run_dir, runner=runner,
                         link_file=layout.modem_watch_link)
    config_file = ConfigFile(layout.modem_watch_config, json.dumps(config.to_json(), indent=1) + "\n")
    spec = ServiceSpec(
        name=MODEM_WATCH,
        argv=(layout.python, "-m", "appliance.box.modemwatch", "--config", config_file.path),
        netns=None,
        cwd=layout.state_dir,
        revision=config_file.digest,
    )
    return dataclasses.replace(p, files=(*files, config_file), services=(*rest, spec))


def dhcp_settings(s: Settings, layout: Layout) -> kea.DhcpSettings:
    """Kea's settings: the document's `dhcp` section, bound to this box.

    Kea serves the LAN on gw0, which carries the gateway's address; router
    and DNS servers default to the gateway (the modem, as far as clients know).
    """
    d = s.dhcp
    return kea.DhcpSettings(
        subnet=str(s.lan.prefix),
        pools=tuple((str(p.start), str(p.end)) for p in d.pools),
        router=str(s.router),
        dns_servers=tuple(str(ip) for ip in s.dns_servers),
        paths=layout.kea,
        lease_time=d.lease_time,
        domain=d.options.domain,
        ntp=tuple(str(ip) for ip in d.options.ntp),
        reservations=tuple(kea.Reservation(lease.mac, str(lease.ip), lease.hostname) for lease in d.static_leases),
        interface=GW_DEV,
        hooks_dir=layout.kea_hooks_dir,
    )


def serves_dhcp6(s: Settings) -> bool:
    """Whether gw0 answers DHCPv6 as the modem: with `ipv6.policy: invisible`, the one
    policy that passes IPv6 (the modem's RAs reach the home, so its clients ask DHCPv6)."""
    return s.ipv6.policy != "drop"


def dhcp6_settings(s: Settings, gw_mac: str, layout: Layout) -> dhcpkit.Dhcp6Settings:
    """The DHCPv6 server's settings: the modem's MAC and (EUI-64) link-local, the search
    domain, the static leases that have an IPv6 address. DNS servers and the M flag come
    from the modem's RA, which the server follows (`dhcpkit_config.following`)."""
    return dhcpkit.Dhcp6Settings(
        server_mac=gw_mac,
        reply_from=dhcpkit.eui64_link_local(gw_mac),
        dns_servers=(),
        paths=layout.dhcp6,
        domain=s.dhcp.options.domain,
        static_leases=tuple(dhcpkit.StaticLease6(lease.mac, str(lease.ip6))
                            for lease in s.dhcp.static_leases if lease.ip6 is not None),
        interface=GW_DEV,
    )


def dhcp6_service(dhcp6: dhcpkit.Dhcp6Settings, layout: Layout) -> tuple[ConfigFile, ServiceSpec]:
    """The DHCPv6 server's settings file and its service in gw: our wrapper around dhcpkit
    (`appliance.services.dhcp.dhcp6`), which renders dhcpkit's files itself as the modem's RA says."""
    config = ConfigFile(dhcp6.paths.config, json.dumps(dhcp6.to_json(), indent=1) + "\n")
    spec = ServiceSpec(
        name="dhcp6",
        argv=(layout.python, "-m", "appliance.services.dhcp.dhcp6", "--config", dhcp6.paths.config),
        netns=GW_NS,
        cwd=layout.dhcp6_dir,
        revision=config.digest,
        identity=DHCP6,
        writable=(layout.dhcp6_dir, layout.dhcp6_run_dir),
        # An Information-request as a client's, through dhcpkit's workers, then
        # the server's word (it may stand aside for the modem); two misses
        # before the modem's DHCPv6 is let in, as for Kea.
        probe=Probe("dhcp6", f"[::1]:{DHCP6_SERVER_PORT}", netns=GW_NS, name=dhcp6.paths.status, timeout=1.0,
                    fall=2, rise=2, restart_after=8, bit=HEALTH_DHCP6),
    )
    return config, spec


def relay_settings(s: Settings, layout: Layout) -> RelaySettings:
    """The relay's settings: the document's `relay` section, bound to this box.

    It resolves real addresses through the modem (its DNS from vproxy goes
    out of the uplink by the flows), finds domains through the DNS server's
    control socket, and never serves the modem itself.
    """
    data = (s.relay or RelaySettings()).model_dump(mode="json")
    data["fake_range"] = str(s.vproxy.fake_range)
    if s.ipv6.policy == "invisible":
        data["fake_range6"] = str(s.vproxy.fake_range6)
    data["dns_control"] = layout.dns_socket
    data["fakeip_db"] = layout.fakeip_db
    data["control_socket"] = layout.relay_socket
    data["fast_path"]["interfaces"] = [VPROXY_DEV]
    # vproxy has no IPv6 address the modem routes to (its IPv6 stays on the home
    # side: "IPv6" in DESIGN.md), so IPv6 clients' direct connections leave over
    # IPv4, and the fast path's ip6 table has nothing to map.
    data["direct6"] = False
    if not data["resolvers"]:
        data["resolvers"] = [str(s.gateway.ip)]
    if str(s.gateway.ip) not in data["deny_clients"]:
        data["deny_clients"] = [*data["deny_clients"], f"{s.gateway.ip}/32"]
    return RelaySettings.model_validate(data)


HOME_IPV6 = ("2000::/3", "fc00::/7", "fe80::/10")


def dns_settings(s: Settings, layout: Layout) -> DnsSettings:
    """The DNS service's settings: the document's `dns` section, bound to this box.

    Without a `dns` section the box answers like the modem did: everything
    forwarded to the modem, nothing filtered. The fake-IP range, the files
    and the local names always follow the rest of the document.
    """
    base = s.dns if s.dns is not None else DnsSettings(upstreams=[{"url": f"udp://{s.gateway.ip}"}])
    data = base.model_dump(mode="json")
    data["fake_ip"]["network"] = str(s.vproxy.fake_range)
    if s.ipv6.policy == "invisible":
        data["fake_ip"]["network6"] = str(s.vproxy.fake_range6)
        listen6 = f"[{VPROXY_DNS6}]:53"
        if listen6 not in data["listen"]:
            data["listen"] = [*data["listen"], listen6]
        # IPv6 clients come from the home side only (the flows steer DNS for the
        # modem's MAC; nothing from the uplink is addressed to it), with whatever
        # prefix the modem announces today: every unicast range a home host can hold.
        data["allow_clients"] += [n for n in HOME_IPV6 if n not in data["allow_clients"]]
    data["fake_ip"]["db_path"] = layout.fakeip_db
    data["control_socket"] = layout.dns_socket
    data["query_log"]["dir"] = layout.dns_querylog_dir
    data["series_file"] = layout.series_file("dns")
    # The home's queries reach vproxy on vproxy0: the kernel cache answers there, as the
    # address the query was sent to (the gateway's, or any with dns.intercept all).
    data["kernel_cache_device"] = VPROXY_DEV
    data["kernel_cache_answer_as"] = ["0.0.0.0/0" if data["intercept"] == "all" else f"{s.gateway.ip}/32"]
    if s.ipv6.policy == "invisible":
        # vproxy sends every IPv6 query it gets to the server (its nftables dnat, the fake
        # range aside): the flows steer only those to the modem's MAC there.
        data["kernel_cache_answer_as"].append("::/0")
    data["lists_dir"] = layout.dns_lists_dir
    # The devices the datapath has off (paused, or by a schedule) get every name blocked too.
    data["paused_files"] = [layout.datapath_paused, layout.devices_scheduled]
    # The modem never gets an answer (the second lock behind the flows' DNS guard).
    if f"{s.gateway.ip}/32" not in data["deny_clients"]:
        data["deny_clients"] = [*data["deny_clients"], f"{s.gateway.ip}/32"]
    # The LAN's own prefix is never an answer for a public name (rebinding), whatever it is;
    # nor are the fake ranges: only the box hands those out (its own answers are not checked),
    # an upstream's would send a client to the relay with an address it never gave.
    fakes = [str(s.vproxy.fake_range)] + ([str(s.vproxy.fake_range6)] if s.ipv6.policy == "invisible" else [])
    data["rebind"]["networks"] = sorted({*data["rebind"]["networks"], str(s.lan.prefix), *fakes})
    if s.ipv6.policy == "invisible":
        # The LAN's IPv6 prefix is the modem's to choose and change: the DNS
        # service follows the RA the DHCPv6 service keeps, without an apply.
        data["rebind"]["prefixes_file"] = layout.dhcp6.ra
    ln = data["local_names"]
    ln["leases_file"] = layout.kea.leases
    if s.dhcp.options.domain:
        ln["domain"] = s.dhcp.options.domain
    known = {h["hostname"] for h in ln["static"]}
    ln["static"] += [{"hostname": l.hostname, "ip": str(ip), "mac": l.mac}
                     for l in s.dhcp.static_leases if l.hostname and l.hostname not in known
                     for ip in (l.ip, *((l.ip6,) if l.ip6 is not None and s.ipv6.policy == "invisible" else ()))]
    return DnsSettings.model_validate(data)


def kernel_objects(settings: Settings, gw_mac: str, uplink_mac: str,
                   relay: RelaySettings) -> tuple[Object | BridgePort, ...]:
    s = settings
    ipv6 = s.ipv6.policy == "invisible"
    plen = s.lan.prefix.prefixlen
    gw = str(s.gateway.ip)
    up, down = s.ports.uplink, s.ports.downlink
    host_ports = (up, down, BRIDGE, ADMIN_PORT, VGW_PORT, VPROXY_PORT, ADMIN_DEV)
    return (
        Namespace(GW_NS),
        Namespace(VPROXY_NS),
        Bridge(None, BRIDGE, derived_mac(BRIDGE)),
        # The admin port carries the uplink NIC's MAC; were the NIC to keep it
        # too, the Linux bridge would hold it as a local address and deliver
        # frames for the admin address to itself instead of to the admin port.
        # The NIC's own MAC never shows on the wire, so it takes another.
        BridgePort(None, up, BRIDGE, mac=derived_mac(f"nic:{up}"), original_mac=uplink_mac),
        BridgePort(None, down, BRIDGE),
        Veth(None, ADMIN_DEV, None, ADMIN_PORT, mac=uplink_mac, peer_mac=derived_mac(ADMIN_PORT),
             peer_master=BRIDGE),
        Veth(GW_NS, GW_DEV, None, VGW_PORT, mac=gw_mac, peer_mac=derived_mac(VGW_PORT), peer_master=BRIDGE),
        Veth(VPROXY_NS, VPROXY_DEV, None, VPROXY_PORT, mac=s.vproxy.mac, peer_mac=derived_mac(VPROXY_PORT),
             peer_master=BRIDGE),
        Address(None, ADMIN_DEV, f"{s.admin.address}/{plen}"),
        Address(GW_NS, GW_DEV, f"{gw}/{plen}"),
        Address(VPROXY_NS, VPROXY_DEV, f"{s.vproxy.address}/{plen}"),
        RouteEntry(None, Route("default", via=gw, dev=ADMIN_DEV)),
        RouteEntry(VPROXY_NS, Route(str(s.vproxy.fake_range), dev="lo", type="local", table="local")),
        RouteEntry(VPROXY_NS, Route("default", via=gw, dev=VPROXY_DEV)),
        # No route in gw: it answers DHCP on its link and talks to no one else.
        Sysctls(None, (
            # The box speaks no IPv6 on the LAN: no link-local or DAD chatter.
            *((f"net.ipv6.conf.{dev}.disable_ipv6", "1") for dev in host_ports),
            # Only the admin address, only on admin0, is ever an ARP sender/target.
            (f"net.ipv4.conf.{ADMIN_DEV}.arp_announce", "2"),
            (f"net.ipv4.conf.{ADMIN_DEV}.arp_ignore", "1"),
            (f"net.ipv4.conf.{ADMIN_DEV}.rp_filter", "1"),
            # The bridge device must never answer ARP for the admin address
            # (Linux answers for any local address on any link by default).
            (f"net.ipv4.conf.{BRIDGE}.arp_ignore", "8"),
            # Bridged frames must not be seen by the host's iptables/arptables.
            ("net.bridge.bridge-nf-call-iptables", "0"),
            ("net.bridge.bridge-nf-call-ip6tables", "0"),
            ("net.bridge.bridge-nf-call-arptables", "0"),
        )),
        Sysctls(GW_NS, (
            *(gw_ipv6_sysctls() if serves_dhcp6(s) else (
                ("net.ipv6.conf.all.disable_ipv6", "1"),
                ("net.ipv6.conf.default.disable_ipv6", "1"))),
            ("net.ipv4.ip_forward", "0"),
            ("net.ipv4.conf.all.arp_announce", "2"),
            ("net.ipv4.conf.all.arp_ignore", "1"),
            ("net.ipv4.conf.all.rp_filter", "1"),
        )),
        # After its sysctls: IPv6 on, quiet.
        *((Address(GW_NS, GW_DEV, f"{eui64_link_local(gw_mac)}/64"),) if serves_dhcp6(s) else ()),
        Sysctls(VPROXY_NS, (
            *(vproxy_ipv6_defaults() if ipv6 else (
                ("net.ipv6.conf.all.disable_ipv6", "1"),
                ("net.ipv6.conf.default.disable_ipv6", "1"))),
            # Forwarding carries the relay's kernel fast path (direct routes
            # NATed); the forward chain lets nothing else through.
            ("net.ipv4.ip_forward", "1" if relay.fast_path.enabled else "0"),
            # Fast-path packets leave by the link they came in on: that is no
            # reason to tell the client of a better route.
            ("net.ipv4.conf.all.send_redirects", "0"),
            (f"net.ipv4.conf.{VPROXY_DEV}.send_redirects", "0"),
            # vproxy's own sockets keep clear of the ports the fast path NATs to.
            ("net.ipv4.ip_local_port_range", "{} {}".format(*relay_nft.LOCAL_PORTS)),
            # A fake IP (local route) must never be an ARP sender address.
            ("net.ipv4.conf.all.arp_announce", "2"),
            (f"net.ipv4.conf.{VPROXY_DEV}.arp_announce", "2"),
            ("net.ipv4.conf.all.arp_ignore", "1"),
            (f"net.ipv4.conf.{VPROXY_DEV}.arp_ignore", "1"),
            # Loose: TPROXY (issue 7) takes packets for addresses routed to lo.
            ("net.ipv4.conf.all.rp_filter", "2"),
            (f"net.ipv4.conf.{VPROXY_DEV}.rp_filter", "2"),
        )),
        NftTable(VPROXY_NS, "ip", NFT_TABLE, vproxy_nft_body(s, relay)),
        NftTable(None, "inet", NFT_TABLE, host_nft_body(s, gw_mac)),
        *(vproxy_ipv6_objects(s, relay) if ipv6 else ()),
    )


def vproxy_ipv6_defaults() -> tuple[tuple[str, str], ...]:
    """vproxy's namespace-wide IPv6 settings with `ipv6.policy: invisible`, set
    before its links exist: a new link makes no address of its own (no DAD, RS)."""
    return tuple((f"net.ipv6.conf.default.{k}", v) for k, v in _QUIET_IPV6) + (
        ("net.ipv6.conf.default.disable_ipv6", "0"),)


# Each set before IPv6 comes on, in this order (sysctl writes them in order).
_QUIET_IPV6 = (("addr_gen_mode", "1"), ("accept_dad", "0"), ("accept_ra", "0"),
               ("router_solicitations", "0"), ("forwarding", "0"))


def vproxy_ipv6_objects(s: Settings, relay: RelaySettings) -> tuple[Object, ...]:
    """vproxy on IPv6 (`ipv6.policy: invisible`): the DNS server's address on lo,
    a link-local address of its own on vproxy0 (the source of its neighbour
    solicitations; the flows keep its IPv6 on the home side), every IPv6
    destination on-link (clients' addresses follow the modem's prefix), the
    IPv6 fake range local, and the ip6 table that DNATs DNS and hands the
    fake range to the relay."""
    link = tuple((f"net.ipv6.conf.{VPROXY_DEV}.{k}", v) for k, v in _QUIET_IPV6)
    return (
        Sysctls(VPROXY_NS, (*link, (f"net.ipv6.conf.{VPROXY_DEV}.disable_ipv6", "0"),
                            ("net.ipv6.conf.lo.disable_ipv6", "0"))),
        Address(VPROXY_NS, "lo", f"{VPROXY_DNS6}/128"),
        Address(VPROXY_NS, VPROXY_DEV, f"{eui64_link_local(s.vproxy.mac)}/64"),
        RouteEntry(VPROXY_NS, Route("::/0", dev=VPROXY_DEV)),
        RouteEntry(VPROXY_NS, Route(str(s.vproxy.fake_range6), dev="lo", type="local", table="local")),
        NftTable(VPROXY_NS, "ip6", NFT_TABLE, vproxy_nft6_body(s, relay)),
    )


def intercepts_all(s: Settings) -> bool:
    return s.dns is not None and s.dns.intercept == "all"


def vproxy_nft6_body(s: Settings, relay: RelaySettings) -> str:
    fake6 = s.vproxy.fake_range6
    return "\n".join([
        "  chain dns_redirect {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        # The flows send here only DNS for the modem's MAC: any of its addresses.
        f"    ip6 daddr != {fake6} udp dport 53 dnat to [{VPROXY_DNS6}]:53",
        f"    ip6 daddr != {fake6} tcp dport 53 dnat to [{VPROXY_DNS6}]:53",
        # dns.intercept all: DoT and DoQ refused as the address asked (nothing listens on 853).
        *([f"    ip6 daddr != {fake6} {p} dport 853 dnat to [{VPROXY_DNS6}]:853" for p in ("udp", "tcp")]
          if intercepts_all(s) else []),
        "  }",
        relay_nft.chain6(relay, [VPROXY_DEV], str(fake6)),
        "  chain forward {",
        "    type filter hook forward priority filter; policy drop;",
        "  }",
        # vproxy joins no group anyone needs to know of: no MLD report leaves it
        # (its link-local address's solicited-node group would be announced).
        "  chain output {",
        "    type filter hook output priority filter; policy accept;",
        "    icmpv6 type { mld-listener-report, mld2-listener-report, mld-listener-done } drop",
        "  }",
    ])


def gw_ipv6_sysctls() -> tuple[tuple[str, str], ...]:
    """gw0 with IPv6 for DHCPv6, as the modem: the modem's EUI-64 link-local is planned
    (`kernel_objects`), not made by the kernel, which keeps a link-local made from the old
    MAC when the modem and so gw0's MAC change; it never announces itself (no DAD, no
    router solicitation, no SLAAC of its own)."""
    quiet = (("accept_dad", "0"), ("dad_transmits", "0"), ("accept_ra", "0"), ("autoconf", "0"),
             ("router_solicitations", "0"), ("addr_gen_mode", "1"))
    return (
        *((f"net.ipv6.conf.{scope}.{k}", v) for scope in ("default", GW_DEV) for k, v in quiet),
        ("net.ipv6.conf.default.disable_ipv6", "1"),
        # ::1 for the health probe's listener; gw0 last, once it is quiet.
        ("net.ipv6.conf.lo.disable_ipv6", "0"),
        (f"net.ipv6.conf.{GW_DEV}.disable_ipv6", "0"),
        # Echo requests to the modem's link-local reach gw0 too: the modem answers them.
        ("net.ipv6.icmp.echo_ignore_all", "1"),
    )


def vproxy_nft_body(s: Settings, relay: RelaySettings) -> str:
    gw = s.gateway.ip
    if intercepts_all(s):
        # The flows send here the home's DNS to any address past the modem (and to the fake
        # range, which is the relay's); the reply leaves as the address asked (conntrack).
        # Nothing listens on 853: the kernel refuses DoT (a reset) and DoQ (port unreachable)
        # as the address asked.
        dst = f"ip daddr != {s.vproxy.fake_range}"
        redirect = [f"    {dst} {p} dport {port} redirect to :{port}" for port in (53, 853) for p in ("udp", "tcp")]
    else:
        # The seed's REDIRECT: DNS to the gateway is answered by the local server.
        redirect = [f"    ip daddr {gw} udp dport 53 redirect to :53", f"    ip daddr {gw} tcp dport 53 redirect to :53"]
    return "\n".join([
        "  chain dns_redirect {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        *redirect,
        "  }",
        # The seed's step 3: one TPROXY socket takes every connection to the fake range.
        relay_nft.chain(relay, [VPROXY_DEV]),
        # vproxy is no router: it forwards only what the relay's fast path NATed.
        "  chain forward {",
        "    type filter hook forward priority filter; policy drop;",
        f"    {relay_nft.FAST_PATH_MATCH} accept",
        "  }",
    ])


def host_nft_body(s: Settings, gw_mac: str) -> str:
    # Everything from the uplink side reaches the box with the modem's MAC as
    # source (the flow guard already drops it by in_port; this is the second
    # lock, for frames that took another way).
    ports = ", ".join(str(p) for p in s.admin.guarded_ports)
    lines = [
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        # The bridge device holds no address: nothing may reach the box's
        # stack through it, or the box would answer with the bridge's MAC.
        f'    iifname "{BRIDGE}" drop',
    ]
    if ports:
        lines.append(f'    iifname "{ADMIN_DEV}" ether saddr {gw_mac} tcp dport {{ {ports} }} drop')
    lines.append("  }")
    return "\n".join(lines)


# ---------------------------------------------------------------- text form

def _render_obj(o: Object | BridgePort) -> list[str]:
    ns = lambda n: n or "-"  # noqa: E731
    if isinstance(o, Veth):
        return [f"veth {ns(o.ns)}/{o.name} mac {o.mac} <-> {ns(o.peer_ns)}/{o.peer} mac {o.peer_mac}"
                f" master {o.peer_master or '-'}"]
    if isinstance(o, Bridge):
        return [f"bridge {ns(o.ns)}/{o.name} mac {o.mac}"]
    if isinstance(o, BridgePort):
        return [f"bridge-port {ns(o.ns)}/{o.name} master {o.master}"]
    if isinstance(o, Sysctls):
        return [f"sysctl {ns(o.ns)}: {k}={v}" for k, v in o.values]
    if isinstance(o, NftTable):
        head = f"nft {ns(o.ns)}: table {o.family} {o.name}"
        return [head] + [f"{head} | {line}" for line in o.body.splitlines()]
    if isinstance(o, Address):
        return [f"address {ns(o.ns)}/{o.dev} {o.cidr}"]
    if isinstance(o, RouteEntry):
        r = o.route
        return [f"route {ns(o.ns)}: {'local ' if r.type == 'local' else ''}{r.dst}"
                f"{' via ' + r.via if r.via else ''}{' dev ' + r.dev if r.dev else ''}"
                f"{' table ' + r.table if r.table != 'main' else ''}"]
    return [o.key()]


def render(p: Plan) -> str:
    """A stable text form of the plan: one fact per line."""
    out = ["# kernel"]
    for o in p.kernel:
        out += _render_obj(o)
    out.append("# switch")
    out += [f"port {sp.name} = {sp.number} ({sp.ns or '-'}/{sp.link})" for sp in p.switch.ports]
    out += [f"flow {line}" for line in p.switch.flow_text(comments=False).splitlines()]
    out.append("# files")
    out += [f"dir {d}" for d in p.directories]
    for cf in p.files:
        out.append(f"file {cf.path} mode {cf.mode:o} sha256:{cf.digest}")
        out += [f"file {cf.path} | {line}" for line in cf.content.splitlines()]
    out.append("# services")
    for svc in p.services:
        env = " ".join(f"{k}={v}" for k, v in svc.env)
        out.append(f"service {svc.name} netns={svc.netns or '-'} revision={svc.revision}"
                   f" argv={' '.join(svc.argv)} env={env} cwd={svc.cwd or '-'}")
    return "\n".join(out) + "\n"


def diff(old: Plan | None, new: Plan) -> str:
    """What `apply --dry-run` prints: a unified diff of the two renderings."""
    a = render(old).splitlines(keepends=True) if old else []
    return "".join(difflib.unified_diff(a, render(new).splitlines(keepends=True), "current", "planned", n=0))

