"""The modem as the box knows it: its MAC, learned from its own frames, and when to believe a new one.

The virtual gateway (gw0) carries the modem's IP and MAC, and the flows
and the console/SSH guards are keyed on that MAC; a modem replaced (or
one whose MAC changes) must be followed, or DHCP answers come from a MAC
that is not the gateway's and the guards no longer hold. Unless the
settings name the MAC (`gateway.mac`: then nothing here runs), the modem
watch (`appliance.box.modemwatch`, a service of the plan) learns it:

- passively: every frame arriving on the uplink with the gateway's address
  as ARP sender or IPv4 source carries the gateway's MAC (a BPF filter on a
  tap of the uplink NIC; the box sends nothing for it);
- on a link change (the uplink's carrier came back, or the NIC was
  replaced), and when IPv4 frames from the gateway's address come with
  another MAC: one ordinary ARP request for the gateway from the admin
  port, as the admin host the modem already knows (its MAC, its address),
  which every host sends after a link change. Never from the uplink NIC
  (it carries a MAC of the box's own making while bridged) nor as the
  gateway.

A new MAC is believed on ARP only (the gateway stating its address, or
answering that request). IPv4 frames alone are not enough: under a flood
of DNS from a home client right after an apply, the uplink's tap counted
IPv4 frames from 192.168.1.1 with that client's MAC; believed, the box
re-applied with the client's MAC as the gateway's, the client was told
192.168.1.1 is itself, and its IPv4 to the gateway (DNS included) went
nowhere until its ARP entry was renewed.

`Learner` decides when a MAC seen is the gateway's now; `Learned` is what
is kept (`Layout.gateway_file`), which `Box.observe` prefers to what the
last apply observed, so every apply after it (the console's, a rollback,
the CLI's) uses the new MAC. Pure: no I/O here.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

# One ARP frame with the gateway's address as sender is the gateway speaking;
# IPv4 from its address with another MAC this often within WINDOW seconds is a
# reason to ask (`Learner.doubt`), never a change by itself.
IP_SIGHTINGS = 2
WINDOW = 10.0
# After a link change, ask at these offsets (s) unless the gateway spoke first.
PROBE_AT = (0.5, 2.0, 5.0)


@dataclass(frozen=True)
class Learned:
    """The gateway's address and the MAC last learned for it."""

    ip: str
    mac: str
    how: str = ""  # "arp", "ip"
    time: float = 0.0  # wall clock, for people

    def to_json(self) -> str:
        return json.dumps(asdict(self)) + "\n"

    @classmethod
    def from_json(cls, text: str | None) -> "Learned | None":
        """The kept record, or None when there is none or it is unreadable (then nothing was learned)."""
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(str(data["ip"]), str(data["mac"]).lower(), str(data.get("how", "")),
                       float(data.get("time", 0.0)))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class WatchConfig:
    """What the modem watch needs; names as placed. No MAC in it: the watch's own
    re-apply must not change its definition (it would restart itself mid-apply)."""

    host_ns: str | None  # where the uplink NIC and the admin port are
    uplink: str
    admin_dev: str
    admin_ip: str
    gateway_ip: str
    gw_ns: str | None  # the virtual gateway's namespace and link, for the announcement
    gw_dev: str
    learned: str  # Layout.gateway_file
    events: str  # Layout.health_events
    # The box it re-applies: its state and run directories, and what runs its services.
    state_dir: str = ""
    run_dir: str = ""
    runner: str = "supervisor"
    link_file: str = ""  # the uplink as last read (runtime: a restarted watch compares with it)
    interval: float = 0.5

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "WatchConfig":
        return cls(**data)


@dataclass
class Learner:
    """Sightings of MACs from the gateway's address -> the gateway's MAC, when it changes.

    `current` is the MAC the box runs with. A different MAC is believed on
    one ARP frame (the gateway stating its address). `IP_SIGHTINGS` IPv4
    frames with another MAC within `WINDOW` seconds raise `doubt` (the
    watch then asks by ARP); a sighting of the current MAC meanwhile
    forgets the candidates (the old modem still speaks: no change).
    """

    current: str | None
    _seen: dict[str, list[float]] = field(default_factory=dict)
    doubt: bool = False

    def saw(self, mac: str, arp: bool, now: float) -> str | None:
        """Record one frame; the new MAC when it is now believed, else None."""
        mac = mac.lower()
        if mac == self.current:
            self._seen.clear()
            return None
        if arp:
            self.current = mac
            self._seen.clear()
            return mac
        times = [t for t in self._seen.get(mac, []) if now - t <= WINDOW] + [now]
        self._seen[mac] = times
        if len(times) >= IP_SIGHTINGS:
            self.doubt = True
            del self._seen[mac]
        return None


@dataclass
class LinkWatch:
    """Link changes of the uplink (its carrier lost and back, or another NIC under its name) -> when to ask.

    The kernel's count of carrier changes tells of a cable moved between two
    reads too (a modem swapped in a blink is still a new modem)."""

    carrier: bool | None = None
    ifindex: int | None = None
    changes: int | None = None
    _asks: list[float] = field(default_factory=list)
    _quiet_until: float = 0.0

    def update(self, carrier: bool, ifindex: int | None, now: float, changes: int = 0) -> bool:
        """The link as read now; True when it changed into a usable link (asks are scheduled)."""
        known = self.ifindex is not None
        changed = carrier and (self.carrier is False or (known and ifindex != self.ifindex)
                               or (known and self.changes is not None and changes != self.changes))
        self.carrier, self.ifindex, self.changes = carrier, ifindex, changes
        if changed:
            self._asks = [now + t for t in PROBE_AT]
        return bool(changed)

    def heard(self) -> None:
        """The gateway spoke: no more asking."""
        self._asks = []

    def ask(self, now: float) -> bool:
        """Ask as after a link change (IPv4 came with another MAC), at most once a `WINDOW`:
        whether asks were scheduled."""
        if self._asks or now < self._quiet_until:
            return False
        self._asks = [now + t for t in PROBE_AT]
        self._quiet_until = now + WINDOW
        return True

    def due(self, now: float) -> bool:
        """Whether an ask is due now (each scheduled one is due once)."""
        if self._asks and now >= self._asks[0]:
            self._asks.pop(0)
            return True
        return False
