import datetime as dt

import dns.rcode
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render

from appliance.web import sources
from appliance.web.audit.log import record
from appliance.web.dns import forms, models, querylog
from appliance.web.sections import SectionEditView


@login_required
def index(request):
    return render(request, "dns/index.html", {"reading": sources.get().dns(),
                                              "service": models.DnsService.objects.first()})


ACTIONS = ("block", "direct", "fake-ip", "rewrite", "local", "refused")


@login_required
def query_log(request):
    """The query log, searched by client, a part of the name, action and the last minutes."""
    params = {k: v.strip() for k, v in request.GET.items() if k in ("client", "mac", "domain", "action", "limit")
              and v.strip()}
    minutes = request.GET.get("minutes", "").strip()
    errors: dict[str, list[str]] = {}
    if minutes:
        if minutes.isascii() and minutes.isdigit():
            params["since"] = str(dt.datetime.now().timestamp() - 60 * int(minutes))
        else:
            errors["minutes"] = [f"{minutes!r} is not a whole number of minutes"]
    found, more = querylog.filters(params)
    errors.update(more)
    reading = sources.get().dns_log(**found) if not errors else None
    entries = [{**e, "when": dt.datetime.fromtimestamp(e["time"]), "rcode_text": dns.rcode.to_text(e["rcode"])}
               for e in (reading.value or [])] if reading is not None else []
    return render(request, "dns/log.html", {
        "entries": entries, "errors": errors, "problem": reading.problem if reading is not None else None,
        "q": {**{k: request.GET.get(k, "") for k in ("client", "mac", "domain", "action", "minutes")},
              "limit": found.get("limit", 100)},
        "actions": ACTIONS})


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
