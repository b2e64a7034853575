"""The charts page and the series API read the series files the box's services write."""
import time

import pytest

from appliance.services.timeseries import HOUR, KEEP, MINUTE, Series
from tests.support import webfakes

pytestmark = pytest.mark.django_db
A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def write(writer, samples):
    """samples: [(seconds ago, {series: value})] into the box's series file of `writer`."""
    store = Series(webfakes.BOX.layout.series_file(writer))
    now = time.time()
    for ago, values in samples:
        store.add(values, now=now - ago)
    store.close()


def minute(ago):
    t = int(time.time() - ago)
    return t - t % MINUTE


def test_a_series_comes_back_with_every_bucket_of_the_window(api):
    write("dns", [(120, {"dns.queries": 7, "dns.blocked": 2}), (0, {"dns.queries": 3})])
    r = api.get("/api/stats/series/", {"name": "dns.queries", "step": "60", "since": str(time.time() - 300)})
    assert r.status_code == 200, r.data
    points = dict(map(tuple, r.data["points"]))
    assert len(points) in (6, 7) and r.data["step"] == 60
    assert points[minute(120)] == 7 and points[minute(0)] == 3
    assert sum(points.values()) == 10  # the other buckets are there, as 0
    r = api.get("/api/stats/series/", {"name": "dns.blocked", "step": "3600"})
    assert sum(v for _, v in r.data["points"]) == 2 and len(r.data["points"]) >= 24 * 31


def test_a_series_nobody_wrote_is_zeros_and_since_is_held_to_what_is_kept(api):
    r = api.get("/api/stats/series/", {"name": "dev.all.rx_bytes", "since": "0"})
    assert r.status_code == 200
    assert r.data["since"] >= time.time() - KEEP[MINUTE] - MINUTE and len(r.data["points"]) <= 24 * 60 + 1
    assert {v for _, v in r.data["points"]} == {0}


@pytest.mark.parametrize("query, field", [
    ({}, "name"), ({"name": "queries"}, "name"), ({"name": "dns.a b"}, "name"),
    ({"name": "dns.queries", "step": "30"}, "step"), ({"name": "dns.queries", "since": "-1"}, "since"),
    ({"name": "dns.queries", "since": "yesterday"}, "since"),
])
def test_a_bad_parameter_is_a_400_naming_it(api, query, field):
    r = api.get("/api/stats/series/", query)
    assert r.status_code == 400 and list(r.data) == [field]


def test_top_devices_by_bytes_both_ways_with_their_names(api):
    from django.utils import timezone

    from appliance.web.devices.models import Device
    Device.objects.create(mac=B, name="tablet", first_seen=timezone.now(), last_seen=timezone.now())
    write("devices", [(60, {f"dev.{A}.rx_bytes": 1000, f"dev.{A}.tx_bytes": 100,
                            f"dev.{B}.rx_bytes": 5000, f"dev.{B}.tx_bytes": 10, "dev.all.rx_bytes": 6000})])
    r = api.get("/api/stats/top-devices/", {"step": "60", "limit": "1"})
    assert r.status_code == 200
    assert r.data["devices"] == [{"mac": B, "name": "tablet", "rx_bytes": 5000.0, "tx_bytes": 10.0}]
    assert [d["mac"] for d in api.get("/api/stats/top-devices/").data["devices"]] == [B, A]
    assert api.get("/api/stats/top-devices/", {"limit": "21"}).status_code == 400


def test_the_charts_page_shows_the_figures_and_its_charts(client_admin):
    write("dns", [(30, {"dns.queries": 40, "dns.blocked": 10, "dns.forwarded": 20, "dns.cached": 10})])
    write("devices", [(30, {f"dev.{A}.rx_bytes": 2_000_000, "dev.all.rx_bytes": 2_000_000})])
    page = client_admin.get("/stats/").content.decode()
    assert 'id="chart-dns"' in page and 'id="chart-devices"' in page and "stats/charts.js" in page
    totals = page.split('id="dns-totals"')[1].split("</table>")[0]
    assert "<td>40</td><td>10</td><td>25%</td><td>20</td><td>10</td>" in totals
    assert A in page and "1.9\xa0MB" in page  # 2 000 000 bytes, as Django writes sizes (1024)
    month = client_admin.get("/stats/", {"range": "month"}).content.decode()
    assert 'data-step="3600"' in month and "<td>40</td>" in month


def test_the_charts_page_reads_the_files_once_a_second_for_every_viewer(client_admin, settings, monkeypatch):
    from appliance.web import sources

    settings.APPLIANCE_LIVE_SECONDS = 1.0
    now = [1000.0]
    monkeypatch.setattr(sources.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(sources, "_CACHE", {})
    monkeypatch.setattr(sources, "_READING", {})

    def queries():
        page = client_admin.get("/stats/").content.decode()
        return page.split('id="dns-totals"')[1].split("<td>")[1].split("<")[0]

    write("dns", [(30, {"dns.queries": 40})])
    assert queries() == "40"
    write("dns", [(20, {"dns.queries": 2})])
    assert queries() == "40", "within the second: the same reading"
    now[0] += 1.1
    assert queries() == "42", "after it: read again"


def test_the_charts_need_a_login(client):
    assert client.get("/stats/").status_code == 302
    assert client.get("/api/stats/series/", {"name": "dns.queries"}).status_code in (401, 403)
