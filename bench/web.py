#!/usr/bin/env python3
"""Console speed: requests/s and p95 of three pages under wrk (50 connections), and Apply-to-done.

Runs the console as deployed (Redis, one Celery worker, one daphne) on a
temporary database with the Box on the persistent fakes of the browser
tests (`tests/e2e/fakebox.py`): the figures are the web stack's own, not the
datapath's. Pages: the dashboard (session), the lease list (100 leases,
session) and the settings document GET (API token). Then a DHCP-pool change
is applied through the API and timed from the POST to the record's
"applied" state, several times; the fake box does no kernel work, so this
is the queue + worker + bookkeeping overhead on top of the box's own apply
(see bench/dhcp.py for the real box's apply times).

    .venv/bin/python bench/web.py [--seconds 10] [--connections 50] [--applies 5]

Each page is measured with 50 and with 1 connection, each with keep-alive
and with "Connection: close": the 1-connection close p95 is the service
time; 50 connections add queueing in the single daphne process, and
keep-alive connections show stalls in daphne that close does not.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # not bench/: its dns.py would shadow dnspython

from tests.e2e.stack import Stack  # noqa: E402

P95_TARGET_MS = 100.0
APPLY_TARGET_S = 3.0

LUA = """
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %.3f %d %d\\n", summary.requests, summary.duration,
           latency:percentile(95) / 1000.0, summary.errors.status, summary.errors.connect + summary.errors.read
           + summary.errors.write + summary.errors.timeout))
end
"""

SETUP = """
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from django.test import Client
from appliance.web import document
from appliance.web.console.middleware import seed
seed()
u = get_user_model().objects.create_superuser("bench", "", "bench passphrase 1")
c = Client()
c.force_login(u)
print("SESSION", c.cookies["sessionid"].value)
print("TOKEN", Token.objects.create(user=u).key)
"""


def api(stack, token, method, path, body=None):
    req = urllib.request.Request(stack.url + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": f"Token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def wrk(url, header, seconds, connections, script, close=False):
    extra = ["-H", "Connection: close"] if close else []
    out = subprocess.run(["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{seconds}s",
                          "-H", header, *extra, "-s", script, url], capture_output=True, text=True, check=True).stdout
    m = re.search(r"RESULT (\d+) (\d+) ([\d.]+) (\d+) (\d+)", out)
    requests, duration_us, p95_ms, bad_status, sock_errors = m.groups()
    return {"rps": int(requests) / (int(duration_us) / 1e6), "p95": float(p95_ms),
            "errors": int(bad_status) + int(sock_errors), "requests": int(requests)}


def apply_once(stack, token, pool_id, end):
    api(stack, token, "PATCH", f"/api/dhcp/pools/{pool_id}/", {"end": end})
    t0 = time.monotonic()
    rec = api(stack, token, "POST", "/api/applies/")
    while rec["state"] in ("queued", "running"):
        time.sleep(0.02)
        rec = api(stack, token, "GET", f"/api/applies/{rec['id']}/")
    if rec["state"] != "applied":
        raise RuntimeError(f"apply #{rec['id']} ended {rec['state']}: {rec['error']}")
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--applies", type=int, default=5)
    a = ap.parse_args()
    if not shutil.which("wrk"):
        print("bench/web.py: needs wrk (image/packages.txt)", file=sys.stderr)
        return 2
    stack = Stack(step_delay=0).start()
    try:
        out = stack.manage("shell", "-c", SETUP)
        session = re.search(r"SESSION (\S+)", out).group(1)
        token = re.search(r"TOKEN (\S+)", out).group(1)
        (stack.tmp / "box" / "leases.json").write_text(json.dumps([
            {"ip": f"192.168.1.{65 + i}", "mac": f"02:00:00:00:01:{i:02x}", "hostname": f"host{i}",
             "expires": 2_000_000_000, "state": 0} for i in range(100)]))
        first = api(stack, token, "POST", "/api/applies/")  # so the dashboard has ports and services to show
        while api(stack, token, "GET", f"/api/applies/{first['id']}/")["state"] in ("queued", "running"):
            time.sleep(0.05)
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write(LUA)
        rows = []
        for name, path, header in [("dashboard", "/", f"Cookie: sessionid={session}"),
                                   ("lease list", "/dhcp/leases/", f"Cookie: sessionid={session}"),
                                   ("settings GET (API)", "/api/system/settings/", f"Authorization: Token {token}")]:
            runs = {(c, close): wrk(stack.url + path, header, a.seconds, c, f.name, close)
                    for c in (a.connections, 1) for close in (False, True)}
            rows.append((name, runs))
        pool_id = api(stack, token, "GET", "/api/dhcp/pools/")[0]["id"]
        times = [apply_once(stack, token, pool_id, f"192.168.1.{180 + i % 2}") for i in range(a.applies)]
    finally:
        stack.cleanup()

    print(f"\nconsole under wrk: {a.connections} connections, {a.seconds} s each, one daphne, "
          f"Box on fakes, 2 cores")
    print("p95 in ms (and p95/target, target 100 ms); keep-alive as browsers do, and Connection: close")
    n = a.connections
    print(f"{'page':<20}{f'{n}c req/s':>10}{f'{n}c p95':>14}{f'{n}c close p95':>16}{'1c p95':>12}"
          f"{'1c close p95':>16}{'errors':>8}")
    for name, runs in rows:
        cell = lambda r: f"{r['p95']:.0f} ({r['p95'] / P95_TARGET_MS:.2f})"  # noqa: E731
        print(f"{name:<20}{runs[(n, False)]['rps']:>10.0f}{cell(runs[(n, False)]):>14}{cell(runs[(n, True)]):>16}"
              f"{cell(runs[(1, False)]):>12}{cell(runs[(1, True)]):>16}"
              f"{sum(r['errors'] for r in runs.values()):>8}")
    med, worst = statistics.median(times), max(times)
    print(f"\nApply -> applied, DHCP-pool change, {a.applies} runs (fake box: queue + worker overhead)")
    print(f"{'median s':>9}{'max s':>8}{'target s':>10}{'median/target':>15}")
    print(f"{med:>9.3f}{worst:>8.3f}{APPLY_TARGET_S:>10.1f}{med / APPLY_TARGET_S:>15.2f}")
    print("\nreproduce: .venv/bin/python bench/web.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
