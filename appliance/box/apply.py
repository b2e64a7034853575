"""Apply a plan to the box, changing only what differs; restore on failure.

The apply walks the plan in the order a working box needs it:

1. kernel objects (`reconcile`), and removal of the ones the previous plan
   had and this one does not;
2. directories and config files (written atomically, only when different);
3. the switch: flows compiled and swapped into the datapath;
4. services: started, restarted when their definition changed, stopped when
   the plan no longer has them; a service is started when it answers its
   probe (`ServiceNotReady` otherwise, which restores the previous plan);
5. health: a few seconds at most for the watchdog to see every service
   answer, so the datapath steers to them again before the apply says done
   (while it does not, the modem serves the home: not an error).

Each step reports progress lines. If any step fails, the previous plan is
applied again (or, on a first apply, what was made is removed), so the box
keeps running what it ran before; the result says what failed and that it
was restored. Applying the same plan twice changes nothing the second time.
Teardown removes what a plan made, the runtime files of its services included.

The switch, the service runner and the files are ports
(`appliance.box.protocols`): the machine's or the fakes'.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable

from appliance.box.protocols import FileSystem, ServiceRunner, SwitchLoader
from appliance.kernel.base import Kernel
from appliance.kernel.desired import NftTable
from appliance.kernel.reconcile import reconcile, remove

Progress = Callable[[str], None]
HEALTH_WAIT = 5.0  # seconds the apply gives the watchdog to see the services answer


@dataclass
class ApplyResult:
    ok: bool
    changes: list[str] = field(default_factory=list)
    error: str | None = None
    restored: bool = False  # after a failure: the previous state is back

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def _place(obj) -> str:
    """Where an object lives: a table whose body changed is the same table (its key names
    the body's digest), so removing the old one would delete the one just loaded."""
    if isinstance(obj, NftTable):
        return f"nft {obj.ns}: table {obj.family} {obj.name}"
    return obj.key()


def _same_access(access: tuple[int, int, int] | None, f) -> bool:
    """A file already has the mode and owner the plan gives it (else it is written again)."""
    if access is None:
        return False
    mode, uid, gid = access
    return mode == f.mode and (f.owner is None or (uid, gid) == tuple(f.owner))


class Applier:
    def __init__(self, kernel: Kernel, switch: SwitchLoader, services: ServiceRunner, fs: FileSystem):
        self.kernel = kernel
        self.switch = switch
        self.services = services
        self.fs = fs

    def _steps(self, new, old, progress: Progress) -> list[str]:
        changes: list[str] = []

        def note(lines):
            for line in lines:
                changes.append(line)
                progress(line)

        progress("step 1/5: network namespaces, links, addresses, routes, nftables")
        changes += reconcile(self.kernel, new.kernel, progress)
        if old is not None:
            keep = {_place(o) for o in new.kernel}
            note(remove(self.kernel, [o for o in old.kernel if _place(o) not in keep]))

        progress("step 2/5: configuration files")
        for d in new.directories:
            self.fs.mkdir(d)
        for path, uid, gid, mode in new.owners:
            self.fs.mkdir(path)
            if self.fs.access(path) != (mode, uid, gid):
                self.fs.own(path, uid, gid, mode)
        for f in new.files:
            if self.fs.read(f.path) != f.content or not _same_access(self.fs.access(f.path), f):
                self.fs.write(f.path, f.content, f.mode, f.owner)
                note([f"~ file {f.path} ({f.digest})"])

        progress("step 3/5: switch: compile the flow table and swap the datapath")
        note(self.switch.load(new.switch))

        progress("step 4/5: services")
        for spec in new.services:
            how = self.services.start(spec)
            if how != "unchanged":
                note([f"~ service {spec.name}: {how}"])
        if old is not None:
            names = {s.name for s in new.services}
            for spec in old.services:
                if spec.name not in names:
                    self.services.remove(spec.name)
                    note([f"- service {spec.name}"])
        self._steered(new, progress)
        return changes

    def _steered(self, plan, progress: Progress, timeout: float = HEALTH_WAIT) -> None:
        """Wait (briefly) until the watchdog has seen every service answer since now."""
        status_file = next((s.probe.target for s in plan.services
                            if s.probe is not None and s.probe.kind == "watchdog"), None)
        # A runner that runs nothing (the fakes) has no watchdog to wait for.
        if status_file is None or getattr(self.services, "kind", None) is None:
            return
        progress("step 5/5: health: the watchdog sees the services answer")
        since = time.monotonic()
        why = "the watchdog has written no status"
        while time.monotonic() < since + timeout:
            try:
                status = json.loads(self.fs.read(status_file) or "null")
            except ValueError:
                status = None  # caught mid-write: read again
            if status and status.get("monotonic", 0) > since:
                sick = [n for n, h in status.get("services", {}).items() if h.get("state") != "healthy"]
                if not sick:
                    return
                why = "not answering yet: " + ", ".join(sick)
            time.sleep(0.1)
        progress(f"health: {why}; the modem serves the home for them meanwhile (failsafe)")

    def apply(self, new, old=None, progress: Progress | None = None) -> ApplyResult:
        progress = progress or (lambda line: None)
        try:
            changes = self._steps(new, old, progress)
        except Exception as e:  # noqa: BLE001 - any failure must restore what ran before
            error = f"{type(e).__name__}: {e}"
            progress(f"failed: {error}")
            restored = self._restore(new, old, progress)
            return ApplyResult(ok=False, error=error, restored=restored)
        progress("done: " + (f"{len(changes)} change(s)" if changes else "no changes"))
        return ApplyResult(ok=True, changes=changes)

    def _restore(self, failed, old, progress: Progress) -> bool:
        try:
            if old is not None:
                progress("restoring the previous configuration")
                self._steps(old, failed, lambda line: progress(f"restore: {line}"))
            else:
                progress("removing what the failed first apply made")
                self.teardown(failed, progress)
            progress("restored")
            return True
        except Exception as e:  # noqa: BLE001
            progress(f"restore failed too: {type(e).__name__}: {e}")
            return False

    def teardown(self, plan, progress: Progress | None = None) -> list[str]:
        progress = progress or (lambda line: None)
        changes = []
        for spec in plan.services:
            self.services.remove(spec.name)
            changes.append(f"- service {spec.name}")
        changes += self.switch.unload(plan.switch)
        changes += remove(self.kernel, plan.kernel)
        # Sockets, pid files and the like of the services just stopped; state stays.
        for path in plan.runtime:
            self.fs.remove(path)
        if plan.run_dir:
            self.fs.rmdir(plan.run_dir)
        for line in changes:
            progress(line)
        return changes
