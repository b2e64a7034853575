import time

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.template.loader import render_to_string

from appliance.services.timeseries import HOUR, KEEP, MINUTE
from appliance.web import sources
from appliance.web.stats import charts

# The page's ranges: (label, bucket seconds, seconds back).
RANGES = {"hour": ("last hour", MINUTE, HOUR), "day": ("last day", MINUTE, KEEP[MINUTE]),
          "month": ("last month", HOUR, KEEP[HOUR])}
DNS_SERIES = ("dns.queries", "dns.blocked", "dns.forwarded", "dns.cached", "dns.fake_ip")


@login_required
def index(request):
    """Charts of the DNS answers and the devices' bytes; the figures as a table too (without
    scripts, and for a screen reader). The page's script polls the series API every 10 s."""
    key = request.GET.get("range", "hour")
    if key not in RANGES:
        key = "hour"
    return render(request, "stats/index.html", {"content": content_html(key)})


def content_html(key: str) -> str:
    """The page's tables for a range, rendered at most once a second for every viewer of it: they
    hold nothing of the viewer, and their figures (`sources.series_totals`) are a second old anyway.
    Rendering them (a dozen number filters, the top devices' names from the database) was most
    of the page's time, and at 50 viewers its p95 queued behind it."""
    return sources.cached(f"stats_html {key}", lambda: _render_content(key))


def _render_content(key: str) -> str:
    label, step, back = RANGES[key]
    since = int(time.time()) - back
    # One read of each file for the tables (a sum per series), not one per series, and at
    # most one a second for every viewer of the range.
    dns = sources.series_totals("dns.", step, back)
    totals = {name.split(".", 1)[1]: dns.get(name, 0.0) for name in DNS_SERIES}
    devices = sources.series_totals("dev.", step, back)
    share = totals["blocked"] / totals["queries"] if totals["queries"] else 0.0
    return render_to_string("stats/content.html", {
        "range": key, "ranges": [(k, v[0]) for k, v in RANGES.items()], "label": label, "step": step,
        "back": back, "dns": totals, "blocked_share": share,
        "devices": charts.top_devices(step, since, 5, devices),
        "all_bytes": {w: devices.get(f"dev.all.{w}", 0.0) for w in ("rx_bytes", "tx_bytes")},
    })
