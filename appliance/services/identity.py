"""Who a service runs as: its own unprivileged user and only the capabilities it needs.

The DNS server and the relay parse what any device of the home sends them;
Kea parses DHCP from the same devices. None of them runs as root: each has
its own user (fixed ids, the same in the lab and on the image, where
`sysusers.d/appliance.conf` makes the users), the DNS server and the relay
share a group (the relay reads the DNS server's fake-IP store and control
socket), and each keeps only the capabilities it uses:

- dns: bind port 53 (NET_BIND_SERVICE); attach the steering program to its
  sockets (BPF: Debian disables unprivileged BPF).
- relay: the TPROXY socket and the fast path's conntrack, nftables and sysctls
  in its namespace (NET_ADMIN), transparent UDP (NET_RAW), low ports.
- dhcp4 (Kea): raw DHCP sockets (NET_RAW) on port 67 (NET_BIND_SERVICE).
- dhcp6 (dhcpkit): port 547 (NET_BIND_SERVICE); the raw ICMPv6 socket that
  hears the modem's RAs (NET_RAW).
- notify: none (it reads the events file and sends alerts; its URLs may hold secrets).
- devices: root (the datapath's pins and the box's state files are root's, 0600 and 0644) with
  CAP_BPF alone: it reads and writes pinned maps and its own files, nothing else of root's
  (no DAC override, no NET_ADMIN, no entering namespaces).

systemd applies an identity with `User=`, `AmbientCapabilities=` and
`CapabilityBoundingSet=` (`ServiceSpec.systemd_unit`); the supervisor (the
lab) with `setpriv`, which sets the ids, the groups, the bounding, inheritable
and ambient sets and no-new-privs before it execs the service.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    user: str
    uid: int
    group: str
    gid: int
    capabilities: tuple[str, ...] = ()  # "CAP_NET_BIND_SERVICE", ...

    def setpriv(self, argv: tuple[str, ...] | list[str]) -> list[str]:
        """`argv` run by setpriv as this identity (from root)."""
        caps = ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in self.capabilities)])
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
                f"--inh-caps={caps}", f"--ambient-caps={caps}", f"--bounding-set={caps}",
                "--no-new-privs", "--", *argv]

    def to_json(self) -> dict:
        return {"user": self.user, "uid": self.uid, "group": self.group, "gid": self.gid,
                "capabilities": list(self.capabilities)}

    @classmethod
    def from_json(cls, data: dict | None) -> "Identity | None":
        if not data:
            return None
        return cls(data["user"], data["uid"], data["group"], data["gid"], tuple(data.get("capabilities", ())))


VPROXY_GROUP, VPROXY_GID = "appliance-vproxy", 64530
# CAP_NET_ADMIN: the kernel answer cache (dns.kernel_cache) is a tc program on vproxy0
# the server loads and attaches itself (CAP_BPF alone cannot load a tc program).
DNS = Identity("appliance-dns", 64531, VPROXY_GROUP, VPROXY_GID,
               ("CAP_NET_BIND_SERVICE", "CAP_BPF", "CAP_NET_ADMIN"))
# CAP_BPF and CAP_NET_ADMIN: the IPv6 clients' translator (relay.nat64), a tc program on vproxy0.
RELAY = Identity("appliance-relay", 64532, VPROXY_GROUP, VPROXY_GID,
                 ("CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_BPF"))
KEA = Identity("appliance-kea", 64533, "appliance-kea", 64533,
               ("CAP_NET_RAW", "CAP_NET_BIND_SERVICE"))
DHCP6 = Identity("appliance-dhcp6", 64535, "appliance-dhcp6", 64535,
                 ("CAP_NET_RAW", "CAP_NET_BIND_SERVICE"))
# The notifier reads the events file and talks to notification services: no capability at all.
NOTIFY = Identity("appliance-notify", 64534, "appliance-notify", 64534)
# The devices service: the pinned per-device maps (CAP_BPF: Debian disables unprivileged BPF),
# as the owner of the root-owned pins and state files; no other capability.
DEVICES = Identity("root", 0, "root", 0, ("CAP_BPF",))
