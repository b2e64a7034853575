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
PAIR = "ct original ip saddr . ct original ip daddr"  # (client, fake address)


def fast_path_table(settings: RelaySettings) -> str:
    """An `nft -f` script that (re)creates the relay's own table, empty.

    The map ``fast`` (fake address -> real address) is filled by the relay;
    a TCP connection from a served client on a home-side interface to a
    mapped address is marked and DNATed to the real one (same port), then
    masqueraded to vproxy's own address so the answers come back through
    vproxy's conntrack and reach the client from the fake address.
    """
    fp = settings.fast_path
    t = fp.table
    src = f"ip saddr {{ {', '.join(settings.allow_clients)} }} " if settings.allow_clients else ""
    if settings.deny_clients:
        src += f"ip saddr != {{ {', '.join(settings.deny_clients)} }} "
    mark = f"0x{FAST_PATH_CT_MARK:x}"
    # "add; delete; define" in one transaction: the table exists exactly once afterwards,
    # and a dead predecessor's entries are gone.
    return "\n".join([
        f"add table ip {t}",
        f"delete table ip {t}",
        f"table ip {t} {{",
        "  map fast { type ipv4_addr : ipv4_addr; flags timeout; }",
        # The map's keys again, as a set: a kernel before 6.4 refuses a lookup of a map's keys
        # as a match ("ip daddr @fast": EINVAL on Debian's 6.1), and the mark must be set only
        # for an address the map holds (a miss in `dnat ... map` comes after the mark).
        "  set fast_keys { type ipv4_addr; flags timeout; }",
        "  chain fast_dnat {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        f"    {_iif(fp.interfaces)}{src}meta l4proto tcp ip daddr @fast_keys "
        f"ct mark set {mark} dnat ip to ip daddr map @fast",
        "  }",
        "  chain fast_snat {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f"    ct mark {mark} meta l4proto tcp masquerade to :{NAT_PORTS}",
        "  }",
        # Exact bytes and connections per (client, fake address), short
        # connections included: the relay adds them to its counters.
        *(f"  set {name} {{ type ipv4_addr . ipv4_addr; size {COUNTER_KEYS}; "
          f"flags dynamic, timeout; timeout {COUNTER_IDLE}; counter; }}" for name in COUNTER_SETS),
        "  chain fast_count {",
        "    type filter hook forward priority filter; policy accept;",
        f"    {FAST_PATH_MATCH} ct state new update @conns {{ {PAIR} }}",
        f"    {FAST_PATH_MATCH} ct direction original update @up {{ {PAIR} }}",
        f"    {FAST_PATH_MATCH} ct direction reply update @down {{ {PAIR} }}",
        f"    ct mark {mark} tcp flags & (fin | rst) != 0 ct mark set 0x{FAST_PATH_CT_MARK_ENDED:x}",
        "  }",
        "}",
        "",
    ])


def delete_table(settings: RelaySettings) -> str:
    t = settings.fast_path.table
    return f"add table ip {t}\ndelete table ip {t}\n"


def add_entry(settings: RelaySettings, fake: str, real: str, timeout: float,
              replace: bool = False) -> str:
    """Map `fake` to `real` for `timeout` seconds (`replace`: it maps elsewhere now)."""
    t = settings.fast_path.table
    seconds = max(1, round(timeout))
    old = f"delete element ip {t} fast {{ {fake} }}\ndelete element ip {t} fast_keys {{ {fake} }}\n" \
        if replace else ""
    # In one transaction with the map's element: the key and its mapping come and go together.
    return (old + f"add element ip {t} fast {{ {fake} timeout {seconds}s : {real} }}\n"
            f"add element ip {t} fast_keys {{ {fake} timeout {seconds}s }}\n")


def remove_entry(settings: RelaySettings, fake: str) -> str:
    t = settings.fast_path.table
    return f"delete element ip {t} fast {{ {fake} }}\ndelete element ip {t} fast_keys {{ {fake} }}\n"
