"""Apply-on-boot that never leaves the home cut off (`./manage.py apply --boot`).

The box sits between the modem and the home: a boot that applies nothing
leaves its NICs unbridged and the home offline. So the boot goes down a
ladder and stops at the first rung that works:

1. the applied settings (`applied.json`), as every boot;
2. the last good ones (`applied.good.json`: applied, answering their probes)
   when the applied file is unreadable (cut short by a power cut, garbage),
   invalid (a newer version's, a broken edit), names a NIC this machine does
   not have (replaced, renamed) or does not apply;
3. the factory bridge: every NIC in one bridge (`br0`), so the modem serves
   the home directly, with the admin address of the last readable settings
   on it so the console stays where it was.

Each fallback leaves a boot note (`Layout.boot_note`) that the console shows
as a banner and `./manage.py status` prints, and its own exit code, so the
image's boot script (and a test) can tell: 0 the applied settings,
LAST_GOOD, FACTORY. The broken file is left as it was for whoever looks.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Callable

from appliance.box import stored
from appliance.box.layout import RESERVED_LINK_NAMES
from appliance.box.runtime import Box, Change
from appliance.box.settings import Settings
from appliance.kernel.desired import Address, Bridge, BridgePort
from appliance.kernel.reconcile import reconcile

APPLIED, LAST_GOOD, FACTORY = 0, 3, 4
FACTORY_BRIDGE = "br0"  # as the image's first boot names it


@dataclass(frozen=True)
class BootNote:
    """What the boot ran instead of the applied settings, and why."""

    ran: str  # "last-good" or "factory"
    reasons: tuple[str, ...]
    time: float
    address: dict | None = None  # {"dev", "cidr"}: the admin address the factory bridge carries

    @property
    def banner(self) -> str:
        what = ("the last good settings" if self.ran == "last-good"
                else "the factory bridge (every NIC in one bridge: the modem serves the home directly)")
        return f"At boot the box could not apply its settings and runs {what}: " + "; ".join(self.reasons)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> BootNote | None:
        try:
            data = json.loads(text)
            return cls(data["ran"], tuple(data["reasons"]), float(data["time"]), data.get("address"))
        except (ValueError, KeyError, TypeError):
            return None


def read_note(box: Box) -> BootNote | None:
    text = box.fs.read(box.layout.boot_note)
    return BootNote.from_json(text) if text else None


def read_state(box: Box, path: str) -> tuple[stored.Applied | None, str | None]:
    """(the state, None) or (None, what is wrong with the file)."""
    text = box.fs.read(path)
    if text is None:
        return None, "missing"
    if not text.strip():
        return None, "empty (a write cut short)"
    try:
        applied = stored.loads(text, box.layout, box.placement)
    except stored.StateError as e:
        return None, str(e)
    return (applied, None) if applied is not None else (None, "not JSON (a write cut short, or garbage)")


def missing_nics(settings: Settings, present: set[str]) -> list[str]:
    return [n for n in (settings.ports.uplink, settings.ports.downlink) if n not in present]


def factory_objects(ns: str | None, nics: list[str], admin_cidr: str | None) -> list:
    """The factory bridge: every NIC a port of `br0`, the admin address on it if one is known."""
    objs: list = [Bridge(ns, FACTORY_BRIDGE), *(BridgePort(ns, nic, FACTORY_BRIDGE) for nic in sorted(nics))]
    if admin_cidr:
        objs.append(Address(ns, FACTORY_BRIDGE, admin_cidr))
    return objs


def factory_nics(links) -> list[str]:
    """The machine's NICs: its devices (veths in the lab), not the box's own links."""
    return [l.name for l in links
            if l.kind in ("device", "veth") and l.name != "lo" and l.name not in RESERVED_LINK_NAMES]


def _admin_cidr(settings: Settings | None) -> str | None:
    if settings is None:
        return None
    return f"{settings.admin.address}/{settings.lan.prefix.prefixlen}"


def boot(box: Box, out: Callable[[str], None] = print, clock: Callable[[], float] = time.time) -> int:
    """Apply at boot, down the ladder; returns APPLIED, LAST_GOOD or FACTORY."""
    host = box.placement.host_ns
    reasons: list[str] = []
    known: Settings | None = None  # the last readable settings: their admin address
    for label, path in (("applied", box.layout.state_file), ("last good", box.layout.good_state_file)):
        applied, problem = read_state(box, path)
        if applied is None:
            reasons.append(f"the {label} settings ({path}) are {problem}" if problem == "missing"
                           else f"the {label} settings ({path}) cannot be read: {problem}")
            out(f"boot: {reasons[-1]}")
            continue
        known = known or applied.settings
        present = {l.name for l in box.kernel.links(host)}
        gone = missing_nics(applied.settings, present)
        if gone:
            reasons.append(f"the {label} settings name NIC(s) this machine does not have: {', '.join(gone)} "
                           f"(it has: {', '.join(sorted(factory_nics(box.kernel.links(host)))) or 'none'})")
            out(f"boot: {reasons[-1]}")
            continue
        out(f"boot: applying the {label} settings")
        settings = applied.settings
        # Nothing of the box runs yet: planned as a first apply (a failure removes what it made),
        # with what the stored state observed (the NICs' MACs, the gateway's).
        observed = box.observe(settings, applied)
        change = Change(None, observed, box.plan(settings, observed))
        try:
            res = box.apply(settings, progress=out, change=change, before=applied.before)
        except Exception as e:  # noqa: BLE001 - whatever it is, the next rung must still run
            res = None
            error = f"{type(e).__name__}: {e}"
        else:
            error = res.error
        if res is not None and res.ok:
            if label == "applied":
                return APPLIED
            _note(box, "last-good", reasons, clock, out)
            return LAST_GOOD
        reasons.append(f"the {label} settings did not apply: {error}")
        out(f"boot: {reasons[-1]}")
    out("boot: falling back to the factory bridge")
    nics = factory_nics(box.kernel.links(host))
    cidr = _admin_cidr(known)
    for line in reconcile(box.kernel, factory_objects(host, nics, cidr)):
        out(line)
    _note(box, "factory", reasons, clock, out, {"dev": FACTORY_BRIDGE, "cidr": cidr} if cidr else None)
    return FACTORY


def _note(box: Box, ran: str, reasons: list[str], clock, out, address: dict | None = None) -> None:
    note = BootNote(ran, tuple(reasons), clock(), address)
    try:
        box.fs.write(box.layout.boot_note, note.to_json())
    except OSError as e:  # a full disk must not undo the fallback itself
        out(f"boot: the boot note could not be written: {e}")
    out(f"boot: {note.banner}")
