"""DNS figures from the box in the lab: real `dig` queries counted in the series API and found
in the query log on disk after they have left the DNS server's memory (issue 18 items 3, 4).

The box's DNS server runs as its own user in netns vproxy, as applied; the console
(uvicorn, Celery, Redis) manages that box as `make demo` does, and is asked over HTTP with
an admin's token.
"""
import json
import secrets
import time
import urllib.request

import pytest

from appliance.lab import topology
from appliance.services.dns.control import DnsControl
from tests.support.boxlab import box_in_lab, settings_data
from tests.support.stack import Stack

DNS = {"upstreams": [{"url": "udp://192.168.1.1"}],
       "rules": [{"match": "suffix", "value": "blocked.test", "then": {"action": "block"}}],
       # A small memory: the first query below has left it by the time it is searched.
       "query_log": {"max_entries": 5}}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with box_in_lab(tmp_path_factory.mktemp("charts"), "q", clients=1, apply=settings_data(dns=DNS)) as lab_box:
        yield lab_box


@pytest.fixture(scope="module")
def console(home):
    lab, box = home
    s = Stack(fakes=False, workers=1, env={
        "APPLIANCE_HOST_NETNS": lab.spec.box, "APPLIANCE_BOX_STATE": box.layout.state_dir,
        "APPLIANCE_BOX_RUN": box.layout.run_dir})
    try:
        s.start()
        key = secrets.token_hex(20)
        s.manage("shell", "-c", f"""
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
admin = get_user_model().objects.create_superuser("admin", "", "a long passphrase for e2e")
Token.objects.create(user=admin, key="{key}")
""")
        yield s, key
    finally:
        s.cleanup()


def api(console, path):
    stack, key = console
    req = urllib.request.Request(stack.url + path, headers={"Authorization": f"Token {key}", "Host": "127.0.0.1"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def dig(lab, client, name):
    return lab.run(client, ["dig", "+time=2", "+tries=2", "@192.168.1.1", name]).stdout


def poll(what, seconds, message):
    deadline = time.monotonic() + seconds
    while not (got := what()):
        assert time.monotonic() < deadline, message
        time.sleep(0.5)
    return got


def counted(console, name, since):
    return sum(v for _, v in api(console, f"/api/stats/series/?name={name}&step=60&since={since}")["points"])


def test_digs_are_counted_per_minute_and_found_on_disk_after_memory(home, console):
    lab, box = home
    client = lab.spec.client(1)
    lab.dhcp(client)  # its lease tells the DNS server its MAC
    since = int(time.time()) - 120
    before = counted(console, "dns.queries", since), counted(console, "dns.blocked", since)
    assert "status: NXDOMAIN" in dig(lab, client, "first.blocked.test")
    for _ in range(10):
        assert "status: NOERROR" in dig(lab, client, "www.example.test")
    # The server writes its counts every 10 s, and a worker process sends it its log entries in
    # batches: the blocked query, answered by another process than the others, may be counted a
    # round later (a dig's retry can make up the 11 queries before it). Wait for every series.
    poll(lambda: counted(console, "dns.queries", since) >= before[0] + 11
         and counted(console, "dns.blocked", since) >= before[1] + 1
         and counted(console, "dns.forwarded", since) + counted(console, "dns.cached", since) >= 10, 40,
         "the digs never showed in dns.queries, dns.blocked and dns.forwarded + dns.cached")
    # Gone from the server's memory (5 entries) ...
    with DnsControl(box.layout.dns_socket) as c:
        assert c.query_log(domain="first.blocked.test") == []
    # ... and still in the log, from its disk.
    found = api(console, "/api/dns/log/?domain=first.blocked.test")["entries"]
    assert [(e["qname"], e["action"], e["mac"]) for e in found] == [
        ("first.blocked.test", "block", topology.client_mac(1))]
    by_device = api(console, f"/api/dns/log/?mac={topology.client_mac(1)}&limit=20")["entries"]
    assert [e["qname"] for e in by_device].count("www.example.test") == 10
    # The DNS server (not root) wrote its files where the console reads them.
    import os
    assert os.stat(box.layout.series_file("dns")).st_uid == 64531
    assert os.listdir(box.layout.dns_querylog_dir)
