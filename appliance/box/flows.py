"""The box's flows: its own table (the seed's `init-flow.sh`), custom flows, and their checks.

The box's own flows are built as `Flow` objects, each with the one line
that says why it is there, and printed with the flow language's printer
(`add_flow_line`), never written as text and parsed back. Custom flows (the
settings' `flows.custom`) are parsed here and only here, against the box's
port names; the settings' validation, the plan, the console's lint and the
apply's risk check all use `parse_custom`.

With `failsafe: open` (the default) the flows that send clients to the
box's own services match the health register (reg15, loaded by the
datapath from the watchdog's heartbeat, `appliance.services.health`): DNS
is steered to vproxy only while bit 0 (DNS) is set, the DHCP guards hold
only while bit 1 (Kea) is set. When a bit clears (a failed probe, or no
heartbeat for 3 s) the lower flows take over and the modem serves the home
as it did before the box: DNS to the gateway goes to the modem, the
modem's DHCP reaches the home and the home's DHCP reaches the modem.
`failsafe: closed` leaves the register out: the box's services or nothing.

Priorities of the generated flows are all distinct where flows overlap, so
nothing depends on the undefined order of equal-priority flows (the seed's
uplink-DHCP drops tied with the generic DHCP rules and the modem's offers
reached clients); `lint` in the unit tests checks it.
"""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from typing import Iterable

from appliance.box.layout import ADMIN_PORT, PORT_NAMES, PORT_NUMBERS
from appliance.switch import fields as F
from appliance.switch.flows import All, Flood, Flow, Match, Normal, Output, SetField
from appliance.switch.lint import lint
from appliance.switch.parser import parse_flows

# Priorities of the generated flows, highest first.
P_IPV6_DROP = 1000
P_GW_LOOP_DROP = 990
P_UPLINK_DHCP6_SERVER_DROP = 985
P_UPLINK_DHCP6_CLIENT_DROP = 984
P_UPLINK_DHCP_SERVER_DROP = 981
P_UPLINK_DHCP_CLIENT_DROP = 980
P_VGW_NA_DROP = 976  # gw0 never answers for the modem's link-local address: the modem does
P_VGW_IPV6 = 975  # gw0's own IPv6 (DHCPv6 replies, its ND and MLD) goes to the home only
P_VPROXY_ARP_GW_DROP = 970
P_VPROXY_IPV6 = 965  # vproxy's own IPv6 (ND, MLD, answers) goes to the home side only
P_CONSOLE_GUARD = 960  # one flow per guarded TCP port: disjoint by tp_dst
P_DHCP6_TO_CLIENT = 951
P_DHCP_TO_CLIENT = 950
P_DHCP6_TO_SERVER = 945
P_DHCP_TO_SERVER = 940
P_DHCP6_TO_MODEM = 936  # only reached while the DHCPv6 server is unhealthy or stands aside
P_DHCP_TO_MODEM = 935  # only reached while Kea is unhealthy (failsafe: open)
P_GW_BROADCAST = 930
P_ARP_TO_GW_MAC = 920
P_ICMP6_TO_GW_MAC = 915  # ND answers to the modem's MAC: gw0 resolves the clients it replies to
P_ARP_FOR_GW = 910
P_VPROXY_DNS_UDP = 901
P_VPROXY_DNS_TCP = 900
P_DNS_GUARD_VPROXY = 897  # DNS serves the home side only: udp and tcp, disjoint by nw_proto
P_DNS_GUARD_GW = 896
P_DNS_UDP = 891
P_DNS_TCP = 890
P_DNS_ANY_UDP = 889  # dns.intercept: all: the home's port-53 queries to any address past the modem
P_DNS_ANY_TCP = 888
P_DOT = 887  # dns.intercept: all: DNS over TLS/QUIC, refused by vproxy; disjoint by nw_proto
P_FAKE_RANGE_GUARD = 885  # the relay serves the home side only
P_FAKE_RANGE = 880
P_TO_GW_MAC = 200
P_TO_ADMIN_MAC = 100
P_NORMAL = 0

BROADCAST = "ff:ff:ff:ff:ff:ff"

# The health register and its bits (c/dp_contract.h: DP_HEALTH_REG, dp_health).
HEALTH_REG = "reg15"
HEALTH_DNS, HEALTH_DHCP, HEALTH_RELAY, HEALTH_DHCP6 = 0, 1, 2, 3


def add_flow_line(flow: Flow) -> str:
    """A flow as a line of an `ovs-ofctl add-flows` file, with the box's port names.

    The printer writes dump-flows syntax (a space before `actions=`); an
    add-flows file separates them with a comma, as the box has always printed
    its table (in `apply --dry-run` and in the applied state).
    """
    text = flow.to_ofctl(PORT_NAMES)
    match, sep, actions = text.rpartition(" actions=")
    return f"{match},actions={actions}" if sep and match else text


@dataclass(frozen=True)
class FlowEntry:
    """One of the box's own flows and why it is there (printed as a comment above it)."""

    why: str
    flow: Flow

    @property
    def text(self) -> str:
        return add_flow_line(self.flow)


# ---------------------------------------------------------------- the box's own flows

def _mac(mac: str) -> int:
    return int(mac.replace(":", ""), 16)


def _ip(ip) -> int:
    return int(IPv4Address(str(ip)))


def _match(proto: str | None = None, *, nets: dict[str, IPv4Network | IPv6Network] | None = None,
           healthy: int | None = None, **exact) -> Match:
    """A match from readable values: `proto` is a shorthand (udp, arp ...), ports go by name;
    `healthy`: only while that bit of the health register is set."""
    values: dict[str, int] = {}
    masks: dict[str, int] = {}
    if healthy is not None:
        values[HEALTH_REG] = masks[HEALTH_REG] = 1 << healthy
    if proto:
        dl_type, nw_proto = F.SHORTHANDS[proto]
        values["dl_type"] = dl_type
        if nw_proto is not None:
            values["nw_proto"] = nw_proto
    for name, value in exact.items():
        kind = F.FIELD_BY_NAME[name].kind
        values[name] = (PORT_NUMBERS[value] if kind == F.PORT else _mac(value) if kind == F.MAC
                        else _ip(value) if kind == F.IPV4 else int(value))
    for name, net in (nets or {}).items():
        values[name], masks[name] = int(net.network_address), int(net.netmask)
    return Match(values, masks)


def _out(*ports: str) -> tuple[Output, ...]:
    return tuple(Output(PORT_NUMBERS[p]) for p in ports)


def box_flows(*, gateway_ip: IPv4Address, gateway_mac: str, admin_mac: str, vproxy_mac: str,
              fake_range: IPv4Network, guarded_ports: Iterable[int], drop_ipv6: bool,
              failsafe: str = "open", fake_range6: IPv6Network | None = None,
              dhcp6: bool = False, intercept_all: bool = False) -> tuple[FlowEntry, ...]:
    """The seed's `init-flow.sh` for these addresses, with strict priorities.

    `failsafe="open"`: DNS steering and the DHCP guards hold only while the
    health register says the box's DNS server and Kea answer.

    With IPv6 passing (`drop_ipv6` false, `ipv6.policy: invisible`) the same
    rules hold for IPv6: NORMAL carries the modem's RAs and neighbour
    discovery untouched; DNS to the gateway MAC (any of the modem's
    addresses: link-local, global, the RDNSS it announces) goes to vproxy;
    `fake_range6` goes to vproxy and never comes from the modem side; the
    console guard covers tcp6; vproxy's own IPv6 reaches the home side only.

    `dhcp6`: gw0 answers DHCPv6 as the modem (`appliance.services.dhcp.dhcp6`),
    guarded as DHCPv4 is; its guards hold while health bit 3 is set, which
    the watchdog also clears when the server stands aside for the modem.

    `intercept_all` (`dns.intercept: all`): the home's DNS to any address
    routed through the modem (by the gateway MAC, as IPv6 DNS always is) goes
    to vproxy too, and so does DNS over TLS and QUIC (port 853), which vproxy
    refuses as the address asked; under the same health bit, so a box whose
    DNS does not answer lets all of it through to the internet.
    """
    gw, vp = gateway_ip, vproxy_mac
    open_ = failsafe == "open"
    dns_ok = HEALTH_DNS if open_ else None
    dhcp_ok = HEALTH_DHCP if open_ else None
    to_vproxy = (SetField("dl_dst", _mac(vp)), *_out("vproxy"))
    f: list[FlowEntry] = []

    def add(why: str, priority: int, match: Match, actions: tuple = ()) -> None:
        f.append(FlowEntry(why, Flow(match=match, actions=actions, priority=priority)))

    if drop_ipv6:
        add("IPv6 is dropped (ipv6.policy=drop)", P_IPV6_DROP, _match("ipv6"))
    add("a frame from the gateway MAC to itself goes nowhere", P_GW_LOOP_DROP,
        _match(dl_src=gateway_mac, dl_dst=gateway_mac))
    add("DHCP from the modem never reaches the home (above the DHCP rules)"
        + (", while Kea answers" if open_ else ""), P_UPLINK_DHCP_SERVER_DROP,
        _match("udp", in_port="uplink", tp_src=67, tp_dst=68, healthy=dhcp_ok))
    add("DHCP requests from the modem side are not served", P_UPLINK_DHCP_CLIENT_DROP,
        _match("udp", in_port="uplink", tp_src=68, tp_dst=67))
    dhcp6_ok = HEALTH_DHCP6 if open_ else None
    if dhcp6:
        add("DHCPv6 from the modem never reaches the home (above the DHCPv6 rules)"
            + (", while the box's DHCPv6 serves" if open_ else ""), P_UPLINK_DHCP6_SERVER_DROP,
            _match("udp6", in_port="uplink", tp_src=547, tp_dst=546, healthy=dhcp6_ok))
        add("DHCPv6 requests from the modem side are not served", P_UPLINK_DHCP6_CLIENT_DROP,
            _match("udp6", in_port="uplink", tp_src=546, tp_dst=547))
        # gw0 holds the modem's link-local address (its DHCPv6 replies come from it), so its
        # kernel answers a client's neighbour solicitation for it as well as the modem, but
        # without the router flag: a client that hears that answer drops its default route
        # until the modem's next RA (RFC 4861 7.2.5), minutes on a real modem.
        add("gw0 never sends neighbour advertisements: the modem answers for its own address, "
            "as a router", P_VGW_NA_DROP, _match("icmp6", in_port="vgw", icmp_type=136))
        add("gw0 speaks IPv6 (DHCPv6 replies, its neighbour discovery, MLD) to the home only: "
            "never as the modem towards the modem", P_VGW_IPV6, _match("ipv6", in_port="vgw"), _out("downlink"))
        add("DHCPv6 server -> client goes to the home side only", P_DHCP6_TO_CLIENT,
            _match("udp6", tp_src=547, tp_dst=546), _out("downlink"))
        add("DHCPv6 client -> server goes to the virtual gateway" + (", while it serves" if open_ else ""),
            P_DHCP6_TO_SERVER, _match("udp6", tp_src=546, tp_dst=547, healthy=dhcp6_ok), _out("vgw"))
        if open_:
            add("failsafe: while the box's DHCPv6 does not serve, DHCPv6 client -> server goes to the modem",
                P_DHCP6_TO_MODEM, _match("udp6", tp_src=546, tp_dst=547), _out("uplink"))
        add("ICMPv6 to the gateway MAC (neighbour answers): the modem or gw0 asked, so both get it",
            P_ICMP6_TO_GW_MAC, _match("icmp6", dl_dst=gateway_mac), _out("uplink", "vgw"))
    add("vproxy never ARPs as the gateway", P_VPROXY_ARP_GW_DROP,
        _match("arp", in_port="vproxy", arp_spa=gw))
    if not drop_ipv6:
        add("vproxy's own IPv6 (neighbour discovery, MLD, DNS answers) goes to the home side only",
            P_VPROXY_IPV6, _match("ipv6", in_port="vproxy"), _out("downlink"))
    for port in guarded_ports:
        add(f"console/SSH guard: nothing from the modem side connects to the box's TCP port {port}",
            P_CONSOLE_GUARD, _match("tcp", in_port="uplink", dl_dst=admin_mac, tp_dst=port))
        if not drop_ipv6:
            add(f"console/SSH guard for IPv6: TCP port {port}",
                P_CONSOLE_GUARD, _match("tcp6", in_port="uplink", dl_dst=admin_mac, tp_dst=port))
    add("DHCP server -> client goes to the home side only", P_DHCP_TO_CLIENT,
        _match("udp", tp_src=67, tp_dst=68), _out("downlink"))
    add("DHCP client -> server goes to the virtual gateway" + (", while Kea answers" if open_ else ""),
        P_DHCP_TO_SERVER, _match("udp", tp_src=68, tp_dst=67, healthy=dhcp_ok), _out("vgw"))
    if open_:
        add("failsafe: while Kea does not answer, DHCP client -> server goes to the modem", P_DHCP_TO_MODEM,
            _match("udp", tp_src=68, tp_dst=67), _out("uplink"))
    add("broadcasts with the gateway MAC never go back to the modem or vgw", P_GW_BROADCAST,
        _match(dl_src=gateway_mac, dl_dst=BROADCAST), _out("downlink", "admin", "vproxy"))
    add("ARP to the gateway MAC: the modem or vgw asked, so both get it", P_ARP_TO_GW_MAC,
        _match("arp", dl_dst=gateway_mac), _out("uplink", "vgw"))
    add("ARP for the gateway IP is answered by the modem", P_ARP_FOR_GW,
        _match("arp", arp_tpa=gw), _out("uplink"))
    add("DNS from vproxy to the gateway goes to the modem (UDP)", P_VPROXY_DNS_UDP,
        _match("udp", in_port="vproxy", nw_dst=gw, tp_dst=53), _out("uplink"))
    add("DNS from vproxy to the gateway goes to the modem (TCP)", P_VPROXY_DNS_TCP,
        _match("tcp", in_port="vproxy", nw_dst=gw, tp_dst=53), _out("uplink"))
    for proto in ("udp", "tcp"):
        add(f"DNS guard: the modem side never queries the box's DNS server ({proto}, to vproxy)",
            P_DNS_GUARD_VPROXY, _match(proto, in_port="uplink", dl_dst=vp, tp_dst=53))
    for proto in ("udp", "tcp"):
        add(f"DNS guard: the modem side's DNS to the gateway is never steered to the box ({proto})",
            P_DNS_GUARD_GW, _match(proto, in_port="uplink", nw_dst=gw, tp_dst=53))
    while_ok = " while it answers (else the modem answers: failsafe)" if open_ else ""
    add(f"DNS to the gateway goes to vproxy (UDP){while_ok}", P_DNS_UDP,
        _match("udp", nw_dst=gw, tp_dst=53, healthy=dns_ok), to_vproxy)
    add(f"DNS to the gateway goes to vproxy (TCP){while_ok}", P_DNS_TCP,
        _match("tcp", nw_dst=gw, tp_dst=53, healthy=dns_ok), to_vproxy)
    if not drop_ipv6:
        # By MAC, not address: every address of the modem, whatever its prefix today.
        add(f"DNS over IPv6 to the gateway MAC goes to vproxy (UDP){while_ok}", P_DNS_UDP,
            _match("udp6", dl_dst=gateway_mac, tp_dst=53, healthy=dns_ok), to_vproxy)
        add(f"DNS over IPv6 to the gateway MAC goes to vproxy (TCP){while_ok}", P_DNS_TCP,
            _match("tcp6", dl_dst=gateway_mac, tp_dst=53, healthy=dns_ok), to_vproxy)
    if intercept_all:
        add(f"dns.intercept all: the home's DNS to any address past the modem goes to vproxy (UDP){while_ok}",
            P_DNS_ANY_UDP, _match("udp", in_port="downlink", dl_dst=gateway_mac, tp_dst=53, healthy=dns_ok),
            to_vproxy)
        add(f"dns.intercept all: the home's DNS to any address past the modem goes to vproxy (TCP){while_ok}",
            P_DNS_ANY_TCP, _match("tcp", in_port="downlink", dl_dst=gateway_mac, tp_dst=53, healthy=dns_ok),
            to_vproxy)
        for proto in ("tcp", "udp") + (() if drop_ipv6 else ("tcp6", "udp6")):
            add(f"dns.intercept all: DNS over TLS/QUIC goes to vproxy, which refuses it ({proto}){while_ok}",
                P_DOT, _match(proto, in_port="downlink", dl_dst=gateway_mac, tp_dst=853, healthy=dns_ok),
                to_vproxy)
    add("the relay is no open proxy: the fake range is not reachable from the modem side",
        P_FAKE_RANGE_GUARD, _match("ip", in_port="uplink", nets={"nw_dst": fake_range}))
    add("the fake range goes to vproxy", P_FAKE_RANGE, _match("ip", nets={"nw_dst": fake_range}), to_vproxy)
    if not drop_ipv6 and fake_range6 is not None:
        add("the relay is no open proxy: the IPv6 fake range is not reachable from the modem side",
            P_FAKE_RANGE_GUARD, _match("ipv6", in_port="uplink", nets={"ipv6_dst": fake_range6}))
        add("the IPv6 fake range goes to vproxy", P_FAKE_RANGE,
            _match("ipv6", nets={"ipv6_dst": fake_range6}), to_vproxy)
    add("other unicast to the gateway MAC goes to the modem", P_TO_GW_MAC,
        _match(dl_dst=gateway_mac), _out("uplink"))
    # Not in the seed (OVS has no such trap): a Linux bridge keeps each
    # port's MAC as its own, and admin0 shares the uplink NIC's MAC, so
    # NORMAL would hand frames for the box to the bridge device, not admin.
    add("frames for the box go straight to the admin port", P_TO_ADMIN_MAC,
        _match(dl_dst=admin_mac), _out("admin"))
    add("everything else is switched normally", P_NORMAL, _match(), (Normal(),))
    return tuple(f)


def guarded_ports(entries: Iterable[FlowEntry]) -> tuple[int, ...]:
    """The TCP ports the console/SSH guard closes to the modem side, in the table's order."""
    return tuple(e.flow.match.values["tp_dst"] for e in entries if e.flow.priority == P_CONSOLE_GUARD)


# ---------------------------------------------------------------- custom flows

def parse_custom(text: str) -> tuple[Flow, ...]:
    """Custom flows (`ovs-ofctl add-flows` text with the box's port names), all or nothing.

    Raises `FlowSyntaxError` (a ValueError) naming the line and column.
    """
    return tuple(parse_flows(text, PORT_NUMBERS)) if text.strip() else ()


def custom_flow_errors(text: str) -> list[str]:
    """Problems in custom flow text, each naming its line; [] when fine."""
    try:
        parse_custom(text)
    except ValueError as e:  # the parser's errors name line and column
        return [str(e)]
    return []


def touches_admin(flows: Iterable[Flow]) -> bool:
    """Whether any of these flows matches on, or can send to, the admin port."""
    admin = PORT_NUMBERS[ADMIN_PORT]
    for f in flows:
        got = f.match.get("in_port")
        if got is not None and got[0] == admin:
            return True
        for a in f.actions:
            if isinstance(a, Output) and a.port == admin:
                return True
            if isinstance(a, (Flood, All, Normal)):
                return True  # these reach the admin port too
    return False


def lint_custom(text: str, base_flows: Iterable[Flow] = ()) -> list[dict]:
    """Lint feedback for custom flows as they are typed: syntax errors, then overlaps and shadowing.

    The custom flows are linted together with the box's own table
    (`base_flows`), so a custom flow hidden by one of the box's is reported;
    only findings about the custom flows are returned.
    """
    try:
        custom = parse_custom(text)
    except ValueError as e:
        return [{"severity": "error", "message": str(e)}]
    ids = {id(f) for f in custom}
    return [{"severity": finding.severity, "message": finding.format(PORT_NAMES)}
            for finding in lint([*base_flows, *custom])
            if id(finding.flow) in ids or (finding.other is not None and id(finding.other) in ids)]
