"""`ipv6_neighbours`: the IPv6 neighbour table of a namespace, as the DNS server reads it.

A scratch namespace with a veth pair holds neighbour entries in each state
the kernel can be given: the usable ones (permanent, reachable, stale) are
listed with their MACs; the entry of an address nobody answers for is not.
"""
from __future__ import annotations

import uvloop

from appliance.kernel.neighbours import ipv6_neighbours
from appliance.kernel.setns import in_netns
from tests.support.scratchns import ScratchNamespaces, sh


def test_the_usable_ipv6_neighbours_of_a_namespace_with_their_macs():
    with ScratchNamespaces("nb") as (ns,):
        for scope in ("all", "default"):
            sh(ns, "sysctl", "-qw", f"net.ipv6.conf.{scope}.disable_ipv6=0")
        sh(ns, "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        sh(ns, "ip", "link", "set", "v0", "up")
        sh(ns, "ip", "link", "set", "v1", "up")
        entries = {"2001:db8:1::5": ("02:00:00:00:00:05", "permanent"),
                   "2001:db8:1::6": ("02:00:00:00:00:06", "stale"),
                   "fe80::7": ("02:00:00:00:00:07", "reachable")}
        for address, (mac, state) in entries.items():
            sh(ns, "ip", "-6", "neigh", "add", address, "lladdr", mac.upper(), "dev", "v0", "nud", state)
        # An address nobody answers for: the kernel's entry is INCOMPLETE, then FAILED, with no MAC.
        sh(ns, "ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "v0", "nodad")
        sh(ns, "ping", "-6", "-c1", "-W1", "2001:db8:1::8", check=False)
        assert "2001:db8:1::8" in sh(ns, "ip", "-6", "neigh", "show", "dev", "v0").stdout
        found = sorted(in_netns(ns, ipv6_neighbours))
        assert found == sorted((a, mac) for a, (mac, _) in entries.items())
        # As the DNS server calls it: inside its running uvloop loop (pyroute2's IPRoute failed there).
        async def inside_the_loop():
            return sorted(ipv6_neighbours())
        assert in_netns(ns, uvloop.run, inside_the_loop()) == found
        assert ipv6_neighbours() != found  # the caller's own namespace is another table
