import datetime as dt

import dns.rcode
import dns.rdatatype
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render

from appliance.web import sources
from appliance.web.audit.log import record
from appliance.web.dns import forms, logtable, models, querylog
from appliance.web.sections import SectionEditView


def kernel_answers(stats: dict | None, client: str = "", domain: str = "") -> dict | None:
    """What the kernel answer cache (`dns.kernel_cache`) answered, for the pages: its status,
    counts, and the top names and clients (narrowed to a searched client or part of a name).
    The kernel's answers are counted, not logged one by one."""
    kc = (stats or {}).get("kernel_cache")
    if not kc:
        return None
    names = [{**n, "type": dns.rdatatype.to_text(n["qtype"])} for n in kc.get("top_names", ())
             if domain.lower() in n["name"].lower()]
    clients = [c for c in kc.get("top_clients", ()) if not client or c[0] == client]
    status = kc.get("status", "off")
    return {"status": status, "on": status.startswith("on"), "unavailable": status.startswith("unavailable"),
            "hits": kc.get("hits", 0), "misses": kc.get("misses", 0), "fills": kc.get("fills", 0),
            "error": kc.get("error"), "names": names, "clients": clients}


@login_required
def index(request):
    reading = sources.dns()
    return render(request, "dns/index.html", {"reading": reading, "service": models.DnsService.objects.first(),
                                              "kernel": kernel_answers(reading.value if reading.ok else None)})


ACTIONS = ("block", "direct", "fake-ip", "rewrite", "local", "refused")


_LAST_TABLE: tuple = (None, [], "")


def _table(reading) -> tuple[list[dict], str]:
    """The entries and the table's rows of a reading; built once for a reading that
    `sources.dns_log` serves to several loads."""
    global _LAST_TABLE
    last = _LAST_TABLE
    if reading is not None and last[0] is reading:
        return last[1], last[2]
    entries = [{**e, "when": dt.datetime.fromtimestamp(e["time"]), "rcode_text": dns.rcode.to_text(e["rcode"])}
               for e in (reading.value or [])] if reading is not None else []
    rows = logtable.rows(entries)
    _LAST_TABLE = (reading, entries, rows)
    return entries, rows


@login_required
def query_log(request):
    """The query log, searched by client, a part of the name, action and the last minutes."""
    params = {k: v.strip() for k, v in request.GET.items() if k in ("client", "mac", "domain", "action", "limit")
              and v.strip()}
    minutes = request.GET.get("minutes", "").strip()
    errors: dict[str, list[str]] = {}
    if minutes:
        if minutes.isascii() and minutes.isdigit():
            # Whole seconds: the same search a moment later is the same search (sources.dns_log).
            params["since"] = str(int(dt.datetime.now().timestamp()) - 60 * int(minutes))
        else:
            errors["minutes"] = [f"{minutes!r} is not a whole number of minutes"]
    found, more = querylog.filters(params)
    errors.update(more)
    reading = sources.dns_log(**found) if not errors else None
    stats = sources.dns()
    kernel = kernel_answers(stats.value if stats.ok else None, found.get("client", ""), found.get("domain", ""))
    entries, rows = _table(reading)
    return render(request, "dns/log.html", {
        "entries": entries, "rows": rows, "errors": errors,
        "problem": reading.problem if reading is not None else None,
        "q": {**{k: request.GET.get(k, "") for k in ("client", "mac", "domain", "action", "minutes")},
              "limit": found.get("limit", 100)},
        "actions": ACTIONS, "kernel": kernel})


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
