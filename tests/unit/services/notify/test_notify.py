"""Alerts reach a webhook (Apprise's json://, a real HTTP server on loopback) from a real
notifier process following a real events file."""
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from appliance.services.health import record
from appliance.services.notify import kind, message


@pytest.fixture
def webhook():
    got: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"json://127.0.0.1:{server.server_address[1]}/", got
    server.shutdown()


def wait_for(got, count, timeout=15):
    deadline = time.monotonic() + timeout
    while len(got) < count:
        assert time.monotonic() < deadline, f"{len(got)} alerts arrived, not {count}: {got}"
        time.sleep(0.1)


def test_the_notifier_sends_new_events_of_the_kinds_asked_and_not_the_previous_runs(tmp_path, webhook):
    url, got = webhook
    events = str(tmp_path / "health" / "events.jsonl")
    record.append_event(events, record.Event("dns", "unhealthy", "an earlier run's: not sent again"))
    config = tmp_path / "notify.json"
    config.write_text(json.dumps({"urls": [url], "events": ["service", "modem"], "events_file": events,
                                  "box": "home-box"}))
    proc = subprocess.Popen([sys.executable, "-m", "appliance.services.notify", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 15
        while "following" not in (line := proc.stdout.readline()):
            assert line and time.monotonic() < deadline, "the notifier never started"
        record.append_event(events, record.Event("devices", "new", "aa:bb:cc:00:00:01 (kind not asked)"))
        record.append_event(events, record.Event("dns", "unhealthy", "no answer in 0.5 s; the modem answers DNS"))
        record.append_event(events, record.Event("gateway", "mac-changed", "the gateway 192.168.1.1 is at 02:00:00:00:00:02 now"))
        wait_for(got, 2)
        assert [(g["title"], g["message"]) for g in got] == [
            ("home-box: The dns service does not answer", "no answer in 0.5 s; the modem answers DNS"),
            ("home-box: The modem has a new MAC address", "the gateway 192.168.1.1 is at 02:00:00:00:00:02 now"),
        ]
    finally:
        proc.terminate()
        proc.wait(5)


def test_every_kind_has_its_events_and_words():
    assert kind(record.Event("kea", "healthy")) == "service"
    assert kind(record.Event("gateway", "re-apply-failed")) == "modem"
    assert kind(record.Event("devices", "new")) == "new-device"
    assert kind(record.Event("devices", "over-budget")) == "data-budget"
    assert kind(record.Event("watchdog", "watchdog-start")) is None
    assert message(record.Event("relay", "restart", "3 probes failed"), "box") == (
        "box: The relay service was restarted", "3 probes failed")
