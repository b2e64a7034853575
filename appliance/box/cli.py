"""`./manage.py apply` and `./manage.py teardown`: the box from the command line."""
from __future__ import annotations

import os

from appliance.box.placement import Placement
from appliance.box.plan import Layout, PlanError
from appliance.box.runtime import Box
from appliance.box.settings import SettingsError, load_settings


def box_for(netns: str | None = None, state: str | None = None, run: str | None = None) -> Box:
    """The box on this machine, or inside a lab's box namespace (`--netns lab-box`).

    A box inside a namespace keeps its state and runtime files apart from
    any other box on the machine.
    """
    netns = netns if netns is not None else os.environ.get("APPLIANCE_HOST_NETNS") or None
    suffix = f"/{netns}" if netns else ""
    layout = Layout(
        state_dir=state or os.environ.get("APPLIANCE_BOX_STATE") or f"/var/lib/appliance{suffix}",
        run_dir=run or os.environ.get("APPLIANCE_BOX_RUN") or f"/run/appliance{suffix}",
    )
    return Box(placement=Placement.inside(netns) if netns else Placement(), layout=layout)


def add_common(parser) -> None:
    parser.add_argument("--netns", help="run the box inside this namespace (the lab's PREFIX-box)")
    parser.add_argument("--state-dir", help="where the box keeps state (default /var/lib/appliance)")
    parser.add_argument("--run-dir", help="runtime files (default /run/appliance)")


def apply(opts, out=print) -> int:
    box = box_for(opts.get("netns"), opts.get("state_dir"), opts.get("run_dir"))
    path = opts.get("settings")
    try:
        # Ports are checked against the NICs this box really has.
        nics = [l.name for l in box.kernel.links(box.placement.host_ns)]
        settings = load_settings(path, nics=nics) if path else box.applied_settings()
    except SettingsError as e:
        out(f"apply: {path}: the settings are not valid; nothing was applied:")
        for field, msgs in e.errors.items():
            for m in msgs:
                out(f"  {field}: {m}")
        return 2
    if settings is None:
        out("apply: nothing applied yet; give --settings FILE")
        return 2
    try:
        res = box.apply(settings, dry_run=opts.get("dry_run", False), progress=out)
    except PlanError as e:
        out(f"apply: {e}; nothing was applied")
        return 2
    out(res.diff.rstrip() if res.diff else "(no difference from what is applied)")
    if res.dry_run:
        return 0
    if not res.ok:
        out(f"apply FAILED: {res.error}")
        out("the previous configuration was restored" if res.restored
            else "the previous configuration could NOT be fully restored")
        return 1
    out(f"applied: {len(res.changes)} change(s)" if res.changes else "applied: no changes")
    return 0


def teardown(opts, out=print) -> int:
    box = box_for(opts.get("netns"), opts.get("state_dir"), opts.get("run_dir"))
    changes = box.teardown(progress=out)
    out(f"teardown: {len(changes)} change(s)" if changes else "teardown: nothing was applied")
    return 0
