"""The nftables and routing pieces of netns vproxy that feed the relay (pure).

The box's plan (`appliance/box/plan.py`, chain ``fake_range``) and the
tests use these, so the rule that steers traffic and the socket that takes
it cannot disagree. Only packets arriving on the home-side interfaces are
steered; anything else sent to the fake range meets the local route with
no socket behind it and is refused by the kernel.

The TPROXY chain runs just after destination NAT (``dstnat + 10``), not at
``mangle``: a connection the kernel fast path has NATed to a real address
then no longer matches the fake range, and is forwarded instead of being
handed to the relay's socket (the kernel drops a forwarded packet that
TPROXY has already tied to a local socket).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .settings import RelaySettings

# Conntrack mark of the connections the fast path NATs: the masquerade rule,
# the box's forward filter and the relay's conntrack reads all select by it.
# A connection that has seen a FIN or RST takes the ENDED mark, so that the
# relay's periodic read lists only open ones (not a minute of TIME_WAIT).
FAST_PATH_CT_MARK = 0x7E1A
FAST_PATH_CT_MARK_ENDED = 0x7E1B
FAST_PATH_CT_MASK = 0xFFFFFFFE  # both marks
FAST_PATH_MATCH = f"ct mark & 0x{FAST_PATH_CT_MASK:x} == 0x{FAST_PATH_CT_MARK:x}"


def _iif(interfaces: list[str]) -> str:
    names = ", ".join(f'"{name}"' for name in interfaces)
    return f"iifname {{ {names} }} " if interfaces else ""


def tproxy_rules(settings: RelaySettings, home_interfaces: list[str]) -> list[str]:
    """Rule lines for the ``fake_range`` chain (filter, prerouting, after dstnat)."""
    host, port = settings.listen_address()
    return [
        f"{_iif(home_interfaces)}ip daddr {settings.fake_range} meta l4proto {{ tcp, udp }} "
        f"tproxy to {host}:{port} accept",
    ]


def chain(settings: RelaySettings, home_interfaces: list[str], name: str = "fake_range") -> str:
    """A whole chain, for a table body."""
    lines = [f"  chain {name} {{", "    type filter hook prerouting priority dstnat + 10; policy accept;"]
    lines += [f"    {rule}" for rule in tproxy_rules(settings, home_interfaces)]
    lines.append("  }")
    return "\n".join(lines)


def chain6(settings: RelaySettings, home_interfaces: list[str], fake_range6: str,
           name: str = "fake_range") -> str:
    """The same chain for an ip6 table: the IPv6 fake range to the relay's IPv6
    sockets (TCP and UDP, bound to [::] on the listen port)."""
    _, port = settings.listen_address()
    return "\n".join([
        f"  chain {name} {{", "    type filter hook prerouting priority dstnat + 10; policy accept;",
        f"    {_iif(home_interfaces)}ip6 daddr {fake_range6} meta l4proto {{ tcp, udp }} tproxy to :{port} accept",
        "  }"])


def local_route(settings: RelaySettings) -> list[str]:
    """`ip route` arguments: the whole fake range is local, so TPROXY delivers to the socket."""
    return ["route", "replace", "local", settings.fake_range, "dev", "lo", "table", "local"]


# Source ports: the masqueraded connections keep their client's port where
# they can (so a new SYN on a closed connection's ports replaces it, as when
# routed) within NAT_PORTS; vproxy's own sockets (the relay's connections, the
# DNS server's queries) take theirs from LOCAL_PORTS (`ip_local_port_range`,
# set by the namespace's owner). The two never meet, so a NATed connection
# never clashes with the relay's own connection to the same server, which
# conntrack would drop.
NAT_PORTS = "1024-60999"
LOCAL_PORTS = (61000, 65535)
COUNTER_SETS = ("conns", "up", "down")
COUNTER_KEYS = 65536
COUNTER_IDLE = "1h"  # an element unused this long goes; the relay has long read it


@dataclass(frozen=True)
class Family:
    """What differs between the IPv4 and the IPv6 table: names, not design."""

    table: str    # nft family: "ip", "ip6"
    addr: str     # nft address type
    proto: str    # the address match ("ip daddr", "ct original ip saddr")

    @property
    def pair(self) -> str:  # (client, fake address)
        return f"ct original {self.proto} saddr . ct original {self.proto} daddr"


IPV4 = Family("ip", "ipv4_addr", "ip")
IPV6 = Family("ip6", "ipv6_addr", "ip6")
PAIR = IPV4.pair


def family_of(address: str) -> Family:
    return IPV6 if ipaddress.ip_address(address).version == 6 else IPV4


def families(settings: RelaySettings) -> tuple[Family, ...]:
    """The tables the fast path keeps: IPv6 too when the relay connects IPv6
    clients over IPv6 (`direct6`); only then can a fake IPv6 map to a real one."""
    return (IPV4, IPV6) if settings.fake_range6 is not None and settings.direct6 else (IPV4,)


def _sources(settings: RelaySettings, fam: Family) -> str:
    if fam is IPV6:
        # IPv6 clients are whatever the modem's prefix is today: as for the ip6
        # TPROXY rule, the home-side interfaces are the filter (`interfaces`).
        return ""
    allowed = settings.allow_clients
    if allowed and settings.translates6():
        # The IPv6 clients' stand-ins (`nat64.py`), which exist only inside this namespace.
        allowed = [*allowed, settings.fast_path.shadow_range]
    src = f"ip saddr {{ {', '.join(allowed)} }} " if allowed else ""
    if settings.deny_clients:
        src += f"ip saddr != {{ {', '.join(settings.deny_clients)} }} "
    return src


def _table(settings: RelaySettings, fam: Family) -> list[str]:
    fp = settings.fast_path
    t, f, a, p = fp.table, fam.table, fam.addr, fam.proto
    mark = f"0x{FAST_PATH_CT_MARK:x}"
    # "add; delete; define" in one transaction: the table exists exactly once afterwards,
    # and a dead predecessor's entries are gone.
    return [
        f"add table {f} {t}",
        f"delete table {f} {t}",
        f"table {f} {t} {{",
        f"  map fast {{ type {a} : {a}; flags timeout; }}",
        # The map's keys again, as a set: a kernel before 6.4 refuses a lookup of a map's keys
        # as a match ("ip daddr @fast": EINVAL on Debian's 6.1), and the mark must be set only
        # for an address the map holds (a miss in `dnat ... map` comes after the mark).
        f"  set fast_keys {{ type {a}; flags timeout; }}",
        "  chain fast_dnat {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        f"    {_iif(fp.interfaces)}{_sources(settings, fam)}meta l4proto tcp {p} daddr @fast_keys "
        f"ct mark set {mark} dnat {p} to {p} daddr map @fast",
        "  }",
        "  chain fast_snat {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f"    ct mark {mark} meta l4proto tcp masquerade to :{NAT_PORTS}",
        "  }",
        # Exact bytes and connections per (client, fake address), short
        # connections included: the relay adds them to its counters.
        *(f"  set {name} {{ type {a} . {a}; size {COUNTER_KEYS}; "
          f"flags dynamic, timeout; timeout {COUNTER_IDLE}; counter; }}" for name in COUNTER_SETS),
        "  chain fast_count {",
        "    type filter hook forward priority filter; policy accept;",
        f"    {FAST_PATH_MATCH} ct state new update @conns {{ {fam.pair} }}",
        f"    {FAST_PATH_MATCH} ct direction original update @up {{ {fam.pair} }}",
        f"    {FAST_PATH_MATCH} ct direction reply update @down {{ {fam.pair} }}",
        f"    ct mark {mark} tcp flags & (fin | rst) != 0 ct mark set 0x{FAST_PATH_CT_MARK_ENDED:x}",
        "  }",
        "}",
    ]


def fast_path_table(settings: RelaySettings) -> str:
    """An `nft -f` script that (re)creates the relay's own tables, empty.

    The map ``fast`` (fake address -> real address) is filled by the relay;
    a TCP connection from a served client on a home-side interface to a
    mapped address is marked and DNATed to the real one (same port), then
    masqueraded to vproxy's own address so the answers come back through
    vproxy's conntrack and reach the client from the fake address. One
    table per family (`families`), the same rules in each: a fake IPv6
    address maps to a real IPv6 one (nft cannot translate between the two),
    and an ip6 table of the same name never meets an ip one. A family not
    served is deleted, so no earlier relay's table of it stays behind.
    """
    served = families(settings)
    lines = [line for fam in served for line in _table(settings, fam)]
    for fam in (IPV4, IPV6):
        if fam not in served:
            lines += _delete(settings, fam)
    return "\n".join(lines) + "\n"


def _delete(settings: RelaySettings, fam: Family) -> list[str]:
    t = settings.fast_path.table
    return [f"add table {fam.table} {t}", f"delete table {fam.table} {t}"]


def delete_table(settings: RelaySettings) -> str:
    """Both families' tables, whether they exist or not."""
    return "\n".join(_delete(settings, IPV4) + _delete(settings, IPV6)) + "\n"


def add_entry(settings: RelaySettings, fake: str, real: str, timeout: float,
              replace: bool = False) -> str:
    """Map `fake` to `real` for `timeout` seconds (`replace`: it maps elsewhere now)."""
    fam = family_of(fake)
    if family_of(real) is not fam:
        raise ValueError(f"{fake} -> {real}: the kernel NATs within one family only")
    t = f"{fam.table} {settings.fast_path.table}"
    seconds = max(1, round(timeout))
    old = f"delete element {t} fast {{ {fake} }}\ndelete element {t} fast_keys {{ {fake} }}\n" \
        if replace else ""
    # In one transaction with the map's element: the key and its mapping come and go together.
    return (old + f"add element {t} fast {{ {fake} timeout {seconds}s : {real} }}\n"
            f"add element {t} fast_keys {{ {fake} timeout {seconds}s }}\n")


def remove_entry(settings: RelaySettings, fake: str) -> str:
    t = f"{family_of(fake).table} {settings.fast_path.table}"
    return f"delete element {t} fast {{ {fake} }}\ndelete element {t} fast_keys {{ {fake} }}\n"
