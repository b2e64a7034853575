from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string

from appliance.box.settings import SettingsError
from appliance.web import document, sources
from appliance.web.dhcp import forms, models
from appliance.web.dhcp.suggest import static_address
from appliance.web.sections import SectionDeleteView, SectionEditView, save_section


@login_required
def index(request):
    return render(request, "dhcp/index.html", {
        "server": models.DhcpServer.objects.first(),
        "pools": models.DhcpPool.ordered(), "static_leases": models.StaticLease.ordered()})


_TABLE: list = [None, None, None]  # [the leases reading, the document revision, the fragment's HTML]


@login_required
def lease_table(request):
    """The live lease table (htmx polls it every few seconds on every open DHCP page).

    A hundred rows take the template engine ~8 ms, so the fragment is kept
    per process while the reading of the leases (`sources.leases()`, the same
    object for up to APPLIANCE_LIVE_SECONDS) and the settings document's
    revision (which every change of a static lease bumps) are the same.
    """
    reading = sources.leases()
    rev = document.revision()
    shown, shown_rev, html = _TABLE
    if shown is not reading or shown_rev != rev:
        static = frozenset(models.StaticLease.objects.values_list("mac", flat=True))
        html = render_to_string("dhcp/lease_table.html", {"reading": reading, "static": static})
        _TABLE[:] = [reading, rev, html]
    return HttpResponse(html)


@login_required
def make_static(request):
    """Reserve a leased device's address: prefilled form, saved through the usual rules."""
    mac, ip, hostname = (request.GET.get(k, "") for k in ("mac", "ip", "hostname"))
    if request.method == "POST":
        form = forms.StaticLeaseForm(request.POST, instance=models.StaticLease())
        if form.is_valid():
            obj = save_section(form.save(commit=False), request.user)
            messages.success(request, f"Reserved {obj.ip} for {obj.mac}. Apply to make it live.")
            return redirect("dhcp:index")
        return render(request, "console/section_form.html",
                      {"form": form, "title": "Make static"}, status=400)
    try:
        suggested = static_address(document.current_settings(), ip) if ip else ""
    except (SettingsError, ValueError):
        suggested = ip
    form = forms.StaticLeaseForm(initial={"mac": mac, "ip": suggested or ip, "hostname": hostname})
    note = (f"{ip} is inside a pool; a static lease must be outside the pools, so {suggested} is proposed."
            if suggested and suggested != ip else "")
    return render(request, "console/section_form.html", {"form": form, "title": "Make static", "note": note})


server_edit = SectionEditView.as_view(model=models.DhcpServer, title="DHCP server", success_url="/dhcp/")
pool_edit = SectionEditView.as_view(model=models.DhcpPool, title="DHCP pool", success_url="/dhcp/")
pool_delete = SectionDeleteView.as_view(model=models.DhcpPool, success_url="/dhcp/")
static_edit = SectionEditView.as_view(model=models.StaticLease, title="Static lease", success_url="/dhcp/")
static_delete = SectionDeleteView.as_view(model=models.StaticLease, success_url="/dhcp/")
