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
