#!/usr/bin/env python3
"""Console speed: requests/s and p95 of three pages under wrk (50 connections), and Apply-to-live.

Runs the console as deployed (Redis, one Celery worker, the ASGI server) on
a temporary database, side by side in one run:

  before, daphne x1    the console at git revision --before (one daphne process, every
                       page reading the box and the database afresh), exported with
                       `git archive` and run by this venv; the Box on the persistent
                       fakes of the browser tests (tests/support/fakebox.py)
  uvicorn xN, fakes    `python -m appliance.web.serve` (N workers), same fakes
  uvicorn xN, lab      the same server managing a real box applied in a lab
                       (tests/support/boxlab.py): Kea's leases over its control socket,
                       the ports from `ip -s link` in the box's namespace (needs root)

Pages: the dashboard (session), the lease list (100 leases on the fakes; the
lab's own leases on the real box), the settings document GET (API token), and
issue 18's: the devices page, the DNS query log, the charts page and the
series API (dns.queries by minute; in the lab after 200 digs).
Each page is measured with 50 and with 1 connection, each with keep-alive
and with "Connection: close": the 1-connection close p95 is the service
time, 50 connections add queueing, and keep-alive shows stalls that close
does not (daphne's 40 ms delayed-ACK wait). Then a DHCP-pool change is
applied through the API and timed from the POST to the record's "applied"
state: on the fakes that is the queue + worker + bookkeeping overhead; in
the lab it is the real box (datapath loaded, Kea restarted with the new
pool), checked by a lab client leasing from the new pool afterwards.

    .venv/bin/python bench/web.py [--seconds 5] [--connections 50] [--applies 5] [--workers 2] [--no-lab]
                                  [--baseline REV] [--no-before]

--baseline REV (repeatable) adds a row for the uvicorn server at git revision REV
on the same fakes (e.g. HEAD, to see the working tree's change side by side with it).
"""
from __future__ import annotations

import argparse
import json
import os
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

from tests.support.stack import ROOT, Stack  # noqa: E402

BEFORE = "dc822c0"  # the console before the speed work: one daphne, every reading per request

# Issue 18's targets: p95 under 50 ms with keep-alive at 50 connections, a DHCP-pool apply on the
# real lab box under 1 s.
P95_TARGET_MS = 50.0
APPLY_TARGET_S = 1.0

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
            "status": int(bad_status), "socket": int(sock_errors), "requests": int(requests)}


def apply_once(stack, token, pool_id, start, end):
    api(stack, token, "PATCH", f"/api/dhcp/pools/{pool_id}/", {"start": start, "end": end})
    t0 = time.monotonic()
    rec = api(stack, token, "POST", "/api/applies/")
    while rec["state"] in ("queued", "running"):
        time.sleep(0.02)
        rec = api(stack, token, "GET", f"/api/applies/{rec['id']}/")
    if rec["state"] != "applied":
        raise RuntimeError(f"apply #{rec['id']} ended {rec['state']}: {rec['error']}")
    return time.monotonic() - t0


def login(stack):
    out = stack.manage("shell", "-c", SETUP)
    return re.search(r"SESSION (\S+)", out).group(1), re.search(r"TOKEN (\S+)", out).group(1)


PAGES = [("dashboard", "/", "session"), ("lease list", "/dhcp/leases/", "session"),
         ("settings GET (API)", "/api/system/settings/", "token")]
# Issue 18's pages; an older revision (--before, --baseline) has none of them.
NEW_PAGES = [("devices", "/devices/", "session"), ("query log", "/dns/log/", "session"),
             ("charts", "/stats/", "session"),
             ("series (API)", "/api/stats/series/?name=dns.queries&step=60", "token")]


def measure_pages(stack, session, token, a, script, pages=PAGES + NEW_PAGES):
    rows = {}
    for name, path, auth in pages:
        header = f"Cookie: sessionid={session}" if auth == "session" else f"Authorization: Token {token}"
        rows[name] = {(c, close): wrk(stack.url + path, header, a.seconds, c, script, close)
                      for c in (a.connections, 1) for close in (False, True)}
    return rows


def on_fakes(server, workers, a, script, applies, root=None):
    stack = Stack(step_delay=0, server=server, workers=workers, **({"root": root} if root else {})).start()
    try:
        session, token = login(stack)
        (stack.tmp / "box" / "leases.json").write_text(json.dumps([
            {"ip": f"192.168.1.{65 + i}", "mac": f"02:00:00:00:01:{i:02x}", "hostname": f"host{i}",
             "expires": 2_000_000_000, "state": 0} for i in range(100)]))
        first = api(stack, token, "POST", "/api/applies/")  # so the dashboard has ports and services to show
        while api(stack, token, "GET", f"/api/applies/{first['id']}/")["state"] in ("queued", "running"):
            time.sleep(0.05)
        rows = measure_pages(stack, session, token, a, script, PAGES if root else PAGES + NEW_PAGES)
        times = []
        if applies:
            pool_id = api(stack, token, "GET", "/api/dhcp/pools/")[0]["id"]
            times = [apply_once(stack, token, pool_id, "192.168.1.100", f"192.168.1.{180 + i % 2}")
                     for i in range(applies)]
        return rows, times
    finally:
        stack.cleanup()


def in_lab(workers, a, script):
    """The console managing a box applied in a lab: pages on real readers, and real applies."""
    from tests.support.boxlab import box_in_lab, settings_data

    tmp = tempfile.mkdtemp(prefix="appliance-bench-web-")
    try:
        with box_in_lab(tmp, "w", clients=2, apply=settings_data()) as (lab, box):
            stack = Stack(step_delay=0, fakes=False, server="uvicorn", workers=workers, env={
                "APPLIANCE_HOST_NETNS": lab.spec.box, "APPLIANCE_BOX_STATE": box.layout.state_dir,
                "APPLIANCE_BOX_RUN": box.layout.run_dir}).start()
            try:
                session, token = login(stack)
                lab.dhcp(lab.spec.client(2))  # a lease for the lease list to show
                for i in range(200):  # a query log and a minute of counts to read
                    lab.run(lab.spec.client(2), ["dig", "+time=1", "+tries=1", "@192.168.1.1",
                                                 "www.example.test" if i % 2 else f"host-{i}.example.test"])
                time.sleep(11)  # the DNS server writes its counts every 10 s
                rows = measure_pages(stack, session, token, a, script)
                pool_id = api(stack, token, "GET", "/api/dhcp/pools/")[0]["id"]
                pools = [("192.168.1.120", "192.168.1.139"), ("192.168.1.20", "192.168.1.99")]
                times = [apply_once(stack, token, pool_id, *pools[i % 2]) for i in range(a.applies)]
                start, end = pools[(a.applies - 1) % 2]
                lease = lab.dhcp(lab.spec.client(1))
                if not _in(lease.address, start, end):
                    raise RuntimeError(f"{lab.spec.client(1)} leased {lease.address}, not from {start}-{end}")
                return rows, times
            finally:
                stack.cleanup()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _in(ip, start, end):
    import ipaddress
    return ipaddress.ip_address(start) <= ipaddress.ip_address(ip) <= ipaddress.ip_address(end)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--applies", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-lab", action="store_true", help="skip the real box in the lab (needs root)")
    ap.add_argument("--before", default=BEFORE, help="git revision of the console to compare with")
    ap.add_argument("--no-before", action="store_true", help="skip the one-daphne row of --before")
    ap.add_argument("--baseline", action="append", default=[],
                    help="also the uvicorn server at this git revision, on the fakes (repeatable)")
    a = ap.parse_args()
    if not shutil.which("wrk"):
        print("bench/web.py: needs wrk (image/packages.txt)", file=sys.stderr)
        return 2
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(LUA)
    w = a.workers
    before = tempfile.mkdtemp(prefix="appliance-bench-before-")
    baselines = {rev: tempfile.mkdtemp(prefix="appliance-bench-baseline-") for rev in a.baseline}
    try:
        # The console as it was, from git, run by the same venv on the same machine in the same run.
        def export(rev, into):
            archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
        configs = []
        if not a.no_before:
            export(a.before, before)
            configs.append(("before, daphne x1", lambda: on_fakes("daphne", 1, a, f.name, 0, root=before)))
        for rev, tree in baselines.items():
            export(rev, tree)
            configs.append((f"{rev[:8]} uvicorn x{w}", lambda tree=tree: on_fakes("uvicorn", w, a, f.name, 0,
                                                                                   root=tree)))
        configs.append((f"uvicorn x{w}, fakes", lambda: on_fakes("uvicorn", w, a, f.name, a.applies)))
        if not a.no_lab:
            configs.append((f"uvicorn x{w}, lab", lambda: in_lab(w, a, f.name)))
        results = [(name, *run()) for name, run in configs]
    finally:
        shutil.rmtree(before, ignore_errors=True)
        for tree in baselines.values():
            shutil.rmtree(tree, ignore_errors=True)
        os.unlink(f.name)

    n = a.connections
    print(f"\nconsole under wrk: {n} connections, {a.seconds} s each, {os.cpu_count()} cores")
    print(f"p95 in ms (and p95/target, target {P95_TARGET_MS:.0f} ms); keep-alive as browsers do, and Connection: close")
    print(f"{'page':<20}{'server, box':<20}{f'{n}c req/s':>10}{f'{n}c p95':>14}{f'{n}c close p95':>16}"
          f"{'1c p95':>12}{'1c close p95':>16}{'non-2xx/socket errors':>22}")
    cell = lambda r: f"{r['p95']:.0f} ({r['p95'] / P95_TARGET_MS:.2f})"  # noqa: E731
    for page in dict.fromkeys(p for _, rows, _ in results for p in rows):
        for name, rows, _ in results:
            if page not in rows:
                continue
            runs = rows[page]
            print(f"{page:<20}{name:<20}{runs[(n, False)]['rps']:>10.0f}{cell(runs[(n, False)]):>14}"
                  f"{cell(runs[(n, True)]):>16}{cell(runs[(1, False)]):>12}{cell(runs[(1, True)]):>16}"
                  f"{str(sum(r['status'] for r in runs.values())) + '/' + str(sum(r['socket'] for r in runs.values())):>22}")
    print(f"\nApply -> applied, DHCP-pool change, {a.applies} runs each (target {APPLY_TARGET_S:g} s)")
    print(f"{'row':<32}{'median s':>9}{'max s':>8}{'median/target':>15}{'max/target':>12}")
    labels = {"fakes": "apply (fake box: queue+worker)", "lab": "apply (real box in the lab)"}
    for name, _, times in results:
        if times:
            med, worst = statistics.median(times), max(times)
            print(f"{labels[name.rsplit(', ', 1)[1]]:<32}{med:>9.3f}{worst:>8.3f}{med / APPLY_TARGET_S:>15.2f}"
                  f"{worst / APPLY_TARGET_S:>12.2f}")
    print("\nreproduce: .venv/bin/python bench/web.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
