"""The console's relay page and `/api/relay/connections/`: the relay's own
connection table (its real control socket and bookkeeping, in this process)
shown to the user, the kernel fast path's connections among them."""
import asyncio
import threading

import pytest

from appliance.services.relay.control import ControlServer
from appliance.services.relay.table import ConnectionTable
from tests.support import webfakes as fakes

pytestmark = pytest.mark.django_db


class TableOnly:
    """What the control socket asks of a relay, from a real ConnectionTable."""

    def __init__(self):
        self.table = ConnectionTable(100)
        relayed = self.table.open("tcp", ("192.168.1.20", 40000), ("100.96.0.7", 443), "www.example.test",
                                  "direct")
        relayed.real, relayed.state, relayed.up, relayed.down = "203.0.113.10:443", "open", 1200, 3400
        kernel = self.table.open("tcp", ("192.168.1.21", 40001), ("100.96.0.7", 443), "www.example.test",
                                 "direct", counted=False)
        kernel.real, kernel.state, kernel.path, kernel.down = "203.0.113.10:443", "open", "kernel", 52000000
        gone = self.table.open("tcp", ("192.168.1.20", 40002), ("100.96.0.9", 80), "blocked.test", "reject")
        self.table.close(gone, "refused", "route reject")

    def connections(self):
        return self.table.live()

    def history(self, limit=None):
        return self.table.history(limit)

    def counters(self):
        return self.table.counters()

    translator = {"ipv6_translator": "on (tc clsact on vproxy0, shadows 100.95.0.0/16)",
                  "ipv6_translated": {"to4": 120, "to6": 340}}

    def stats(self):
        return {"live_tcp": 1, "live_udp": 0,
                "fast_path": {"enabled": True, "entries": 1, "connections": 1, **self.translator}}


@pytest.fixture
def relay_socket():
    path = fakes.BOX.layout.relay_socket  # where the box's relay listens
    loop = asyncio.new_event_loop()
    server = ControlServer(TableOnly(), path)
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield path
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.run_until_complete(server.stop())
    loop.close()


def test_api_lists_live_connections_of_both_paths_history_and_counters(api, relay_socket):
    r = api.get("/api/relay/connections/?history=10")
    assert r.status_code == 200 and r.data["running"] is True
    paths = sorted((c["client"], c["path"]) for c in r.data["live"])
    assert paths == [("192.168.1.20:40000", "relay"), ("192.168.1.21:40001", "kernel")]
    assert [h["error"] for h in r.data["history"]] == ["route reject"]
    assert r.data["counters"]["domains"]["www.example.test"]["bytes_down"] == 3400  # the kernel's row
    # is counted by the kernel's own counters, not twice


def test_api_says_when_the_relay_is_down(api):
    r = api.get("/api/relay/connections/")
    assert r.status_code == 200 and r.data["running"] is False and "not running" in r.data["problem"]


def test_relay_page_shows_the_table(client_admin, relay_socket):
    page = client_admin.get("/relay/").content.decode()
    assert "192.168.1.21:40001" in page and "kernel" in page and "49.6\xa0MB" in page
    assert "route reject" in page and "www.example.test" in page
    # The relay's statistics as a table, not a dictionary.
    assert 'id="relay-stats"' in page and "on: 1 connections" in page and "{&#x27;" not in page


def test_relay_page_says_whether_ipv6_clients_take_the_fast_path_and_why_not(client_admin, relay_socket):
    page = client_admin.get("/relay/").content.decode()
    assert "on (tc clsact on vproxy0, shadows 100.95.0.0/16): 120 packets to IPv4, 340 back" in page
    on, TableOnly.translator = TableOnly.translator, {
        "ipv6_translator": "unavailable, IPv6 clients are relayed: no device vproxy0"}
    try:
        page = client_admin.get("/relay/").content.decode()
    finally:
        TableOnly.translator = on
    assert '<span class="warn">unavailable, IPv6 clients are relayed: no device vproxy0</span>' in page
