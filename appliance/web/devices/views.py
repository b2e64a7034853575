from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render

from appliance.web.audit.log import record
from appliance.web.devices import inventory
from appliance.web.devices.forms import RenameForm


@login_required
def index(request):
    views, problem = inventory.devices()
    views.sort(key=lambda v: (not v.online, (v.name or v.mac).lower()))
    return render(request, "devices/index.html", {"devices": views, "problem": problem,
                                                  "online_minutes": inventory.ONLINE_SECONDS // 60})


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
