"""`./manage.py apply`, `status` and `teardown`: the box from the command line.

Which box: `appliance.box.locate` (--netns, --state-dir, --run-dir, or the
environment).
"""
from __future__ import annotations

import time

from appliance.box import locate
from appliance.box.stored import StateError
from appliance.durable import StateDirError
from appliance.box.plan import PlanError
from appliance.box.settings import SettingsError, load_settings

add_common = locate.add_arguments


def apply(opts, out=print) -> int:
    box = locate.from_options(opts)
    if opts.get("boot"):
        from appliance.box import boot
        return boot.boot(box, out)
    path = opts.get("settings")
    try:
        # Ports are checked against the NICs this box really has.
        nics = [l.name for l in box.kernel.links(box.placement.host_ns)]
        settings = load_settings(path, nics=nics) if path else box.applied_settings()
    except StateError as e:
        out(f"apply: {e}; nothing was applied (`apply --boot` falls back to the last good settings)")
        return 2
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
    except (PlanError, StateDirError) as e:
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


def show_status(opts, out=print) -> int:
    """`./manage.py status`: each service, whether it runs and answers, its last failure; the health
    register the datapath runs on; the last health events."""
    from appliance.box import status

    box = locate.from_options(opts)
    settings = box.applied_settings()
    if settings is None:
        out("status: nothing applied yet")
        return 1
    rows = status.services(box).value
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        line = f"{r['name']:<{width}}  {r['state']:<8}  {r.get('health', '')}"
        if r.get("fallback"):
            line += f" ({r['fallback']})"
        out(line)
        if r.get("last_failure"):
            when = r.get("last_failure_at")
            stamp = time.strftime("%Y-%m-%d %H:%M:%S ", time.localtime(when)) if when else ""
            out(f"{'':<{width}}  last failure: {stamp}{r['last_failure']}")
    applied = status.applied_bridge(box)
    register = applied.health_register() if applied else None
    out(f"failsafe: {settings.failsafe}; health register reg15="
        + (f"{register:#x} (bit 0 DNS, 1 DHCP, 2 relay, 3 DHCPv6)" if register is not None else "? (no datapath)"))
    pool = status.dhcp_pool(box)
    if pool.ok:
        p = pool.value
        out(f"dhcp pool: {p['leased']} of {p['size']} leased ({p['percent']}%; warning at {p['warn_percent']}%)")
        if p["warning"]:
            out(f"  {p['warning']}")
        for c in p["no_lease"][-5:]:
            out(f"  no lease for {c['mac']}" + (f" at {c['at']}" if c["at"] else "") + ": the pool was full")
    from appliance.box import boot

    note = boot.read_note(box)
    if note:
        out(f"boot ({time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(note.time))}): {note.banner}")
    events = status.health_events(box, opts.get("events") or 10)
    if events:
        out("events:")
        for e in events:
            out(f"  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(e.time))} {e.service} {e.what}: {e.detail}")
    # Standing aside for the modem (DHCPv6) is what the modem's RA asks for, not a fault.
    return 0 if all(r.get("health") in ("healthy", "not probed", "stands aside") for r in rows) else 3


def teardown(opts, out=print) -> int:
    box = locate.from_options(opts)
    changes = box.teardown(progress=out)
    out(f"teardown: {len(changes)} change(s)" if changes else "teardown: nothing was applied")
    return 0
