"""What the pages cache, and what makes the cache let go: the live readings and the settings document."""
from appliance.box.settings import parse_settings
from appliance.web import document, sources
from appliance.web.dhcp.models import DhcpPool
from appliance.web.sections import delete_section, save_section
from tests.support import webfakes as fakes


def test_a_live_reading_is_kept_for_the_period_then_read_again(settings, monkeypatch):
    settings.APPLIANCE_LIVE_SECONDS = 1.0
    now = [100.0]
    monkeypatch.setattr(sources.time, "monotonic", lambda: now[0])
    calls = []

    def read():
        calls.append(now[0])
        return len(calls)

    assert sources.cached("test-reading", read) == 1
    now[0] += 0.5
    assert sources.cached("test-reading", read) == 1, "within the period: the same reading"
    now[0] += 0.6
    assert sources.cached("test-reading", read) == 2, "after it: read again"


def test_the_lease_table_shows_new_leases_once_the_period_is_over(client_admin, settings):
    settings.APPLIANCE_LIVE_SECONDS = 0
    assert b"No leases" in client_admin.get("/dhcp/leases/").content
    fakes.STATE["leases"] = [{"ip": "192.168.1.150", "mac": "02:00:00:00:0e:2e", "hostname": "c1",
                              "expires": 2000000000, "state": 0}]
    body = client_admin.get("/dhcp/leases/").content
    assert b"02:00:00:00:0e:2e" in body and b"make static" in body


def test_the_cached_document_follows_every_kind_of_change(doc, admin):
    first = document.cached_data()
    assert first["dhcp"]["pools"][0]["end"] == str(doc.dhcp.pools[0].end)
    pool = DhcpPool.ordered().first()
    pool.end = "192.168.1.190"
    save_section(pool, admin)
    assert document.cached_data()["dhcp"]["pools"][0]["end"] == "192.168.1.190"
    extra = DhcpPool(start="192.168.1.220", end="192.168.1.230", position=5)
    save_section(extra, admin)
    assert len(document.cached_data()["dhcp"]["pools"]) == 2
    delete_section(extra, admin)
    assert len(document.cached_data()["dhcp"]["pools"]) == 1
    # A whole document loaded (restore, rollback) replaces every section.
    data = document.to_data(doc)
    data["dhcp"]["lease_time"] = 1234
    document.load_document(parse_settings(data))
    assert document.cached_data()["dhcp"]["lease_time"] == 1234


def test_the_cached_document_is_not_rebuilt_while_nothing_changes(doc):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    document.cached_data()
    with CaptureQueriesContext(connection) as q:
        document.cached_data()
    selects = [x["sql"] for x in q.captured_queries if x["sql"].startswith("SELECT")]
    assert len(selects) == 1 and "core_documentrevision" in selects[0], selects  # not one per section


def test_while_one_thread_takes_a_reading_the_others_serve_the_last_one(settings, monkeypatch):
    import threading

    settings.APPLIANCE_LIVE_SECONDS = 1.0
    now = [100.0]
    monkeypatch.setattr(sources.time, "monotonic", lambda: now[0])
    assert sources.cached("busy-reading", lambda: "old") == "old"
    now[0] += 5
    busy = sources._READING.setdefault("busy-reading", threading.Lock())
    with busy:  # another thread is asking the box
        assert sources.cached("busy-reading", lambda: "new") == "old"
    assert sources.cached("busy-reading", lambda: "new") == "new"
