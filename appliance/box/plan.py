"""The box's plan: settings + what was observed -> plain data, no I/O.

`plan(settings, observed)` says everything the box must hold for the seed's
design (steps 1, 5, 6, 7 of `init-nics.sh`/`init-flow.sh`):

- kernel objects for the reconciler (`appliance.kernel.desired`): the
  namespaces `gw` and `vproxy`, the bridge, veth pairs with fixed MACs
  (`gw0` = the modem's IP and MAC, `admin0` = the uplink NIC's MAC and the
  admin address, `vproxy0` = its own), the NICs' bridge membership
  (`BridgePort`), addresses, routes, sysctls, nftables tables;
- the switch: the port map (uplink, downlink, admin, vgw, vproxy -> OpenFlow
  port numbers and link names) and the flow table in `ovs-ofctl` syntax;
- config files and service definitions (Kea DHCPv4 in `gw`).

The apply layer walks `Plan.kernel` (in the order given), writes
`Plan.files`, loads `Plan.switch`, then starts `Plan.services`.
`render(plan)` is a stable text form; `diff(old, new)` is what
`apply --dry-run` prints.
"""
from __future__ import annotations

import difflib
import json
import hashlib
import sys
from dataclasses import dataclass, field
from typing import Mapping

from appliance.box.settings import Settings
from appliance.services.dns.settings import DnsSettings
from appliance.services.relay import nft as relay_nft
from appliance.services.relay.settings import RelaySettings
from appliance.kernel.base import Route
from appliance.kernel.desired import (  # noqa: F401 - BridgePort is part of a plan's vocabulary
    Address, Bridge, BridgePort, Namespace, NftTable, Object, RouteEntry, Sysctls, Veth,
)
from appliance.services.dhcp import config as kea
from appliance.services.supervisor import ServiceSpec

GW_NS, VPROXY_NS = "gw", "vproxy"
BRIDGE = "vswitch"
ADMIN_DEV, GW_DEV, VPROXY_DEV = "admin0", "gw0", "vproxy0"  # the stack-side ends
# The bridge-side ends are named as the flow table names the ports.
ADMIN_PORT, VGW_PORT, VPROXY_PORT = "admin", "vgw", "vproxy"

# OpenFlow port numbers of the box's ports; flows name them by these names.
PORT_NUMBERS: dict[str, int] = {"uplink": 1, "downlink": 2, "admin": 3, "vgw": 4, "vproxy": 5}
NFT_TABLE = "appliance"

# Priorities of the generated flows, highest first. Every rule that can
# overlap another has its own priority, so nothing depends on the undefined
# order of equal-priority flows (the seed's uplink-DHCP drops tied with the
# generic DHCP rules and the modem's offers reached clients).
P_IPV6_DROP = 1000
P_GW_LOOP_DROP = 990
P_UPLINK_DHCP_SERVER_DROP = 981
P_UPLINK_DHCP_CLIENT_DROP = 980
P_VPROXY_ARP_GW_DROP = 970
P_CONSOLE_GUARD = 960  # one flow per guarded TCP port: disjoint by tp_dst
P_DHCP_TO_CLIENT = 950
P_DHCP_TO_SERVER = 940
P_GW_BROADCAST = 930
P_ARP_TO_GW_MAC = 920
P_ARP_FOR_GW = 910
P_VPROXY_DNS_UDP = 901
P_VPROXY_DNS_TCP = 900
P_DNS_UDP = 891
P_DNS_TCP = 890
P_FAKE_RANGE_GUARD = 885  # the relay serves the home side only
P_FAKE_RANGE = 880
P_TO_GW_MAC = 200
P_TO_ADMIN_MAC = 100
P_NORMAL = 0


class PlanError(ValueError):
    """The plan cannot be made; `field` names the setting or observation."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Layout:
    """Where the box keeps state (survives reboots) and runtime files."""

    state_dir: str = "/var/lib/appliance"
    run_dir: str = "/run/appliance"
    kea_hooks_dir: str = kea.KEA_HOOKS_DIR
    python: str = sys.executable  # runs the box's own services (DNS, relay)

    @property
    def kea(self) -> kea.KeaPaths:
        return kea.KeaPaths.under(self.state_dir, self.run_dir)


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
class FlowEntry:
    why: str  # one line, printed as a comment above the flow
    text: str  # one flow in ovs-ofctl add-flow syntax


@dataclass(frozen=True)
class Switch:
    bridge: str
    ports: tuple[SwitchPort, ...]
    flows: tuple[FlowEntry, ...]
    custom_flows: str = ""

    @property
    def port_map(self) -> dict[str, int]:
        return {p.name: p.number for p in self.ports}

    def flow_text(self, comments: bool = True) -> str:
        """The whole table as an `ovs-ofctl add-flows` file."""
        lines = []
        for f in self.flows:
            if comments:
                lines.append(f"# {f.why}")
            lines.append(f.text)
        if self.custom_flows.strip():
            if comments:
                lines.append("# custom flows (settings: flows.custom)")
            lines.extend(line for line in self.custom_flows.strip().splitlines()
                         if comments or (line.strip() and not line.lstrip().startswith("#")))
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ConfigFile:
    path: str
    content: str
    mode: int = 0o644

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


def derived_mac(name: str) -> str:
    """A stable, locally administered unicast MAC for a port the seed leaves unfixed."""
    h = hashlib.sha256(f"appliance-port:{name}".encode()).digest()
    return ":".join(f"{b:02x}" for b in ((h[0] & 0xFC) | 0x02, *h[1:6]))


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
        SwitchPort("admin", PORT_NUMBERS["admin"], None, ADMIN_PORT),
        SwitchPort("vgw", PORT_NUMBERS["vgw"], None, VGW_PORT),
        SwitchPort("vproxy", PORT_NUMBERS["vproxy"], None, VPROXY_PORT),
    )
    switch = Switch(BRIDGE, ports, flow_table(settings, gw_mac, uplink_mac), settings.flows.custom)

    kpaths = layout.kea
    kea_text = kea.render(kea.kea_config(settings, kpaths, hooks_dir=layout.kea_hooks_dir))
    kea_file = ConfigFile(kpaths.config, kea_text)
    dns_file = ConfigFile(f"{layout.state_dir}/dns/dns.json",
                          json.dumps(dns_settings(settings, layout).model_dump(mode="json"), indent=1) + "\n")
    relay = relay_settings(settings, layout)
    relay_file = ConfigFile(f"{layout.state_dir}/dns/relay.json",
                            json.dumps(relay.model_dump(mode="json"), indent=1) + "\n")
    services = (
        ServiceSpec(
            name="dhcp4",
            argv=("kea-dhcp4", "-c", kpaths.config),
            netns=GW_NS,
            env=tuple(sorted(kpaths.env().items())),
            cwd=f"{layout.state_dir}/dhcp",
            revision=kea_file.digest,
            ready=("udp/67",),
        ),
        ServiceSpec(
            name="dns",
            argv=(layout.python, "-m", "appliance.services.dns", "--config", dns_file.path),
            netns=VPROXY_NS,
            cwd=f"{layout.state_dir}/dns",
            revision=dns_file.digest,
            ready=("udp/53", "tcp/53"),
        ),
        ServiceSpec(
            name="relay",
            argv=(layout.python, "-m", "appliance.services.relay", "--config", relay_file.path),
            netns=VPROXY_NS,
            cwd=f"{layout.state_dir}/dns",
            revision=relay_file.digest,
            ready=(f"tcp/{relay.listen_address()[1]}",),
        ),
    )
    return Plan(
        kernel=kernel_objects(settings, gw_mac, uplink_mac),
        switch=switch,
        directories=(f"{layout.state_dir}/dhcp", kpaths.run_dir, f"{layout.state_dir}/dns"),
        files=(kea_file, dns_file, relay_file),
        services=services,
    )


def relay_settings(s: Settings, layout: Layout) -> RelaySettings:
    """The relay's settings: the document's `relay` section, bound to this box.

    It resolves real addresses through the modem (its DNS from vproxy goes
    out of the uplink by the flows), finds domains through the DNS server's
    control socket, and never serves the modem itself.
    """
    data = (s.relay or RelaySettings()).model_dump(mode="json")
    data["fake_range"] = str(s.vproxy.fake_range)
    data["dns_control"] = f"{layout.run_dir}/dns.sock"
    data["fakeip_db"] = f"{layout.state_dir}/dns/fakeip.sqlite3"
    data["control_socket"] = f"{layout.run_dir}/relay.sock"
    data["fast_path"]["interfaces"] = [VPROXY_DEV]
    if not data["resolvers"]:
        data["resolvers"] = [str(s.gateway.ip)]
    if str(s.gateway.ip) not in data["deny_clients"]:
        data["deny_clients"] = [*data["deny_clients"], f"{s.gateway.ip}/32"]
    return RelaySettings.model_validate(data)


def dns_settings(s: Settings, layout: Layout) -> DnsSettings:
    """The DNS service's settings: the document's `dns` section, bound to this box.

    Without a `dns` section the box answers like the modem did: everything
    forwarded to the modem, nothing filtered. The fake-IP range, the files
    and the local names always follow the rest of the document.
    """
    base = s.dns if s.dns is not None else DnsSettings(upstreams=[{"url": f"udp://{s.gateway.ip}"}])
    data = base.model_dump(mode="json")
    data["fake_ip"]["network"] = str(s.vproxy.fake_range)
    data["fake_ip"]["db_path"] = f"{layout.state_dir}/dns/fakeip.sqlite3"
    data["control_socket"] = f"{layout.run_dir}/dns.sock"
    ln = data["local_names"]
    ln["leases_file"] = layout.kea.leases
    if s.dhcp.options.domain:
        ln["domain"] = s.dhcp.options.domain
    known = {h["hostname"] for h in ln["static"]}
    ln["static"] += [{"hostname": l.hostname, "ip": str(l.ip), "mac": l.mac}
                     for l in s.dhcp.static_leases if l.hostname and l.hostname not in known]
    return DnsSettings.model_validate(data)


def kernel_objects(settings: Settings, gw_mac: str, uplink_mac: str) -> tuple[Object | BridgePort, ...]:
    s = settings
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
            ("net.ipv6.conf.all.disable_ipv6", "1"),
            ("net.ipv6.conf.default.disable_ipv6", "1"),
            ("net.ipv4.ip_forward", "0"),
            ("net.ipv4.conf.all.arp_announce", "2"),
            ("net.ipv4.conf.all.arp_ignore", "1"),
            ("net.ipv4.conf.all.rp_filter", "1"),
        )),
        Sysctls(VPROXY_NS, (
            ("net.ipv6.conf.all.disable_ipv6", "1"),
            ("net.ipv6.conf.default.disable_ipv6", "1"),
            # Forwarding carries the relay's kernel fast path (direct routes
            # NATed); the forward chain lets nothing else through.
            ("net.ipv4.ip_forward", "1" if relay_settings(s, Layout()).fast_path.enabled else "0"),
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
        NftTable(VPROXY_NS, "ip", NFT_TABLE, vproxy_nft_body(s)),
        NftTable(None, "inet", NFT_TABLE, host_nft_body(s, gw_mac)),
    )


def vproxy_nft_body(s: Settings) -> str:
    gw = s.gateway.ip
    return "\n".join([
        "  chain dns_redirect {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        # The seed's REDIRECT: DNS to the gateway is answered by the local server.
        f"    ip daddr {gw} udp dport 53 redirect to :53",
        f"    ip daddr {gw} tcp dport 53 redirect to :53",
        "  }",
        # The seed's step 3: one TPROXY socket takes every connection to the fake range.
        relay_nft.chain(relay_settings(s, Layout()), [VPROXY_DEV]),
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


def flow_table(s: Settings, gw_mac: str, admin_mac: str) -> tuple[FlowEntry, ...]:
    """The seed's `init-flow.sh` for these settings, with strict priorities."""
    gw = s.gateway.ip
    vp = s.vproxy.mac
    f: list[FlowEntry] = []

    def add(why: str, priority: int, match: str, actions: str) -> None:
        match = f",{match}" if match else ""
        f.append(FlowEntry(why, f"priority={priority}{match},actions={actions}"))

    if s.ipv6.policy == "drop":
        add("IPv6 is not handled yet: drop it (ipv6.policy=drop)", P_IPV6_DROP, "ipv6", "drop")
    add("a frame from the gateway MAC to itself goes nowhere", P_GW_LOOP_DROP,
        f"dl_src={gw_mac},dl_dst={gw_mac}", "drop")
    add("DHCP from the modem never reaches the home (above the DHCP rules)", P_UPLINK_DHCP_SERVER_DROP,
        "udp,in_port=uplink,tp_src=67,tp_dst=68", "drop")
    add("DHCP requests from the modem side are not served", P_UPLINK_DHCP_CLIENT_DROP,
        "udp,in_port=uplink,tp_src=68,tp_dst=67", "drop")
    add("vproxy never ARPs as the gateway", P_VPROXY_ARP_GW_DROP,
        f"arp,in_port=vproxy,arp_spa={gw}", "drop")
    for port in s.admin.guarded_ports:
        add(f"console/SSH guard: nothing from the modem side connects to the box's TCP port {port}",
            P_CONSOLE_GUARD, f"tcp,in_port=uplink,dl_dst={admin_mac},tp_dst={port}", "drop")
    add("DHCP server -> client goes to the home side only", P_DHCP_TO_CLIENT,
        "udp,tp_src=67,tp_dst=68", "output:downlink")
    add("DHCP client -> server goes to the virtual gateway", P_DHCP_TO_SERVER,
        "udp,tp_src=68,tp_dst=67", "output:vgw")
    add("broadcasts with the gateway MAC never go back to the modem or vgw", P_GW_BROADCAST,
        f"dl_src={gw_mac},dl_dst=ff:ff:ff:ff:ff:ff", "output:downlink,output:admin,output:vproxy")
    add("ARP to the gateway MAC: the modem or vgw asked, so both get it", P_ARP_TO_GW_MAC,
        f"arp,dl_dst={gw_mac}", "output:uplink,output:vgw")
    add("ARP for the gateway IP is answered by the modem", P_ARP_FOR_GW,
        f"arp,arp_tpa={gw}", "output:uplink")
    add("DNS from vproxy to the gateway goes to the modem (UDP)", P_VPROXY_DNS_UDP,
        f"udp,in_port=vproxy,nw_dst={gw},tp_dst=53", "output:uplink")
    add("DNS from vproxy to the gateway goes to the modem (TCP)", P_VPROXY_DNS_TCP,
        f"tcp,in_port=vproxy,nw_dst={gw},tp_dst=53", "output:uplink")
    add("DNS to the gateway goes to vproxy (UDP)", P_DNS_UDP,
        f"udp,nw_dst={gw},tp_dst=53", f"mod_dl_dst:{vp},output:vproxy")
    add("DNS to the gateway goes to vproxy (TCP)", P_DNS_TCP,
        f"tcp,nw_dst={gw},tp_dst=53", f"mod_dl_dst:{vp},output:vproxy")
    add("the relay is no open proxy: the fake range is not reachable from the modem side",
        P_FAKE_RANGE_GUARD, f"ip,in_port=uplink,nw_dst={s.vproxy.fake_range}", "drop")
    add("the fake range goes to vproxy", P_FAKE_RANGE,
        f"ip,nw_dst={s.vproxy.fake_range}", f"mod_dl_dst:{vp},output:vproxy")
    add("other unicast to the gateway MAC goes to the modem", P_TO_GW_MAC,
        f"dl_dst={gw_mac}", "output:uplink")
    # Not in the seed (OVS has no such trap): a Linux bridge keeps each
    # port's MAC as its own, and admin0 shares the uplink NIC's MAC, so
    # NORMAL would hand frames for the box to the bridge device, not admin.
    add("frames for the box go straight to the admin port", P_TO_ADMIN_MAC,
        f"dl_dst={admin_mac}", "output:admin")
    add("everything else is switched normally", P_NORMAL, "", "NORMAL")
    return tuple(f)


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

