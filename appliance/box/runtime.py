"""The box as one object: observe, plan, apply, tear down; the last applied state.

`Box` ties the pure planner to the apply layer for one machine (or one lab
`box` namespace, through `Placement`). It keeps the last applied settings and
what was observed then in `STATE_DIR/applied.json`, so the previous plan can
be rebuilt exactly (for diffs, for restore after a failed apply, for
apply-on-boot).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from appliance.box import plan as planner
from appliance.box.apply import Applier, ApplyResult
from appliance.box.placement import Placement, place
from appliance.box.settings import Settings
from appliance.kernel import Kernel, LinuxKernel

Progress = Callable[[str], None]


@dataclass
class BoxResult:
    ok: bool
    diff: str
    changes: list[str] = field(default_factory=list)
    error: str | None = None
    restored: bool = False
    dry_run: bool = False


def service_runner(run_dir: str):
    """systemd units when the box runs its services that way (the image,
    `APPLIANCE_SERVICES=systemd`), else the supervisor under RUN_DIR/services.

    The apply starts services through it and the console asks it their state,
    so both always talk to the same one.
    """
    if os.environ.get("APPLIANCE_SERVICES") == "systemd":
        from appliance.services.units import SystemdUnits
        return SystemdUnits()
    from appliance.services.supervisor import Supervisor
    return Supervisor(f"{run_dir}/services")


class Box:
    def __init__(self, *, placement: Placement = Placement(), layout: planner.Layout = planner.Layout(),
                 kernel: Kernel | None = None, switch=None, services=None, fs=None):
        self.placement = placement
        self.layout = layout
        self.kernel = kernel or LinuxKernel()
        self._switch = switch
        self._services = services
        self._fs = fs
        self.state_path = Path(layout.state_dir) / "applied.json"

    # -- collaborators, made on first use so planning needs none of them ----
    @property
    def services(self):
        """What runs this box's services (`start`, `stop`, `remove`, `status`); see `service_runner`."""
        if self._services is None:
            self._services = service_runner(self.layout.run_dir)
        return self._services

    @property
    def applier(self) -> Applier:
        if self._switch is None:
            from appliance.box.switchload import DatapathLoader
            self._switch = DatapathLoader.of(self)
        return Applier(self.kernel, self._switch, self.services, self._fs)

    # -- observe and plan ---------------------------------------------------
    def observe(self, settings: Settings) -> planner.Observed:
        host = self.placement.host_ns
        macs = {l.name: l.mac for l in self.kernel.links(host) if l.kind in ("device", "veth")}
        applied = self._load()
        if applied:
            # A NIC the box re-addressed reports the box's MAC now; what the
            # plan needs is the one it had before (the admin port carries it).
            for nic, mac in applied["observed"]["nic_macs"]:
                if nic in macs and macs[nic] != mac and macs[nic] == planner.derived_mac(f"nic:{nic}"):
                    macs[nic] = mac
        nics = {n: macs[n] for n in (settings.ports.uplink, settings.ports.downlink) if n in macs}
        gw_mac = None
        if settings.gateway.mac is None:
            if applied and applied["observed"].get("gateway_mac") \
                    and applied["settings"]["gateway"]["ip"] == str(settings.gateway.ip):
                gw_mac = applied["observed"]["gateway_mac"]
            elif settings.ports.uplink in macs:
                # An ARP probe (sender 0.0.0.0) from the uplink NIC: nothing borrowed, nothing to set up.
                gw_mac = self.kernel.arp_probe(host, settings.ports.uplink, str(settings.gateway.ip))
        return planner.Observed.of(nics, gw_mac)

    def plan(self, settings: Settings, observed: planner.Observed | None = None) -> planner.Plan:
        observed = observed or self.observe(settings)
        return place(planner.plan(settings, observed, self.layout), self.placement)

    # -- state --------------------------------------------------------------
    def _load(self) -> dict | None:
        try:
            return json.loads(self.state_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def applied_settings(self) -> Settings | None:
        data = self._load()
        return Settings.model_validate(data["settings"]) if data else None

    def applied_plan(self) -> planner.Plan | None:
        data = self._load()
        if not data:
            return None
        observed = planner.Observed(tuple(tuple(x) for x in data["observed"]["nic_macs"]),
                                    data["observed"].get("gateway_mac"))
        return place(planner.plan(Settings.model_validate(data["settings"]), observed, self.layout),
                     self.placement)

    def _save(self, settings: Settings, observed: planner.Observed, before: dict) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({
            "settings": settings.model_dump(mode="json"),
            "observed": {"nic_macs": [list(x) for x in observed.nic_macs],
                         "gateway_mac": observed.gateway_mac},
            "before": before,
        }, indent=1))
        tmp.replace(self.state_path)

    # -- apply --------------------------------------------------------------
    def apply(self, settings: Settings, *, dry_run: bool = False, progress: Progress | None = None) -> BoxResult:
        progress = progress or (lambda line: None)
        observed = self.observe(settings)
        new = self.plan(settings, observed)
        old = self.applied_plan()
        diff = planner.diff(old, new)
        if dry_run:
            return BoxResult(ok=True, diff=diff, dry_run=True)
        # How the NICs were before the box first took them (a factory bridge,
        # say), so teardown can give them back as they were.
        applied = self._load()
        before = applied["before"] if applied else {"masters": {
            l.name: l.master for l in self.kernel.links(self.placement.host_ns)
            if l.name in (settings.ports.uplink, settings.ports.downlink) and l.master}}
        res: ApplyResult = self.applier.apply(new, old, progress)
        if res.ok:
            self._save(settings, observed, before)
        return BoxResult(ok=res.ok, diff=diff, changes=res.changes, error=res.error, restored=res.restored)

    def teardown(self, progress: Progress | None = None) -> list[str]:
        old = self.applied_plan()
        if old is None:
            return []
        changes = self.applier.teardown(old, progress)
        host = self.placement.host_ns
        present = {l.name for l in self.kernel.links(host)}
        for nic, master in (self._load() or {}).get("before", {}).get("masters", {}).items():
            if nic in present and master in present:
                self.kernel.set_link(host, nic, master=master)
                changes.append(f"~ {nic}: back in {master}")
                if progress:
                    progress(changes[-1])
        self.state_path.unlink(missing_ok=True)
        return changes
