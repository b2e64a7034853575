from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render

from appliance.web import sources
from appliance.web.audit.log import record
from appliance.web.dns import forms, models
from appliance.web.sections import SectionEditView


@login_required
def index(request):
    return render(request, "dns/index.html", {"reading": sources.get().dns(),
                                              "service": models.DnsService.objects.first()})


@login_required
def flush_fake_ips(request):
    """GET asks for a confirmation (what a flush costs the home); POST with `confirm` flushes."""
    if request.method != "POST" or "confirm" not in request.POST:
        return render(request, "dns/flush.html", status=400 if request.method == "POST" else 200)
    reading = sources.get().flush_fake_ips()
    if reading.ok:
        v = reading.value
        record(request.user, "flush-fake-ips", "dns",
               f"{v['removed']} mappings forgotten, {v['kept']} pinned kept")
        messages.success(request, f"Fake IPs flushed: {v['removed']} mappings forgotten"
                                  f" ({v['kept']} in use by open connections kept).")
    else:
        messages.error(request, f"Fake IPs not flushed: {reading.problem}")
    return redirect("dns:index")


config_edit = SectionEditView.as_view(model=models.DnsService, form_class=forms.DnsServiceForm,
                                      title="DNS settings", success_url="/dns/")
