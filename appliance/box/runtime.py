"""The box as one object: observe, plan, apply, tear down; what was applied.

`Box` ties the pure planner to the apply layer for one machine (or one lab
`box` namespace, through `Placement`). Its collaborators are ports
(`appliance.box.protocols`): the kernel, the switch loader, the service
runner and the file system, the machine's by default, fakes in tests. Its
state, what was applied (`appliance.box.stored`), goes through the file
system port like every other file the box writes; an apply reads it once.

`appliance.box.locate` makes the box a process should manage from the
environment (the CLI, the console and the services all ask it).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

from appliance.box import plan as planner
from appliance.box import stored
from appliance.box.apply import Applier, ApplyResult
from appliance.box.files import RealFileSystem
from appliance.box.layout import ADMIN_DEV, GW_DEV, Layout, derived_mac
from appliance.box.modem import Learned
from appliance.box.placement import Placement, place
from appliance.box.protocols import FileSystem, ServiceRunner, SwitchLoader
from appliance.box.settings import Settings
from appliance.box.switchload import DatapathLoader
from appliance.kernel import Kernel, LinuxKernel
from appliance.kernel.base import KernelError
from appliance.services.supervisor import Supervisor

Progress = Callable[[str], None]
LOCK_WAIT = 300.0  # seconds an apply waits for another one of the same box to finish


@dataclass
class BoxResult:
    ok: bool
    diff: str
    changes: list[str] = field(default_factory=list)
    error: str | None = None
    restored: bool = False
    dry_run: bool = False


@dataclass(frozen=True)
class Change:
    """An apply, planned: what was applied (as stored), what was observed, the new plan."""

    applied: stored.Applied | None
    observed: planner.Observed
    new: planner.Plan

    @property
    def old(self) -> planner.Plan | None:
        return self.applied.plan if self.applied else None

    @property
    def diff(self) -> str:
        return planner.diff(self.old, self.new)


class Box:
    def __init__(self, *, placement: Placement = Placement(), layout: Layout = Layout(),
                 kernel: Kernel | None = None, switch: SwitchLoader | None = None,
                 services: ServiceRunner | None = None, fs: FileSystem | None = None):
        self.placement = placement
        self.layout = layout
        self.kernel = kernel or LinuxKernel()
        self._switch = switch
        self._services = services
        self._fs = fs or RealFileSystem()

    # -- collaborators; the machine's are made on first use, so planning needs none
    @property
    def services(self) -> ServiceRunner:
        """What runs this box's services; the apply and the console's readings use this one."""
        if self._services is None:
            self._services = Supervisor(self.layout.services_dir)
        return self._services

    @property
    def switch(self) -> SwitchLoader:
        if self._switch is None:
            self._switch = DatapathLoader.of(self)
        return self._switch

    @property
    def fs(self) -> FileSystem:
        return self._fs

    @property
    def applier(self) -> Applier:
        return Applier(self.kernel, self.switch, self.services, self._fs)

    # -- what was applied -----------------------------------------------------
    def applied(self) -> stored.Applied | None:
        """What was applied last (one read of the state file), or None.

        When the file is there but cannot be read (cut short, garbage, a
        version's this one cannot read), the last good state answers for it
        (`good_state_file`: what the boot runs then); StateError when neither can be read.
        """
        text = self._fs.read(self.layout.state_file)
        if not text:
            return None
        try:
            applied = stored.loads(text, self.layout, self.placement)
            if applied is not None:
                return applied
        except stored.StateError:
            good = self._fs.read(self.layout.good_state_file)
            try:
                if good and (fallback := stored.loads(good, self.layout, self.placement)) is not None:
                    return fallback
            except stored.StateError:
                pass
            raise
        good = self._fs.read(self.layout.good_state_file)
        try:
            return stored.loads(good, self.layout, self.placement) if good else None
        except stored.StateError:
            return None

    def applied_settings(self) -> Settings | None:
        applied = self.applied()
        return applied.settings if applied else None

    def applied_plan(self) -> planner.Plan | None:
        """The plan as it was applied (as the old version made it, after an upgrade)."""
        applied = self.applied()
        return applied.plan if applied else None

    # -- observe and plan -----------------------------------------------------
    def observe(self, settings: Settings, applied: stored.Applied | None = None) -> planner.Observed:
        """What the plan needs of the machine: the NICs' MACs, the gateway's MAC if not given.

        `applied` is the applied state when the caller read it already.
        """
        host = self.placement.host_ns
        macs = {l.name: l.mac for l in self.kernel.links(host) if l.kind in ("device", "veth")}
        if applied:
            # A NIC the box re-addressed reports the box's MAC now; what the
            # plan needs is the one it had before (the admin port carries it).
            for nic, mac in applied.observed.nic_macs:
                if nic in macs and macs[nic] != mac and macs[nic] == derived_mac(f"nic:{nic}"):
                    macs[nic] = mac
        nics = {n: macs[n] for n in (settings.ports.uplink, settings.ports.downlink) if n in macs}
        gw_mac = None
        if settings.gateway.mac is None:
            learned = self.learned_gateway()
            if learned and learned.ip == str(settings.gateway.ip):
                gw_mac = learned.mac  # the modem watch saw the gateway's frames since
            elif applied and applied.observed.gateway_mac and applied.settings.gateway.ip == settings.gateway.ip:
                gw_mac = applied.observed.gateway_mac
            else:
                # An ARP probe (sender 0.0.0.0). Bridged, the uplink NIC carries a MAC of the
                # box's making, which the modem must never see: the admin port asks (the
                # uplink NIC's own MAC, which the modem knows). Before, the NIC itself.
                via = ADMIN_DEV if applied and ADMIN_DEV in macs else settings.ports.uplink
                if via in macs:
                    gw_mac = self.kernel.arp_probe(host, via, str(settings.gateway.ip))
        return planner.Observed.of(nics, gw_mac)

    def learned_gateway(self) -> Learned | None:
        """The gateway's MAC as the modem watch last learned it (`appliance.box.modem`)."""
        return Learned.from_json(self._fs.read(self.layout.gateway_file))

    def plan(self, settings: Settings, observed: planner.Observed | None = None) -> planner.Plan:
        observed = observed or self.observe(settings, self.applied())
        placed = place(planner.plan(settings, observed, self.layout), self.placement)
        runner = getattr(self.services, "kind", "supervisor")
        placed = planner.with_devices(placed, self.layout, self.placement.host_ns)
        watched = planner.with_modem_watch(placed, settings, self.layout, self.placement.host_ns, runner=runner)
        return planner.with_watchdog(watched, settings, self.layout, self.placement.host_ns, runner=runner)

    # -- apply ----------------------------------------------------------------
    def change(self, settings: Settings) -> Change:
        """Plan an apply of `settings` against what is applied (one read of the state)."""
        applied = self.applied()
        observed = self.observe(settings, applied)
        return Change(applied, observed, self.plan(settings, observed))

    def lock(self, timeout: float = LOCK_WAIT):
        """One apply or teardown of this box at a time, whoever runs it (`BoxBusy` after `timeout`)."""
        return self._fs.lock(self.layout.apply_lock, timeout)

    def apply(self, settings: Settings, *, dry_run: bool = False, progress: Progress | None = None,
              change: Change | None = None, before: dict | None = None) -> BoxResult:
        """Apply `settings` (planned already when `change`, from `self.change(settings)`, is given).

        Refused before anything is touched when the state directory is full or
        read-only (`StateDirError`): the box could not record what it did.
        `before` (how the NICs were before the box took them) is the stored
        one's when the change has no applied state (the boot's apply).
        One apply or teardown at a time (`lock`), whoever runs it.
        """
        if dry_run:
            change = change or self.change(settings)
            return BoxResult(ok=True, diff=change.diff, dry_run=True)
        # Refused before the lock, whose file lives in the state directory, and before anything else.
        self._fs.check_writable(self.layout.state_dir)
        with self.lock():
            return self._apply(settings, progress, change, before)

    def follow_gateway(self, progress: Progress | None = None) -> BoxResult | None:
        """Apply the applied settings again when the gateway's MAC learned since differs from the
        one applied (the modem watch calls it); None when there is nothing to follow."""
        self._fs.check_writable(self.layout.state_dir)
        with self.lock():
            applied = self.applied()
            learned = self.learned_gateway()
            if (applied is None or learned is None or applied.settings.gateway.mac is not None
                    or learned.ip != str(applied.settings.gateway.ip)
                    or applied.observed.gateway_mac == learned.mac):
                return None
            return self._apply(applied.settings, progress, None, None)

    def _apply(self, settings: Settings, progress: Progress | None, change: Change | None,
               before: dict | None) -> BoxResult:
        progress = progress or (lambda line: None)
        change = change or self.change(settings)
        applied, observed, new, old = change.applied, change.observed, change.new, change.old
        diff = change.diff
        # How the NICs were before the box first took them (a factory bridge,
        # say), so teardown can give them back as they were.
        if before is None:
            before = applied.before if applied else {"masters": {
                l.name: l.master for l in self.kernel.links(self.placement.host_ns)
                if l.name in (settings.ports.uplink, settings.ports.downlink) and l.master}}
        self._leave_factory_address(progress)
        res: ApplyResult = self.applier.apply(new, old, progress)
        if res.ok:
            # The settings hold proxy passwords: root's files alone.
            text = stored.dumps(stored.Applied(settings, observed, new, before))
            self._fs.write(self.layout.state_file, text, 0o600)
            # Applied and answering its probes (the apply waits for them): the boot's fallback.
            self._fs.write(self.layout.good_state_file, text, 0o600)
            self._fs.remove(self.layout.boot_note)  # the box runs what was applied now
            self._announce_gateway(old, new, settings, progress)
        return BoxResult(ok=res.ok, diff=diff, changes=res.changes, error=res.error, restored=res.restored)

    def _leave_factory_address(self, progress: Progress) -> None:
        """The admin address the boot's factory bridge carries goes: the admin port takes it now."""
        try:
            address = json.loads(self._fs.read(self.layout.boot_note) or "{}").get("address")
            host = self.placement.host_ns
            if address and address["cidr"] in self.kernel.addresses(host, address["dev"]):
                self.kernel.del_address(host, address["dev"], address["cidr"])
                progress(f"- address {address['cidr']} on the factory bridge {address['dev']}")
        except (ValueError, KeyError, TypeError, KernelError):
            pass  # no note, or no such bridge any more

    def _announce_gateway(self, old: planner.Plan | None, new: planner.Plan, settings: Settings,
                          progress: Progress) -> None:
        """gw0 took another MAC: tell the home at once (a gratuitous ARP as the gateway, which the
        flows send to the home side only), or clients keep the old one until their cache ages."""
        def gw(plan):
            return next((o for o in plan.kernel if isinstance(o, planner.Veth) and o.name == GW_DEV), None) \
                if plan else None
        before, after = gw(old), gw(new)
        if before is None or after is None or before.mac == after.mac:
            return
        try:
            self.kernel.arp_announce(after.ns, GW_DEV, str(settings.gateway.ip))
            progress(f"gateway {settings.gateway.ip} is at {after.mac} now: announced to the home")
        except Exception as e:  # noqa: BLE001 - clients learn it anyway when their ARP cache ages
            progress(f"gateway {settings.gateway.ip} is at {after.mac} now; announcing it failed: {e}")

    def teardown(self, progress: Progress | None = None) -> list[str]:
        """Remove all the box made (by the applied plan) and give the NICs back; state stays."""
        with self.lock():
            return self._teardown(progress)

    def _teardown(self, progress: Progress | None) -> list[str]:
        applied = self.applied()
        if applied is None:
            return []
        changes = self.applier.teardown(applied.plan, progress)
        host = self.placement.host_ns
        present = {l.name for l in self.kernel.links(host)}
        for nic, master in applied.before.get("masters", {}).items():
            if nic in present and master in present:
                self.kernel.set_link(host, nic, master=master)
                changes.append(f"~ {nic}: back in {master}")
                if progress:
                    progress(changes[-1])
        self._fs.remove(self.layout.state_file)
        self._fs.remove(self.layout.good_state_file)
        return changes
