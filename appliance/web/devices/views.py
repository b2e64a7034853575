import secrets

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.utils.html import escape
from django.utils.safestring import mark_safe

from appliance.web.audit.log import record
from appliance.web.devices import inventory, table
from appliance.services.devices.policy import Schedule
from appliance.web import sources
from appliance.web.devices.forms import DevicePolicyForm, RenameForm, ScheduleForm


def _described(schedules: list[dict]) -> list[str]:
    return [Schedule.from_json(s).describe() for s in schedules]


# Stands for the viewer's CSRF token in the shared rows; random, so no device name can be it.
_CSRF_SLOT = secrets.token_hex(16)


def _page() -> dict:
    views, problem = inventory.devices()
    views.sort(key=lambda v: (not v.online, (v.name or v.mac).lower()))
    for v in views:
        v.schedule_text = _described(v.schedules)
        v.budget_used = (v.used_today if v.budget["period"] == "day" else v.used_month) if v.budget else 0
    groups = inventory.groups()
    for g in groups:
        g["schedule_text"] = _described(g["schedules"])
    return {"devices": views, "problem": problem, "groups": groups,
            "rows": table.rows(views, _CSRF_SLOT, inventory.ONLINE_SECONDS // 60)}


@login_required
def index(request):
    # Built once per live period for every viewer (a hundred devices cost a few ms of a 2-core
    # box's CPU; 50 open consoles queued behind each other), and again at once after any change
    # to the devices from any worker (the stamp): a rename or a pause shows on the next load.
    page = sources.cached("devices-page", _page, stamp=inventory.stamp())
    rows = mark_safe(page["rows"].replace(_CSRF_SLOT, escape(get_token(request))))
    return render(request, "devices/index.html", {**page, "rows": rows})


@login_required
def policy(request, mac):
    """A device's group, (first) schedule and data budget."""
    found = _found(mac)
    kept = sources.get().device_policy().of(found.mac)
    form = DevicePolicyForm(request.POST if request.method == "POST" else None, policy=kept)
    if request.method == "POST" and form.is_valid():
        inventory.set_policy(found.mac, {"group": form.cleaned_data["group"], "schedules": form.schedules(),
                                         "budget": form.budget()})
        record(request.user, "device-policy", found.mac, "group, schedules, budget")
        messages.success(request, f"{found.name or found.mac}: kept; in effect within 2 seconds.")
        return redirect("devices:index")
    return render(request, "devices/policy.html",
                  {"form": form, "title": f"Group, schedule and budget of {found.name or found.mac}",
                   "more": len(form.rest)}, status=400 if request.method == "POST" else 200)


@login_required
def group(request, name):
    """A group's (first) schedule; the group is a name given to devices."""
    kept = sources.get().device_policy().groups.get(name, ())
    form = ScheduleForm(request.POST if request.method == "POST" else None, schedules=kept)
    if request.method == "POST" and form.is_valid():
        inventory.set_group_schedules(name, form.schedules())
        record(request.user, "group-schedules", name, f"{len(form.schedules())} schedules")
        messages.success(request, f"Group {name}: kept; in effect within 2 seconds.")
        return redirect("devices:index")
    return render(request, "devices/policy.html", {"form": form, "title": f"Schedule of the group {name}",
                                                   "more": len(form.rest)},
                  status=400 if request.method == "POST" else 200)


def _found(mac: str):
    found = inventory.device(mac)
    if found is None:
        raise Http404("no such device")
    return found


@login_required
def rename(request, mac):
    found = _found(mac)
    form = RenameForm(request.POST if request.method == "POST" else None,
                      initial={"name": found.name if found.name_source == "user" else ""})
    if request.method == "POST" and form.is_valid():
        renamed = inventory.rename(found.mac, form.cleaned_data["name"])
        record(request.user, "rename-device", found.mac, f"{found.name!r} -> {renamed.name!r}")
        messages.success(request, f"{found.mac} is now called {renamed.name or 'by its MAC'}.")
        return redirect("devices:index")
    return render(request, "console/section_form.html",
                  {"form": form, "title": f"Rename {found.name or found.mac}"},
                  status=400 if request.method == "POST" else 200)


@login_required
def pause(request, mac):
    """POST `paused` = 1 or 0: pause or resume at once."""
    found = _found(mac)
    if request.method != "POST" or request.POST.get("paused") not in ("0", "1"):
        return redirect("devices:index")
    on = request.POST["paused"] == "1"
    done = inventory.pause(found.mac, on)
    who = found.name or found.mac
    if not done.ok:
        messages.error(request, done.problem)
    else:
        record(request.user, "pause-device" if on else "resume-device", found.mac)
        later = "" if done.value["enforced"] else " (the datapath is not running: from its next start)"
        messages.success(request, f"{who} {'paused' if on else 'resumed'}{later}.")
    return redirect("devices:index")


@login_required
def forget(request, mac):
    """GET asks for a confirmation; POST with `confirm` forgets."""
    found = _found(mac)
    if request.method != "POST" or "confirm" not in request.POST:
        return render(request, "devices/forget.html", {"device": found},
                      status=400 if request.method == "POST" else 200)
    inventory.forget(found.mac)
    record(request.user, "forget-device", found.mac)
    messages.success(request, f"{found.name or found.mac} forgotten.")
    return redirect("devices:index")
