"""The lab's home network as data: the "before" picture of the seed's home.

    internet ---- modem ====== box ====== home switch ---- client1..N
    (web, DNS)    192.168.1.1  enp5s0     (bridge sw0)     dhclient, dig, curl
                  2001:db8:1::1                            SLAAC
                  dnsmasq,NAT  enp1s0
                  RAs, routes IPv6

Dual stack: the internet side is 2001:db8:ffff::/64, the home 2001:db8:1::/64,
announced by the modem's RAs (SLAAC, O flag, RDNSS) and its stateless DHCPv6;
the modem routes IPv6 (no NAT66), the internet routes the home's prefix to it.

`build(spec)` is pure: it returns the namespaces, links, addresses, routes,
sysctls and nftables tables (`appliance.kernel.desired`); `processes` and
`files` the processes the lab runs and the files they need, as data
(`LabProcess`, `LabFile`, which the relay's lab, `relaytopology.py`, uses
too). Every namespace name starts with the spec's prefix, so several labs
and test runs can coexist; link names only need to be unique inside their
own namespace, so they are the same in every lab.
"""
from __future__ import annotations

import ipaddress
import re
import sys
from dataclasses import dataclass

from appliance.box.ipv6 import eui64_link_local
from appliance.kernel.base import Route
from appliance.kernel.desired import (
    Address, Bridge, Namespace, NftTable, Object, RouteEntry, Sysctls, Veth,
)

MAX_CLIENTS = 16
_PREFIX = re.compile(r"^[a-z][a-z0-9]{0,7}$")

LAN = "192.168.1.0/24"
MODEM_LAN_IP = "192.168.1.1"
MODEM_LAN_MAC = "02:4d:4f:44:45:4d"  # fixed, like a real modem's burned-in MAC
MODEM_DHCP_RANGE = ("192.168.1.100", "192.168.1.200")
WAN_NET = "203.0.113.0/24"  # TEST-NET-3: the ISP link between modem and internet
INTERNET_WAN_IP = "203.0.113.1"
MODEM_WAN_IP = "203.0.113.2"
PUBLIC_RESOLVER = "198.51.100.53"  # TEST-NET-2: "public" DNS on the internet side

# IPv6 (documentation prefix 2001:db8::/32): the ISP link and the home's prefix.
WAN6_NET = "2001:db8:ffff::/64"
INTERNET_WAN6_IP = "2001:db8:ffff::1"
MODEM_WAN6_IP = "2001:db8:ffff::2"
LAN6 = "2001:db8:1::/64"
MODEM_LAN6_IP = "2001:db8:1::1"
PUBLIC_RESOLVER6 = "2001:db8:ffff::53"


def slaac_address(mac: str, prefix: str = LAN6) -> str:
    """The SLAAC address (EUI-64) a client with `mac` takes in `prefix`."""
    net = ipaddress.IPv6Network(prefix)
    iid = int(ipaddress.IPv6Address(eui64_link_local(mac))) & ((1 << 64) - 1)
    return str(net.network_address + iid)


MODEM_LINK_LOCAL = eui64_link_local(MODEM_LAN_MAC)

# Test zones: one web address per domain and family, served by the internet namespace.
SITES = {
    "www.example.test": "198.51.100.10",
    "www.blocked.test": "198.51.100.11",
    "www.proxied.test": "198.51.100.12",
}
SITES6 = {
    "www.example.test": "2001:db8:ffff::10",
    "www.blocked.test": "2001:db8:ffff::11",
    "www.proxied.test": "2001:db8:ffff::12",
}
ZONES = ("example.test", "blocked.test", "proxied.test")
UDP_ECHO_PORT = 9001  # the web server's UDP echo (QUIC and games to the test sites)

UPLINK_NIC, DOWNLINK_NIC = "enp5s0", "enp1s0"
UPLINK_MAC, DOWNLINK_MAC = "52:54:00:00:05:00", "52:54:00:00:01:00"


class LabError(ValueError):
    """Bad lab input; the message names the field and the problem."""


@dataclass(frozen=True)
class LabSpec:
    prefix: str = "lab"
    clients: int = 3

    def __post_init__(self):
        if not isinstance(self.prefix, str) or not _PREFIX.match(self.prefix):
            raise LabError(
                f"prefix: {self.prefix!r} is not valid: use 1-8 lowercase letters or digits, "
                "starting with a letter (it prefixes every namespace name)"
            )
        if isinstance(self.clients, bool) or not isinstance(self.clients, int) \
                or not 1 <= self.clients <= MAX_CLIENTS:
            raise LabError(f"clients: {self.clients!r} is not valid: use a whole number from 1 to {MAX_CLIENTS}")

    def ns(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    @property
    def internet(self) -> str:
        return self.ns("internet")

    @property
    def modem(self) -> str:
        return self.ns("modem")

    @property
    def box(self) -> str:
        return self.ns("box")

    @property
    def home(self) -> str:
        return self.ns("home")

    def client(self, i: int) -> str:
        return self.ns(f"client{i}")

    @property
    def client_names(self) -> list[str]:
        return [self.client(i) for i in range(1, self.clients + 1)]

    @property
    def namespaces(self) -> list[str]:
        return [self.internet, self.modem, self.box, self.home, *self.client_names]

    # -- what `Lab` builds from a spec -------------------------------------
    def objects(self) -> list[Object]:
        return build(self)

    def processes(self, rundir: str) -> list[LabProcess]:
        return processes(self, rundir)

    def files(self, rundir: str) -> list[LabFile]:
        # Each client's own resolv.conf (dhclient's script writes it in place
        # under `ip netns exec`), empty until its first lease.
        return [LabFile("resolv.conf", "", ns=c) for c in self.client_names]


def client_mac(i: int) -> str:
    return f"02:00:00:00:10:{i:02x}"


NETNS_ETC = "/etc/netns"  # /etc/netns/NS/FILE is NS's /etc/FILE under `ip netns exec`


@dataclass(frozen=True)
class LabProcess:
    name: str
    ns: str
    argv: tuple[str, ...]
    ready: tuple[str, ...] = ()  # sockets that listen once it is up: "tcp/80", "udp/53"


@dataclass(frozen=True)
class LabFile:
    """A file the lab writes before its processes start, when it is not there yet
    (a file a process rewrites, such as a client's resolv.conf, stays its own).

    With `ns`, `path` is a file of that namespace's own /etc ("resolv.conf":
    /etc/netns/NS/resolv.conf, its /etc/resolv.conf under `ip netns exec`)."""

    path: str
    text: str
    ns: str | None = None
    mode: int = 0o644
    base: str | None = None  # start from a copy of this file (the host's /etc/passwd), then `text`


# The home switch says nothing of its own (no IPv6 link-local chatter), and
# bridged frames never pass through the host's iptables (br_netfilter is
# loaded on these machines; the switch is per namespace).
_QUIET = (
    ("net.ipv6.conf.all.disable_ipv6", "1"),
    ("net.ipv6.conf.default.disable_ipv6", "1"),
)
# The internet and the modem have fixed addresses: no DAD, so they are
# usable (and dnsmasq can bind them) the moment they are added.
_NO_DAD = (
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
)
_NO_BR_NF = (
    ("net.bridge.bridge-nf-call-iptables", "0"),
    ("net.bridge.bridge-nf-call-ip6tables", "0"),
    ("net.bridge.bridge-nf-call-arptables", "0"),
)


def build(spec: LabSpec) -> list[Object]:
    s = spec
    objs: list[Object] = [Namespace(n) for n in s.namespaces]
    # Clients keep the kernel's IPv6 defaults (SLAAC from the modem's RAs, DAD).
    objs += [Sysctls(s.internet, _NO_DAD), Sysctls(s.modem, _NO_DAD), Sysctls(s.home, _QUIET)]
    # The box namespace stands for real hardware, where IPv6 is on by
    # default: the appliance must keep its own links quiet by itself. Only
    # the factory bridge and its NICs are quieted here, as a real box's
    # factory configuration would.
    objs.append(Sysctls(s.box, tuple((f"net.ipv6.conf.{dev}.disable_ipv6", "1")
                                     for dev in ("br0", UPLINK_NIC, DOWNLINK_NIC))))

    # internet: the ISP side, web sites and authoritative DNS.
    objs += [
        Veth(s.internet, "isp0", s.modem, "wan0"),
        Address(s.internet, "isp0", f"{INTERNET_WAN_IP}/24"),
        Address(s.internet, "isp0", f"{INTERNET_WAN6_IP}/64"),
        # Service addresses live on lo: the kernel may lack the dummy driver.
        Address(s.internet, "lo", f"{PUBLIC_RESOLVER}/32"),
        *(Address(s.internet, "lo", f"{ip}/32") for ip in sorted(set(SITES.values()))),
        # The IPv6 ones are in the link's own /64, so the modem finds them by
        # neighbour discovery, which Linux answers only for the link's addresses.
        Address(s.internet, "isp0", f"{PUBLIC_RESOLVER6}/128"),
        *(Address(s.internet, "isp0", f"{ip}/128") for ip in sorted(set(SITES6.values()))),
        RouteEntry(s.internet, Route(dst=LAN6, via=MODEM_WAN6_IP)),
    ]

    # modem: NAT router with DHCP and DNS forwarding on its LAN side; an
    # IPv6 router (RAs, stateless DHCPv6) without NAT66.
    objs += [
        Address(s.modem, "wan0", f"{MODEM_WAN_IP}/24"),
        Address(s.modem, "wan0", f"{MODEM_WAN6_IP}/64"),
        RouteEntry(s.modem, Route(dst="default", via=INTERNET_WAN_IP)),
        RouteEntry(s.modem, Route(dst="::/0", via=INTERNET_WAN6_IP)),
        Veth(s.modem, "lan0", s.box, UPLINK_NIC, mac=MODEM_LAN_MAC, peer_mac=UPLINK_MAC, peer_master="br0"),
        Address(s.modem, "lan0", f"{MODEM_LAN_IP}/24"),
        Address(s.modem, "lan0", f"{MODEM_LAN6_IP}/64"),
        Sysctls(s.modem, (("net.ipv4.ip_forward", "1"), ("net.ipv6.conf.all.forwarding", "1"))),
        NftTable(s.modem, "ip", "modem_nat",
                 "  chain postrouting {\n"
                 "    type nat hook postrouting priority srcnat; policy accept;\n"
                 '    oifname "wan0" masquerade\n'
                 "  }"),
    ]

    # box: the appliance's hardware; a plain bridge until the appliance applies.
    objs += [
        Bridge(s.box, "br0"),
        Veth(s.box, DOWNLINK_NIC, s.home, "box", mac=DOWNLINK_MAC, master="br0", peer_master="sw0"),
        Sysctls(s.box, _NO_BR_NF),
    ]

    # home: the home switch and its clients.
    objs += [Bridge(s.home, "sw0"), Sysctls(s.home, _NO_BR_NF)]
    for i, c in enumerate(s.client_names, start=1):
        objs.append(Veth(s.home, f"c{i}", c, "eth0", peer_mac=client_mac(i), master="sw0"))
    return objs


ZONE_TTL = 300  # as a real zone: caches (the modem's, the box's) keep answers a while
RA_INTERVAL = 10  # seconds between the modem's unsolicited RAs (it also answers RS at once)


def processes(spec: LabSpec, rundir: str) -> list[LabProcess]:
    s = spec
    py = sys.executable
    zone_args = []
    for name, ip in SITES.items():
        zone_args.append(f"--host-record={name},{ip},{SITES6[name]}")
    for zone in ZONES:
        zone_args.append(f"--local=/{zone}/")  # authoritative: unknown names get NXDOMAIN
        zone_args.append(f"--host-record={zone},{SITES['www.' + zone]},{SITES6['www.' + zone]}")
    return [
        LabProcess("web", s.internet, (py, "-m", "appliance.lab.web", "--port", "80",
                                       "--udp-echo", str(UDP_ECHO_PORT), *SITES.values(), *SITES6.values()),
                   ready=("tcp/80", f"udp/{UDP_ECHO_PORT}")),
        LabProcess("dns", s.internet, (
            "dnsmasq", "--keep-in-foreground", "--user=root", "--group=root", "--conf-file=/dev/null",
            f"--pid-file={rundir}/dns.pid", "--no-resolv", "--no-hosts", "--bind-interfaces",
            f"--listen-address={PUBLIC_RESOLVER}", f"--listen-address={PUBLIC_RESOLVER6}",
            f"--local-ttl={ZONE_TTL}",
            "--log-queries", f"--log-facility={rundir}/dns.log", *zone_args,
        ), ready=("udp/53",)),
        LabProcess("modem", s.modem, (
            "dnsmasq", "--keep-in-foreground", "--user=root", "--group=root", "--conf-file=/dev/null",
            f"--pid-file={rundir}/modem.pid", "--no-resolv", "--no-hosts", f"--server={PUBLIC_RESOLVER}",
            "--interface=lan0", "--bind-interfaces", "--except-interface=lo",
            f"--dhcp-range={MODEM_DHCP_RANGE[0]},{MODEM_DHCP_RANGE[1]},255.255.255.0,12h",
            f"--dhcp-option=option:router,{MODEM_LAN_IP}",
            f"--dhcp-option=option:dns-server,{MODEM_LAN_IP}",
            # IPv6: RAs for the home's prefix with A (SLAAC) and O (other
            # configuration by DHCPv6) set, RDNSS and DHCPv6's DNS the modem.
            "--enable-ra", f"--dhcp-range={LAN6.split('/')[0]},ra-stateless,64,12h",
            f"--dhcp-option=option6:dns-server,[{MODEM_LAN6_IP}]",
            f"--ra-param=lan0,{RA_INTERVAL},1800",
            "--dhcp-authoritative", "--no-ping", f"--dhcp-leasefile={rundir}/modem.leases",
            "--log-dhcp", "--log-queries", f"--log-facility={rundir}/modem.log",
        ), ready=("udp/53", "udp/67", "udp/547")),
    ]
