"""Which Host headers the console answers: loopback, the box's own names and addresses, nothing else.

`ALLOWED_HOSTS = *` let a web page on any home device reach the console
under the page's own name, by pointing that name at the box (DNS
rebinding), and script it from the victim's browser and address. The names
the box answers to are its host name (and `NAME.local`), loopback, those
the environment adds (`DJANGO_ALLOWED_HOSTS`: the demo's address), and its
address: the admin address of the applied settings, or, before the first
apply (the factory bridge, an address by DHCP), the addresses its host
namespace holds.

That address changes with an apply, so `BoxHosts` is the `ALLOWED_HOSTS`
list itself, working out its changing part again at most every
`TTL` seconds when a Host is checked (Django and Channels' origin check both
iterate the setting per request; a Host in the fixed part never reaches the
changing part).
"""
from __future__ import annotations

import socket
import time


class BoxHosts(list):
    TTL = 2.0

    def __init__(self, fixed):
        super().__init__(fixed)
        self._at = float("-inf")
        self._found: tuple[str, ...] = ()

    def __iter__(self):
        yield from list.__iter__(self)
        yield from self.found()

    def __len__(self):
        return list.__len__(self) + len(self.found())

    def __contains__(self, host):
        return any(host == h for h in self)

    def __repr__(self):
        return f"BoxHosts({list(self)!r})"

    def found(self) -> tuple[str, ...]:
        now = time.monotonic()
        if now - self._at > self.TTL:
            self._found = tuple(box_hosts())
            self._at = now
        return self._found


def box_hosts() -> list[str]:
    """The box's host names and its address(es), as Host headers carry them."""
    name = socket.gethostname()
    hosts = [name, f"{name}.local"]
    try:
        from appliance.web import boxes

        box = boxes.get_box()
        applied = box.applied_settings()
        if applied is not None:
            addresses = [str(applied.admin.address)]
        else:
            ns = box.placement.host_ns
            addresses = [a.split("/")[0] for link in box.kernel.links(ns) if link.name != "lo"
                         for a in box.kernel.addresses(ns, link.name)]
    except Exception:  # noqa: BLE001 - no box to ask (not set up, a broken state file): names only
        addresses = []
    hosts += [f"[{a}]" if ":" in a else a for a in addresses]
    return hosts
