"""What was applied, as the box keeps it (`Layout.state_file`, applied.json).

One JSON document: the settings, what was observed of the machine then,
how the NICs were before the box first took them (`before`), and the plan
that was applied, as the kernel, the switch and the service runner got it
(namespaces placed). Restore and teardown use that plan, not one rebuilt
with today's code, so a newer version removes what an older one made.

The settings stay at the top (`settings.admin.address` is what the image's
boot script reads). A state written before plans were kept (no `format`)
still loads: its plan is made again from its settings and observations,
which is what that version did itself.

Flows are kept as `ovs-ofctl add-flows` lines and parsed back on load.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from functools import lru_cache

from appliance.box import plan as planner
from appliance.box.flows import FlowEntry, add_flow_line
from appliance.box.layout import Layout
from appliance.box.placement import Placement, place
from appliance.box.settings import Settings, SettingsError, migrate
from appliance.kernel.base import Route
from appliance.kernel.desired import Address, Bridge, BridgePort, Dummy, Namespace, NftTable, RouteEntry, Sysctls, Veth
from appliance.services.supervisor import ServiceSpec
from appliance.switch.parser import parse_flow, without_source

FORMAT = 2

# Kernel objects by a tag of their own, so renaming a class never orphans a stored plan.
_KERNEL_TAGS = {"netns": Namespace, "bridge": Bridge, "dummy": Dummy, "veth": Veth, "bridge-port": BridgePort,
                "address": Address, "route": RouteEntry, "sysctls": Sysctls, "nft": NftTable}
_TAG_OF = {cls: tag for tag, cls in _KERNEL_TAGS.items()}


class StateError(ValueError):
    """The applied state cannot be read; the message says what is wrong."""


@dataclass(frozen=True)
class Applied:
    settings: Settings
    observed: planner.Observed
    plan: planner.Plan  # as applied (placed)
    before: dict = field(default_factory=dict)  # {"masters": {nic: bridge}} before the box took the NICs


# ---------------------------------------------------------------- to JSON

def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _kernel_obj(o) -> dict:
    data = {"type": _TAG_OF[type(o)]}
    for f in dataclasses.fields(o):
        value = getattr(o, f.name)
        data[f.name] = dataclasses.asdict(value) if isinstance(value, Route) else value
    return data


def plan_to_data(p: planner.Plan) -> dict:
    sw = p.switch
    return {
        "kernel": [_kernel_obj(o) for o in p.kernel],
        "switch": {"bridge": sw.bridge, "ports": [dataclasses.asdict(sp) for sp in sw.ports],
                   "flows": [{"why": e.why, "flow": e.text} for e in sw.flows],
                   "custom": [add_flow_line(f) for f in sw.custom]},
        "directories": list(p.directories),
        "files": [{"path": f.path, "content": f.content, "mode": f.mode,
                   "owner": list(f.owner) if f.owner else None} for f in p.files],
        "services": [s.to_json() for s in p.services],
        "run_dir": p.run_dir,
        "runtime": list(p.runtime),
        "owners": [list(o) for o in p.owners],
    }


def dumps(applied: Applied) -> str:
    return json.dumps({
        "format": FORMAT,
        "settings": applied.settings.model_dump(mode="json"),
        "observed": {"nic_macs": [list(x) for x in applied.observed.nic_macs],
                     "gateway_mac": applied.observed.gateway_mac},
        "before": applied.before,
        "plan": plan_to_data(applied.plan),
    }, indent=1)


# ---------------------------------------------------------------- from JSON

def _kernel_from(data: dict):
    data = dict(data)
    cls = _KERNEL_TAGS[data.pop("type")]
    if cls is RouteEntry:
        return RouteEntry(data["ns"], Route(**data["route"]))
    return cls(**{k: _tuples(v) for k, v in data.items()})


def plan_from_data(data: dict) -> planner.Plan:
    sw = data["switch"]
    ports = tuple(planner.SwitchPort(**p) for p in sw["ports"])
    port_map = {p.name: p.number for p in ports}

    def flow(text: str):
        return without_source(parse_flow(text, port_map))

    switch = planner.Switch(sw["bridge"], ports, tuple(FlowEntry(e["why"], flow(e["flow"])) for e in sw["flows"]),
                            tuple(flow(t) for t in sw["custom"]))
    return planner.Plan(
        kernel=tuple(_kernel_from(o) for o in data["kernel"]),
        switch=switch,
        directories=tuple(data["directories"]),
        files=tuple(planner.ConfigFile(**{**f, "owner": tuple(f["owner"]) if f.get("owner") else None})
                    for f in data["files"]),
        services=tuple(ServiceSpec.from_json(s) for s in data["services"]),
        run_dir=data.get("run_dir", ""),
        runtime=tuple(data.get("runtime", ())),
        owners=tuple(tuple(o) for o in data.get("owners", ())),
    )


@lru_cache(maxsize=8)
def loads(text: str, layout: Layout, placement: Placement) -> Applied | None:
    """The applied state in `text`; `layout` and `placement` rebuild the plan of an old-format state.

    None when `text` is no JSON at all (a write cut short: as if nothing was
    applied, as the box always took it). Pure, and cached: the console reads
    the state on every page.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    try:
        settings = Settings.model_validate(migrate(data["settings"]))  # version 1 still boots
        observed = planner.Observed(tuple(tuple(x) for x in data["observed"]["nic_macs"]),
                                    data["observed"].get("gateway_mac"))
        if "plan" in data:
            p = plan_from_data(data["plan"])
        else:  # written before plans were kept
            p = place(planner.plan(settings, observed, layout), placement)
    except (ValueError, KeyError, TypeError, SettingsError) as e:
        raise StateError(f"the applied state cannot be read: {type(e).__name__}: {e}") from None
    return Applied(settings, observed, p, data.get("before") or {})
