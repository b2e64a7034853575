"""Which changes could cut the admin off, and so must be confirmed (LuCI's apply-with-confirm).

Pure: compares the running settings with the new ones. A change of the
ports, the admin address or its guarded ports, the gateway, the LAN, or of
custom flows that match on or output to the admin port could leave the
console unreachable; such an apply rolls itself back unless confirmed.
"""
from __future__ import annotations

from appliance.box.plan import PORT_NUMBERS
from appliance.box.settings import Settings


def _flows_touch_admin(text: str) -> bool:
    if not text.strip():
        return False
    try:
        from appliance.switch import flows as FL
        from appliance.switch.parser import parse_flows

        parsed = parse_flows(text, PORT_NUMBERS)
    except (ImportError, ValueError):
        return "admin" in text  # be careful when unsure
    admin = PORT_NUMBERS["admin"]
    for f in parsed:
        got = f.match.get("in_port")
        if got is not None and got[0] == admin:
            return True
        if any(isinstance(a, FL.Output) and a.port == admin for a in f.actions):
            return True
        if any(type(a).__name__ in ("Flood", "All", "Normal") for a in f.actions):
            return True  # these reach the admin port too
    return False


def confirm_reasons(old: Settings | None, new: Settings) -> list[str]:
    """Why this change needs confirming; [] if it cannot cut the admin off."""
    if old is None:
        return []  # a first apply: there is no running console to cut off yet
    reasons = []
    if old.ports != new.ports:
        reasons.append("ports changed")
    if old.admin.address != new.admin.address:
        reasons.append(f"admin address {old.admin.address} -> {new.admin.address}")
    if old.admin.guarded_ports != new.admin.guarded_ports:
        reasons.append("admin guarded ports changed")
    if old.gateway != new.gateway:
        reasons.append("gateway changed")
    if old.lan != new.lan:
        reasons.append(f"LAN {old.lan.prefix} -> {new.lan.prefix}")
    if old.flows.custom != new.flows.custom and (
            _flows_touch_admin(old.flows.custom) or _flows_touch_admin(new.flows.custom)):
        reasons.append("custom flows touching the admin port changed")
    return reasons
