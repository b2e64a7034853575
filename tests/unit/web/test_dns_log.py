"""The DNS pages a home reads: the statistics as tables and the query log, searched from the
console and the API, from a real DnsService answering real queries on its control socket."""
import asyncio
import time

import dns.message
import dns.rcode
import pytest

from tests.unit.web.test_dns_flush import dns_server  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db


def _ask(service, name, client):
    wire = dns.message.make_query(name, "A").to_wire()
    answer = asyncio.run(service.resolver.answer(wire, client, True))
    return dns.message.from_wire(answer)


@pytest.fixture
def asked(dns_server):  # noqa: F811
    from appliance.services.dns.policy import Policy
    from appliance.services.dns.settings import parse_settings
    settings = parse_settings({
        "listen": ["127.0.0.1:0"], "upstreams": [{"url": "udp://192.0.2.53"}],
        "rules": [{"match": "suffix", "value": "ads.test", "then": {"action": "block"}},
                  {"match": "exact", "value": "nas.home.test", "then": {"action": "rewrite", "answer": ["192.168.1.20"]}}]})
    dns_server.resolver.policy = Policy(settings, {})
    assert _ask(dns_server, "tracker.ads.test", "192.168.1.70").rcode() == dns.rcode.NXDOMAIN
    assert _ask(dns_server, "nas.home.test", "192.168.1.70").answer
    assert _ask(dns_server, "pixel.ads.test", "192.168.1.71").rcode() == dns.rcode.NXDOMAIN
    return dns_server


def test_api_searches_the_log_by_client_name_and_action(api, asked):
    r = api.get("/api/dns/log/")
    assert r.status_code == 200 and r.data["running"]
    assert [e["qname"] for e in r.data["entries"]] == ["pixel.ads.test", "nas.home.test", "tracker.ads.test"]
    r = api.get("/api/dns/log/", {"client": "192.168.1.70", "action": "block"})
    assert [(e["qname"], e["origin"]) for e in r.data["entries"]] == [("tracker.ads.test", "rules.0")]
    r = api.get("/api/dns/log/", {"domain": "ads", "limit": "1"})
    assert [e["qname"] for e in r.data["entries"]] == ["pixel.ads.test"]
    newest = api.get("/api/dns/log/").data["entries"][0]["time"]
    assert [e["qname"] for e in api.get("/api/dns/log/", {"since": str(newest)}).data["entries"]] == ["pixel.ads.test"]


@pytest.mark.parametrize("params, field", [
    ({"client": "192.168.1"}, "client"), ({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit"),
    ({"since": "-1"}, "since"), ({"since": "soon"}, "since"), ({"action": "Block!"}, "action"),
])
def test_api_refuses_a_bad_filter_naming_it(api, asked, params, field):
    r = api.get("/api/dns/log/", params)
    assert r.status_code == 400 and list(r.data) == [field]


def test_the_log_needs_a_login(client, asked):
    assert client.get("/api/dns/log/").status_code in (401, 403)
    assert client.get("/dns/log/").status_code == 302


def test_console_log_page_lists_and_filters(client_admin, asked):
    page = client_admin.get("/dns/log/", {"action": "block"}).content.decode()
    assert 'id="query-log"' in page
    assert "tracker.ads.test" in page and "pixel.ads.test" in page and "nas.home.test" not in page
    assert "NXDOMAIN" in page and "rules.0" in page
    bad = client_admin.get("/dns/log/", {"minutes": "soon"}).content.decode()
    assert "minutes: " in bad and "is not a whole number of minutes" in bad


def test_a_hostile_name_in_the_log_is_shown_as_text(client_admin, asked):
    # Any device on the home side chooses the names it asks for.
    assert _ask(asked, '<img src=x onerror="alert(1)">.ads.test', "192.168.1.72").rcode() == dns.rcode.NXDOMAIN
    page = client_admin.get("/dns/log/", {"client": "192.168.1.72"}).content.decode()
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;.ads.test" in page
    assert "<img" not in page
    assert "no query matches" in client_admin.get("/dns/log/", {"client": "192.168.1.99"}).content.decode()


def test_dns_page_shows_tables_not_a_dictionary(client_admin, asked):
    page = client_admin.get("/dns/").content.decode()
    assert 'id="dns-summary"' in page and 'id="dns-top-blocked"' in page
    assert "tracker.ads.test" in page and "{&#x27;" not in page and "{'" not in page
    assert 'href="/dns/log/' in page


def test_without_the_dns_service_the_log_says_so(api, client_admin):
    r = api.get("/api/dns/log/")
    assert r.status_code == 200 and r.data["running"] is False and "DNS not running" in r.data["problem"]
    assert "DNS not running" in client_admin.get("/dns/log/").content.decode()


def _on_disk(entries):
    """What the DNS server wrote to its log on disk (`querydisk.DiskLog`) at the box's path."""
    from appliance.services.dns.querydisk import DiskLog, Room
    from tests.support import webfakes
    disk = DiskLog(webfakes.BOX.layout.dns_querylog_dir, 1 << 20, 86400,
                   room=lambda _p: Room(free=100 << 30, total=200 << 30))
    disk.write(entries)
    disk.close()


def test_a_search_goes_on_into_the_log_on_disk_past_the_servers_memory(api, asked):
    memory = asked.querylog.search(limit=10)
    oldest = memory[-1]["time"]
    mac = "02:00:00:00:00:46"
    _on_disk([(oldest - 7200, "192.168.1.70", "old.ads.test", 1, "block", 3, True, "rules.0", mac),
              (oldest - 60, "192.168.1.71", "www.example.test", 1, "direct", 0, False, "", ""),
              # what memory still holds is on disk too: listed once
              *((e["time"], e["client"], e["qname"], 1, e["action"], e["rcode"], e["cached"], e["origin"], "")
                for e in memory)])
    r = api.get("/api/dns/log/")
    assert [e["qname"] for e in r.data["entries"]] == [
        "pixel.ads.test", "nas.home.test", "tracker.ads.test", "www.example.test", "old.ads.test"]
    r = api.get("/api/dns/log/", {"action": "block", "since": str(oldest - 3600)})
    assert [e["qname"] for e in r.data["entries"]] == ["pixel.ads.test", "tracker.ads.test"]
    r = api.get("/api/dns/log/", {"mac": mac.upper().replace(":", "-")})
    assert [(e["qname"], e["mac"]) for e in r.data["entries"]] == [("old.ads.test", mac)]
    assert api.get("/api/dns/log/", {"mac": "02:00:00"}).status_code == 400


def test_without_the_dns_service_the_log_on_disk_is_still_searched(api, client_admin):
    _on_disk([(time.time() - 60, "192.168.1.70", "kept.test", 1, "direct", 0, False, "", "")])
    r = api.get("/api/dns/log/")
    assert r.data["running"] is False and [e["qname"] for e in r.data["entries"]] == ["kept.test"]
    page = client_admin.get("/dns/log/").content.decode()
    assert "DNS not running" in page and "kept.test" in page


KERNEL = {"status": "on (tcx on vproxy0)", "hits": 1234, "misses": 56, "fills": 7,
          "top_clients": [["192.168.1.70", 1000], ["192.168.1.71", 234]],
          "top_names": [{"name": "www.video.test", "qtype": 1, "hits": 900},
                        {"name": "www.video.test", "qtype": 28, "hits": 300},
                        {"name": "mail.example.test", "qtype": 1, "hits": 34}]}


def test_kernel_answers_are_shown_as_counts_beside_the_log(client_admin, asked, monkeypatch):
    """The kernel cache's answers are not in the log line by line: the pages show its counts,
    narrowed like the search."""
    monkeypatch.setattr(asked, "kernel_cache_stats", lambda top=10: KERNEL)
    page = client_admin.get("/dns/log/", {"domain": "video"}).content.decode()
    assert "gave 1234 answers" in page
    names = page[page.index('id="kernel-names"'):page.index('id="kernel-clients"')]
    assert "www.video.test</td><td>A</td><td>900" in names and "<td>AAAA</td><td>300" in names
    assert "mail.example.test" not in names
    page = client_admin.get("/dns/log/", {"client": "192.168.1.71"}).content.decode()
    clients = page[page.index('id="kernel-clients"'):]
    assert "192.168.1.71</td><td>234" in clients and "192.168.1.70" not in clients
    summary = client_admin.get("/dns/").content.decode()
    assert "on (tcx on vproxy0): 1234 answered in the kernel, 56 passed up, 7 answers stored" in summary
    assert 'id="dns-kernel-names"' in summary


def test_a_kernel_cache_that_could_not_load_is_said(client_admin, asked):
    asked.kernel_cache_status = "unavailable, the server answers everything: no BTF"
    for url in ("/dns/", "/dns/log/"):
        page = client_admin.get(url).content.decode()
        assert '<span class="warn">unavailable, the server answers everything: no BTF</span>' in page \
            or '<p class="warn">unavailable, the server answers everything: no BTF</p>' in page, url


def test_the_log_page_shares_a_search_for_a_second_and_shows_new_queries_after_it(
        client_admin, asked, settings, monkeypatch):
    from appliance.web import sources

    settings.APPLIANCE_LIVE_SECONDS = 1.0
    now = [1000.0]
    monkeypatch.setattr(sources.time, "monotonic", lambda: now[0])
    searches = []
    search = asked.querylog.search
    monkeypatch.setattr(asked.querylog, "search", lambda *a, **kw: searches.append(a) or search(*a, **kw))
    monkeypatch.setattr(sources, "_CACHE", {})  # readings of earlier tests, on the real clock
    monkeypatch.setattr(sources, "_READING", {})

    assert b"pixel.ads.test" in client_admin.get("/dns/log/").content
    _ask(asked, "late.ads.test", "192.168.1.72")
    body = client_admin.get("/dns/log/").content
    assert b"late.ads.test" not in body and len(searches) == 1, "within the second: the same search"
    assert b"late.ads.test" in client_admin.get("/dns/log/", {"client": "192.168.1.72"}).content, \
        "another search is asked at once"
    now[0] += 1.1
    assert b"late.ads.test" in client_admin.get("/dns/log/").content, "after the second: asked again"
    for i in range(3 * sources.SEARCHES_KEPT):
        client_admin.get("/dns/log/", {"domain": f"d{i}"})
    assert sum(k.startswith("dns_log ") for k in list(sources._CACHE)) <= sources.SEARCHES_KEPT
