"""Which changes could cut the admin off, and so must be confirmed (LuCI's apply-with-confirm).

Pure: compares the running plan with the new one. A change of the ports,
the admin address or its guarded ports, the gateway, the LAN, or of custom
flows that match on or output to the admin port could leave the console
unreachable; such an apply rolls itself back unless confirmed.
"""
from __future__ import annotations

from ipaddress import IPv4Interface

from appliance.box.flows import guarded_ports, touches_admin
from appliance.box.layout import ADMIN_DEV, GW_DEV
from appliance.box.plan import Plan
from appliance.kernel.desired import Address, Veth


def _address(p: Plan, dev: str) -> IPv4Interface | None:
    return next((IPv4Interface(o.cidr) for o in p.kernel if isinstance(o, Address) and o.dev == dev), None)


def _gateway(p: Plan) -> tuple:
    mac = next((o.mac for o in p.kernel if isinstance(o, Veth) and o.name == GW_DEV), None)
    ip = _address(p, GW_DEV)
    return (ip.ip if ip else None, mac)


def _nics(p: Plan) -> dict[str, str]:
    return {sp.name: sp.link for sp in p.switch.ports}


def confirm_reasons(old: Plan | None, new: Plan) -> list[str]:
    """Why this change needs confirming; [] if it cannot cut the admin off."""
    if old is None:
        return []  # a first apply: there is no running console to cut off yet
    reasons = []
    if _nics(old) != _nics(new):
        reasons.append("ports changed")
    was, now = _address(old, ADMIN_DEV), _address(new, ADMIN_DEV)
    if was and now and was.ip != now.ip:
        reasons.append(f"admin address {was.ip} -> {now.ip}")
    if guarded_ports(old.switch.flows) != guarded_ports(new.switch.flows):
        reasons.append("admin guarded ports changed")
    if _gateway(old) != _gateway(new):
        reasons.append("gateway changed")
    if was and now and was.network != now.network:
        reasons.append(f"LAN {was.network} -> {now.network}")
    if old.switch.custom != new.switch.custom and (
            touches_admin(old.switch.custom) or touches_admin(new.switch.custom)):
        reasons.append("custom flows touching the admin port changed")
    return reasons
