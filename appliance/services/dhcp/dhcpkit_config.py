"""dhcpkit's DHCPv6 configuration, made from the DHCPv6 service's own settings (pure).

`Dhcp6Settings` is what the DHCPv6 server on gw0 needs to know, and nothing
of the box's document (the plan binds the document to it, as it does for
Kea's `DhcpSettings`). gw0 carries the modem's MAC and link-local address,
so replies come from the modem as far as clients can tell: the server
identifier is a DUID-LL of the modem's MAC, replies leave from its
link-local address.

What it serves:

- stateless information (Information-request, RFC 8415 18.2.6): the DNS
  servers (the modem's IPv6 addresses, which the box's DNS answers for) and
  the search domain;
- with `stateful` (the modem's RA sets the M flag): static IA_NA addresses
  from the settings' static leases, matched by the link-layer address in
  the client's DUID (DUID-LL or DUID-LLT), written to a CSV as dhcpkit's
  `linklayer-id:1:<mac>` ids (`appliance.services.dhcp.dhcpkit_fixes` adds
  the DUID lookup). Without it, Solicits are ignored as a stateless server
  ignores them.

The server follows the modem's RA (`following`): its DNS servers and M flag
change what is served without an apply.

Leases handed out are recorded in dhcpkit's leasequery SQLite store, which
`appliance.services.dhcp.leases6` reads. A second listener on ::1 (marked
`probe`) takes the health probe's Information-request.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from ipaddress import IPv6Address

from appliance.services.dhcp.ra import RouterAdvert

INTERFACE = "gw0"
PROBE_MARK = "probe"
# dhcpkit's workers are processes; DHCPv6 on a home LAN needs one.
WORKERS = 1
ETHERNET = 1  # the IANA hardware type in a DUID-LL/LLT


@dataclass(frozen=True)
class Dhcp6Paths:
    """Where one DHCPv6 server keeps its files."""

    config: str  # its settings (`Dhcp6Settings` as JSON), written by the plan
    dhcpkit: str  # dhcpkit's config, rendered by the server from the settings and the modem's RA
    assignments: str  # the static leases as dhcpkit's CSV, rendered with it
    leases: str  # the leasequery SQLite store
    ra: str  # the modem's last RA (`appliance.services.dhcp.ra`), kept across restarts
    status: str  # what the server does now: serves, or lets the modem serve ("aside") and why
    socket: str  # dhcpkit's control socket
    pid_file: str


@dataclass(frozen=True)
class StaticLease6:
    mac: str
    ip: str


@dataclass(frozen=True)
class Dhcp6Settings:
    """The DHCPv6 server on one interface: what `dhcpkit_config` renders."""

    server_mac: str  # the modem's MAC: the server's DUID-LL
    reply_from: str  # the modem's link-local address, carried by gw0
    dns_servers: tuple[str, ...]  # the modem's IPv6 addresses
    paths: Dhcp6Paths
    link_address: str = "::"  # a global address of the link, for dhcpkit's filters ("::": none known)
    domain: str | None = None
    stateful: bool = False  # the modem's RA sets M: serve the static IA_NA addresses
    static_leases: tuple[StaticLease6, ...] = ()
    # RFC 8415's defaults for a home: addresses renewed daily, kept a week.
    preferred_lifetime: int = 86400
    valid_lifetime: int = 7 * 86400
    interface: str = INTERFACE
    workers: int = WORKERS

    def __post_init__(self) -> None:
        for field, value in (("reply_from", self.reply_from), ("link_address", self.link_address),
                             *(("dns_servers", a) for a in self.dns_servers),
                             *(("static_leases", lease.ip) for lease in self.static_leases)):
            try:
                IPv6Address(value)
            except ValueError as e:
                raise ValueError(f"{field}: {e}") from None
        if not IPv6Address(self.reply_from).is_link_local:
            raise ValueError(f"reply_from: {self.reply_from} is not a link-local address")


    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Dhcp6Settings":
        data = dict(data)
        data["paths"] = Dhcp6Paths(**data["paths"])
        data["dns_servers"] = tuple(data["dns_servers"])
        data["static_leases"] = tuple(StaticLease6(**x) for x in data["static_leases"])
        return cls(**data)


def following(dhcp6: Dhcp6Settings, ra: RouterAdvert | None) -> tuple[Dhcp6Settings, str | None]:
    """What the server serves after the modem's RA `ra` (None: none heard yet), and why it
    stands aside, if it does.

    - DNS: the settings' servers, else the ones the modem announces (RDNSS).
    - M flag: the static leases' addresses are served (others get none and keep
      their SLAAC addresses); with no static IPv6 lease the box has nothing to
      give, so it stands aside: the modem's DHCPv6 serves the home (the
      datapath's guard goes off with the health bit, `ProbeResult.aside`).
    """
    if ra is None:
        return dhcp6, None
    dns = dhcp6.dns_servers or ra.dns
    if ra.managed and not dhcp6.static_leases:
        why = ("the modem's RA asks for DHCPv6 addresses (M flag) and no static lease has an IPv6 "
               "address: the box gives none, so the modem's DHCPv6 serves the home")
        return dataclasses.replace(dhcp6, dns_servers=dns, stateful=False), why
    return dataclasses.replace(dhcp6, dns_servers=dns, stateful=ra.managed), None


def eui64_link_local(mac: str) -> str:
    """The EUI-64 link-local address of a MAC (RFC 4291 2.5.1): a modem's usual one."""
    b = bytes.fromhex(mac.replace(":", ""))
    iid = bytes([b[0] ^ 0x02]) + b[1:3] + b"\xff\xfe" + b[3:6]
    return str(IPv6Address(b"\xfe\x80" + bytes(6) + iid))


def _global_unicast(address: str) -> bool:
    a = IPv6Address(address)
    return not (a.is_unspecified or a.is_loopback or a.is_multicast or a.is_link_local)


def duid_ll(mac: str) -> str:
    """The DUID-LL (type 3, Ethernet) of a MAC, in hex."""
    return f"0003{ETHERNET:04x}{mac.replace(':', '').lower()}"


def assignments_csv(dhcp6: Dhcp6Settings) -> str:
    """The static leases as dhcpkit's static-csv file: one `linklayer-id` row each."""
    rows = ["id,address,prefix"]
    rows += [f"linklayer-id:{ETHERNET}:{lease.mac.replace(':', '').lower()},{IPv6Address(lease.ip)},"
             for lease in dhcp6.static_leases]
    return "\n".join(rows) + "\n"


def dhcpkit_config(dhcp6: Dhcp6Settings, uid: int = 0, gid: int = 0) -> str:
    """The ZConfig text `ipv6-dhcpd` reads, for a server running as `uid`:`gid`."""
    mac = dhcp6.server_mac.lower()
    lines = [
        "# Made by the box from its settings; changes here are lost on the next apply.",
        # The user the server already runs as, by number (dhcpkit_fixes: the
        # lab has no passwd entry for it); dhcpkit then changes nothing.
        f"user {uid}",
        f"group {gid}",
        f"control-socket-user {uid}",
        f"control-socket-group {gid}",
        f"pid-file {dhcp6.paths.pid_file}",
        f"control-socket {dhcp6.paths.socket}",
        f"workers {dhcp6.workers}",
        "<logging>",
        "  <console>",
        "    level info",
        "  </console>",
        "</logging>",
        "<duid-ll server-id>",
        f"  hardware-type {ETHERNET}",
        f"  link-layer-address {mac}",
        "</duid-ll>",
        f"<listen-interface {dhcp6.interface}>",
        f"  reply-from {IPv6Address(dhcp6.reply_from)}",
        # dhcpkit wants a global unicast address (RFC 4291) here, and finds one itself when left out.
        *([f"  link-address {IPv6Address(dhcp6.link_address)}"] if _global_unicast(dhcp6.link_address) else []),
        "</listen-interface>",
        "<listen-unicast ::1>",
        f"  mark {PROBE_MARK}",
        "</listen-unicast>",
    ]
    if dhcp6.dns_servers:
        lines += ["<recursive-name-servers>",
                  *(f"  address {IPv6Address(a)}" for a in dhcp6.dns_servers),
                  "</recursive-name-servers>"]
    if dhcp6.domain:
        lines += ["<domain-search-list>", f"  domain-name {dhcp6.domain}", "</domain-search-list>"]
    if dhcp6.stateful and dhcp6.static_leases:
        lines += [f"<static-csv {dhcp6.paths.assignments}>",
                  f"  address-preferred-lifetime {dhcp6.preferred_lifetime}s",
                  f"  address-valid-lifetime {dhcp6.valid_lifetime}s",
                  "</static-csv>"]
    elif not dhcp6.stateful:
        # A stateless server: no Advertise, so a client that solicits anyway
        # is not told "no addresses" by a server that never had any.
        lines += ["<ignore-request>", "  message-type solicit", "</ignore-request>"]
    lines += [
        # Leases handed out, for the console's lease table; queries only from the box itself.
        "<leasequery>",
        "  allow-from ::1/128",
        f"  <lq-sqlite {dhcp6.paths.leases} />",
        "</leasequery>",
    ]
    return "\n".join(lines) + "\n"
