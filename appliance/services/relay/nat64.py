"""The kernel fast path for IPv6 clients: their TCP to fake IPv6 addresses translated to IPv4.

The box's vproxy has no IPv6 address the modem routes (it stays invisible
on IPv6), so the relay connects IPv6 clients over IPv4, and nftables cannot
NAT between the families. `Nat64` puts a header translator at tc ingress
and egress of vproxy's home-side device (`c/nat64.c`):

```
 IPv6 client --TCP--> fake6 (twin of fake4)       vproxy0 tc ingress
     fake4 mapped (map_fake) and the client has a shadow address?
       yes: IPv4 shadow -> fake4  --> the relay table's DNAT fake4 -> real4,
                                      masquerade, ct mark: the IPv4 fast path
       no:  untouched             --> TPROXY, the relay (which then maps it)
 reply real4 -> vproxy4 --> conntrack: fake4 -> shadow --> route to the shadow range
                                                         (vproxy0, a permanent neighbour)
                                              vproxy0 tc egress: IPv6 fake6 -> client
```

A shadow address stands for one IPv6 client inside vproxy only (RFC 7757's
SIIT-EAM, as a CLAT does): the IPv4 fast path then sees an IPv4 client,
its conntrack tells the client's connections apart and picks the
masquerade ports. `shadow_for(client6)` hands one out from
`shadow_network` (at most `MAX_CLIENTS`), reusing the least recently handed
one when the range is full. `start` routes the range to the device through
a permanent neighbour (no ARP for it ever reaches the home) with an MTU 20
bytes under the device's (an IPv4 packet grows by 20 bytes as IPv6), and
`close` removes both.

Like the DNS kernel cache, the programs are attached by this process (a
tcx link it holds; a clsact filter where the kernel has no tcx) and go with
it. Where they cannot be built or loaded `start` raises `Unavailable` and
IPv6 clients' connections keep going through the relay.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import os
import socket
import struct
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent / "c" / "nat64.c"
INGRESS, EGRESS = "nat64_ingress", "nat64_egress"
STATS = ("to4", "to6", "not_mapped", "no_shadow", "dropped", "failed", "not_ours")
CONFIG = struct.Struct("<IIIII12s")
CLIENT = struct.Struct("<4sI")
SHADOW = struct.Struct("<16s6s2x")
U32 = struct.Struct("<I")

# Before the DNS kernel cache's 0xC00D on 6.1 (clsact): this program passes what is not its own
# on (TC_ACT_UNSPEC), that one ends the walk.
FILTER_PRIO = 0xC00C
FILTER_NAME = "appliance-nat64"
# The shadow range's neighbour: a link-local address no home device uses, never resolved.
NEXT_HOP = "169.254.100.1"
NEXT_HOP_MAC = "02:00:5e:64:64:01"
HEADER_GROWTH = 20  # IPv6's header over IPv4's
MAX_CLIENTS = 4096  # n64_clients' and n64_shadows' max_entries


class Unavailable(RuntimeError):
    """The translator could not be built, loaded or attached: the relay carries IPv6 clients."""


def config_value(fake_network: str, fake_network6: str, shadow_network: str) -> bytes:
    net4 = ipaddress.IPv4Network(fake_network)
    net6 = ipaddress.IPv6Network(fake_network6)
    shadow = ipaddress.IPv4Network(shadow_network)
    if net6.prefixlen > 96:
        raise Unavailable(f"the fake IPv6 range {net6} is longer than /96: its twins would not fit")
    if net4.overlaps(shadow):
        raise Unavailable(f"the shadow range {shadow} overlaps the fake range {net4}")
    return CONFIG.pack(1, int(net4.network_address), net4.num_addresses,
                       int(shadow.network_address), int(shadow.netmask), net6.network_address.packed[:12])


def build(out_dir: Path) -> Path:
    from appliance.switch.datapath.build import BuildError, build as clang_build

    try:
        return clang_build(SOURCE.read_text(), out_dir)
    except (BuildError, OSError) as exc:
        raise Unavailable(f"not built: {str(exc)[-500:]}") from None


def remove_leftovers(device: str) -> None:
    """Take off what a killed relay's translator left on `device` (in this netns): its clsact
    filters (a filter outlives its process, a tcx link does not) and its route and neighbour.
    A successor that translates replaces them; one that does not must not leave IPv6 clients'
    connections translated onto a fast path that no longer maps them."""
    from appliance.kernel import onlink
    from appliance.kernel.tc import PARENT_EGRESS, PARENT_INGRESS, LinuxTc

    try:
        ifindex = socket.if_nametoindex(device)
    except OSError:
        return
    for parent in (PARENT_INGRESS, PARENT_EGRESS):
        LinuxTc(False).filter_detach(None, ifindex, FILTER_PRIO, parent=parent)
    onlink.remove(ifindex, NEXT_HOP)


class Nat64:
    """The translator on `device` (in this process's netns) and its maps."""

    def __init__(self, device: str, fake_network: str, fake_network6: str, shadow_network: str,
                 build_dir: Path, tcx: bool | None = None):
        self.device = device
        self.fake_network = ipaddress.IPv4Network(fake_network)
        self.fake_network6 = ipaddress.IPv6Network(fake_network6)
        self.shadow_network = ipaddress.IPv4Network(shadow_network)
        self.build_dir = build_dir
        self.tcx = tcx
        self.ifindex = 0
        self.attach_mode = ""
        self._obj = None
        self._links: list[int] = []
        self._filters: list[int] = []
        # client6 (text) -> shadow (int), least recently handed first
        self._shadows: OrderedDict[str, int] = OrderedDict()
        self._free = itertools.islice((int(a) for a in self.shadow_network.hosts()), MAX_CLIENTS)
        self._by_shadow: dict[int, str] = {}
        self._routed = False

    # -- life -------------------------------------------------------------------
    def start(self) -> None:
        from appliance.kernel import libbpf
        from appliance.kernel.tc import PARENT_EGRESS, PARENT_INGRESS, LinuxTc

        value = config_value(str(self.fake_network), str(self.fake_network6), str(self.shadow_network))
        try:
            self.ifindex = socket.if_nametoindex(self.device)
        except OSError:
            raise Unavailable(f"no device {self.device}") from None
        obj_path = build(self.build_dir)
        try:
            self._obj = libbpf.LinuxBpf().load(str(obj_path), (INGRESS, EGRESS))
        except OSError as exc:
            tail = [ln for ln in (getattr(exc, "log", "") or "").splitlines() if ln.strip()][-4:]
            raise Unavailable(f"the kernel refused the translator: {str(exc)[:200]}"
                              + (": " + " | ".join(tail) if tail else "")) from None
        try:
            libbpf.map_update(self._obj.map_fd("n64_config"), U32.pack(0), value)
            if LinuxTc(self.tcx).tcx_supported():
                # Held by this process only: a dead relay leaves no translator behind. First on
                # ingress, so the DNS kernel cache (which ends the walk) does not hide IPv6 TCP.
                self._links.append(libbpf.link_create(self._obj.prog_fd(INGRESS), self.ifindex,
                                                      libbpf.BPF_TCX_INGRESS, libbpf.BPF_F_BEFORE))
                self._links.append(libbpf.link_create(self._obj.prog_fd(EGRESS), self.ifindex,
                                                      libbpf.BPF_TCX_EGRESS))
                self.attach_mode = "tcx"
            else:
                tc = LinuxTc(False)
                for prog, parent in ((INGRESS, PARENT_INGRESS), (EGRESS, PARENT_EGRESS)):
                    tc.filter_attach(None, self.ifindex, self._obj.prog_fd(prog), FILTER_PRIO,
                                     FILTER_NAME, parent=parent)
                    self._filters.append(parent)
                self.attach_mode = "tc clsact"
        except Exception as exc:
            self.close()
            raise Unavailable(f"cannot attach to {self.device}: {exc}") from None
        try:
            self._make_route()
        except Exception as exc:
            self.close()
            raise Unavailable(f"no route for the shadow range {self.shadow_network}: {exc}") from None
        log.info("IPv6 translator on %s (%s), IPv6 clients shadowed by %s", self.device,
                 self.attach_mode, self.shadow_network)

    def _make_route(self) -> None:
        from appliance.kernel import onlink

        onlink.replace(self.ifindex, str(self.shadow_network), NEXT_HOP, NEXT_HOP_MAC, HEADER_GROWTH)
        self._routed = True

    def close(self) -> None:
        from appliance.kernel import libbpf
        from appliance.kernel.tc import LinuxTc

        for fd in self._links:
            try:
                libbpf.link_detach(fd)
            except OSError:
                pass
            os.close(fd)
        self._links = []
        for parent in self._filters:
            try:
                LinuxTc(False).filter_detach(None, self.ifindex, FILTER_PRIO, parent=parent)
            except Exception as exc:  # noqa: BLE001 - the device may be gone with its filters
                log.warning("translator filter not removed from %s: %s", self.device, exc)
        self._filters = []
        if self._routed:
            from appliance.kernel import onlink
            from appliance.kernel.base import KernelError

            try:
                onlink.remove(self.ifindex, NEXT_HOP)
            except KernelError as exc:  # the device may be gone with its routes
                log.warning("shadow route not removed from %s: %s", self.device, exc)
            self._routed = False
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    # -- maps -------------------------------------------------------------------
    def map_fake(self, fake4: str, real4: str) -> None:
        """IPv6 clients' TCP to `fake4`'s twin goes through the kernel from now on."""
        from appliance.kernel import libbpf

        libbpf.map_update(self._obj.map_fd("n64_fakes"), socket.inet_aton(fake4), socket.inet_aton(real4))

    def unmap_fake(self, fake4: str) -> None:
        from appliance.kernel import libbpf

        libbpf.map_delete(self._obj.map_fd("n64_fakes"), socket.inet_aton(fake4))

    def shadow_for(self, client6: str) -> str:
        """The IPv4 address standing for `client6` inside vproxy (handed out on first use)."""
        from appliance.kernel import libbpf

        client6 = str(ipaddress.IPv6Address(client6))
        known = self._shadows.get(client6)
        if known is not None:
            self._shadows.move_to_end(client6)
            return str(ipaddress.IPv4Address(known))
        shadow = next(self._free, None)
        if shadow is None:
            # Full: the least recently handed address moves to this client.
            old_client, shadow = self._shadows.popitem(last=False)
            del self._by_shadow[shadow]
            libbpf.map_delete(self._obj.map_fd("n64_clients"), socket.inet_pton(socket.AF_INET6, old_client))
        raw6 = socket.inet_pton(socket.AF_INET6, client6)
        raw4 = shadow.to_bytes(4, "big")
        # The reverse entry first: the ingress program trusts a client entry only when the shadow's
        # entry names the same client.
        libbpf.map_update(self._obj.map_fd("n64_shadows"), raw4, SHADOW.pack(raw6, b"\0" * 6))
        libbpf.map_update(self._obj.map_fd("n64_clients"), raw6, CLIENT.pack(raw4, 0))
        self._shadows[client6] = shadow
        self._by_shadow[shadow] = client6
        return str(ipaddress.IPv4Address(shadow))

    def client_of(self, address: str) -> str | None:
        """The IPv6 client a shadow address stands for (None: not a shadow handed out)."""
        try:
            return self._by_shadow.get(int(ipaddress.IPv4Address(address)))
        except ValueError:
            return None

    def stats(self) -> dict:
        from appliance.kernel import libbpf

        return libbpf.percpu_counters(self._obj.map_fd("n64_stats"), STATS)
