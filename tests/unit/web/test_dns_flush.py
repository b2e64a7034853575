"""Flushing fake IPs from the console and the API reaches the DNS server's pool
(a real DnsService answering on its control socket), keeps pinned addresses,
is audited, and says so when the DNS server is not running."""
import asyncio
import threading

import pytest

from appliance.services.dns.control import serve_control
from appliance.services.dns.server import DnsService
from appliance.services.dns.settings import parse_settings
from appliance.web.audit.models import AuditEntry

pytestmark = pytest.mark.django_db


@pytest.fixture
def dns_server(tmp_path):
    """The DNS service's control socket where the console looks for it: the box's."""
    import os

    from tests.support import webfakes
    path = webfakes.BOX.layout.dns_socket
    os.makedirs(os.path.dirname(path), exist_ok=True)
    service = DnsService(parse_settings({
        "listen": ["127.0.0.1:0"], "upstreams": [{"url": "udp://192.0.2.53"}], "control_socket": path,
        "fake_ip": {"db_path": str(tmp_path / "fakeip.sqlite3")}}))
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()

    async def serve():
        server = await serve_control(service, path)
        started.set()
        await stop.wait()
        server.close()
        await server.wait_closed()

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    assert started.wait(5)
    yield service
    loop.call_soon_threadsafe(stop.set)
    thread.join(5)
    loop.close()
    service.fakeips.close()


def test_api_flush_forgets_unpinned_mappings_and_keeps_pinned(api, dns_server):
    pool = dns_server.fakeips
    loose = pool.allocate("www.video.test", "direct")
    held = pool.allocate("cdn.video.test", "direct")
    assert pool.pin(held)  # a live connection uses it
    r = api.post("/api/dns/fake-ips/flush/")
    assert r.status_code == 200 and r.data == {"removed": 1, "kept": 1}
    assert pool.lookup_ip(loose) is None
    assert pool.lookup_ip(held).domain == "cdn.video.test"
    entry = AuditEntry.objects.get(action="flush-fake-ips")
    assert entry.username == "admin" and "1 mappings forgotten" in entry.diff


def test_console_button_flushes_and_reports(client_admin, dns_server):
    dns_server.fakeips.allocate("www.video.test", "direct")
    page = client_admin.get("/dns/").content.decode()
    assert 'id="flush-fake-ips"' in page
    confirm = client_admin.get("/dns/fake-ips/flush/").content.decode()
    assert 'id="flush-fake-ips-confirm"' in confirm and "cannot connect with it" in confirm
    assert len(dns_server.fakeips) == 1  # asking is not flushing
    r = client_admin.post("/dns/fake-ips/flush/", {"confirm": "1"}, follow=True)
    assert "Fake IPs flushed: 1 mappings forgotten" in r.content.decode()
    assert len(dns_server.fakeips) == 0


def test_flush_without_a_dns_server_says_so(api):
    # No DNS service has its control socket at the box's path.
    r = api.post("/api/dns/fake-ips/flush/")
    assert r.status_code == 409 and "DNS not running" in r.data["detail"]
    assert not AuditEntry.objects.filter(action="flush-fake-ips").exists()


def test_console_post_without_the_confirmation_flushes_nothing(client_admin, dns_server):
    dns_server.fakeips.allocate("www.video.test", "direct")
    r = client_admin.post("/dns/fake-ips/flush/")
    assert r.status_code == 400 and 'id="flush-fake-ips-confirm"' in r.content.decode()
    assert len(dns_server.fakeips) == 1
    assert not AuditEntry.objects.filter(action="flush-fake-ips").exists()


def test_flush_needs_a_login(client, dns_server):
    dns_server.fakeips.allocate("www.video.test", "direct")
    assert client.post("/api/dns/fake-ips/flush/").status_code in (401, 403)
    assert client.post("/dns/fake-ips/flush/", {"confirm": "1"}).status_code == 302  # to the login
    assert len(dns_server.fakeips) == 1


def test_flush_is_in_the_openapi_schema(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    import json
    op = json.loads(schema.content)["paths"]["/api/dns/fake-ips/flush/"]["post"]
    assert "Forget every fake-IP mapping" in op["description"] and {"200", "409"} <= set(op["responses"])
