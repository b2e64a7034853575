"""The nftables and routing pieces of netns vproxy that feed the relay (pure).

The box's plan (`appliance/box/plan.py`, chain ``fake_range``) and the
tests use these, so the rule that steers traffic and the socket that takes
it cannot disagree. Only packets arriving on the home-side interfaces are
steered; anything else sent to the fake range meets the local route with
no socket behind it and is refused by the kernel.
"""

from __future__ import annotations

from .settings import RelaySettings


def tproxy_rules(settings: RelaySettings, home_interfaces: list[str]) -> list[str]:
    """Rule lines for a ``type filter hook prerouting priority mangle`` chain."""
    host, port = settings.listen_address()
    ifaces = ", ".join(f'"{name}"' for name in home_interfaces)
    match = f"iifname {{ {ifaces} }} " if home_interfaces else ""
    return [
        f"{match}ip daddr {settings.fake_range} meta l4proto {{ tcp, udp }} "
        f"tproxy to {host}:{port} accept",
    ]


def chain(settings: RelaySettings, home_interfaces: list[str], name: str = "fake_range") -> str:
    """A whole chain, for a table body."""
    lines = [f"  chain {name} {{", "    type filter hook prerouting priority mangle; policy accept;"]
    lines += [f"    {rule}" for rule in tproxy_rules(settings, home_interfaces)]
    lines.append("  }")
    return "\n".join(lines)


def local_route(settings: RelaySettings) -> list[str]:
    """`ip route` arguments: the whole fake range is local, so TPROXY delivers to the socket."""
    return ["route", "replace", "local", settings.fake_range, "dev", "lo", "table", "local"]
