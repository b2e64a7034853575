"""The console's defences with the real parts: uvicorn workers, Redis, curl and Chromium (issue 14).

- a 200 MB POST refused with 413 before it is read, nothing written;
- the first admin made once by concurrent visitors with the setup code,
  and never without it;
- the Redis cache holds JSON, and a pickle put there runs nothing;
- the CSP lets the pages' websocket through (HTTP and HTTPS), nothing else;
- over HTTPS the cookies are `__Host-`, Secure, HttpOnly, SameSite=Strict;
- a Host that is not the box's is refused.
"""
import os
import pickle
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from http.cookies import SimpleCookie
from pathlib import Path

import pytest

from tests.e2e.conftest import CHROMIUM
from tests.support.stack import Stack

PASSWORD = "a long passphrase for e2e"
MAX_BODY = 2 << 20
_state: dict = {}


def _needs_the_stack():
    if not shutil.which("redis-server") or not shutil.which("curl"):
        pytest.skip("needs redis-server and curl (image/packages.txt)")


@pytest.fixture(scope="module")
def server_tmp():
    """The server's TMPDIR: a file spooled by Python's tempfile would land here."""
    d = Path(tempfile.mkdtemp(prefix="appliance-e2e-tmpdir-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def plain(server_tmp):
    """The console over HTTP, as `make demo` serves it."""
    _needs_the_stack()
    s = Stack(step_delay=0, env={"TMPDIR": str(server_tmp)}).start()
    try:
        yield s
    finally:
        s.cleanup()


@pytest.fixture(scope="module")
def https():
    """The console over HTTPS, as the image serves it."""
    _needs_the_stack()
    s = Stack(step_delay=0, https=True).start()
    try:
        yield s
    finally:
        s.cleanup()


def server_io(stack) -> dict[int, dict[str, int]]:
    """Bytes read and written so far by each of the web server's processes (the supervisor and its workers)."""
    pgid = stack.procs["web"].pid
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            counts = {"rchar": 0, "wchar": 0}
            for line in Path(f"/proc/{pid}/io").read_text().splitlines():
                key, value = line.split(":")
                if key in counts:
                    counts[key] = int(value)
            found[int(pid)] = counts
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return found


def curl(*args) -> str:
    return subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", *args], capture_output=True,
                          text=True, check=True, timeout=120).stdout


def test_a_200_mb_post_is_refused_with_413_and_nothing_is_written(plain, server_tmp):
    big = plain.tmp / "200M"
    subprocess.run(["truncate", "-s", "200M", str(big)], check=True)  # sparse: no disk written here either
    url = plain.url + "/system/restore/"

    def three_posts():
        # Content-Length declared (curl then waits for "100 Continue", which never comes) ...
        assert curl("-X", "POST", "--data-binary", f"@{big}", url) == "413"
        # ... declared and sent at once, without waiting ...
        assert curl("-X", "POST", "-H", "Expect:", "--data-binary", f"@{big}", url) == "413"
        # ... and chunked: no length, counted as it comes.
        assert curl("-X", "POST", "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{big}", url) == "413"

    # The counts are per process, so they hold only if no worker was replaced in between: uvicorn's
    # supervisor restarts a worker that misses its 5-s health check, and the new one's imports are
    # megabytes of reads (my guess for the one failure seen, 12 MB under the whole suite's load).
    # Then the measure is taken again.
    for _ in range(3):
        before = server_io(plain)
        three_posts()
        after = server_io(plain)
        if before.keys() == after.keys():
            break
    assert before.keys() == after.keys(), f"the server's processes changed at every try: {before} {after}"
    read = sum(after[pid]["rchar"] - before[pid]["rchar"] for pid in after)
    written = sum(after[pid]["wchar"] - before[pid]["wchar"] for pid in after)
    assert read < 3 * (MAX_BODY + (1 << 20)), f"{read} bytes read: the 600 MB sent were not"
    assert written < 64 << 10, f"{written} bytes written"
    assert list(server_tmp.iterdir()) == [], "nothing spooled"
    # Under the limit, the request reaches the console (which wants its CSRF token).
    small = plain.tmp / "1M"
    subprocess.run(["truncate", "-s", "1M", str(small)], check=True)
    assert curl("-X", "POST", "--data-binary", f"@{small}", plain.url + "/setup/") == "403"


def test_a_host_that_is_not_the_box_is_refused(plain):
    assert curl("-H", "Host: rebound.example", plain.url + "/login/") == "400"
    assert curl(plain.url + "/login/") in ("200", "302")


class Visitor:
    """A browser without a browser: cookies, the form's CSRF token, no redirects followed."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    def __init__(self, base: str):
        self.base = base
        self.jar = CookieJar()
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the stack's self-signed certificate
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), self._NoRedirect,
                                                  urllib.request.HTTPSHandler(context=ctx))
        self.csrf = ""

    def get(self, path):
        try:
            with self.opener.open(self.base + path, timeout=30) as r:
                body, status, headers = r.read().decode(), r.status, r.headers
        except urllib.error.HTTPError as e:
            body, status, headers = e.read().decode(), e.code, e.headers
        m = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body)
        if m:
            self.csrf = m.group(1)
        return status, headers, body

    def post(self, path, data):
        body = urllib.parse.urlencode({"csrfmiddlewaretoken": self.csrf, **data}).encode()
        req = urllib.request.Request(self.base + path, data=body, headers={"Referer": self.base + path})
        try:
            with self.opener.open(req, timeout=30) as r:
                return r.status, r.headers.get("Location", "")
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Location", "")


def users(stack) -> list[str]:
    out = stack.manage("shell", "-c", "from django.contrib.auth import get_user_model; "
                                      "print('USERS', *get_user_model().objects.values_list('username', flat=True))")
    return out.split("USERS", 1)[1].split()


def test_setup_refuses_without_the_code_and_makes_one_admin_from_concurrent_visitors(plain):
    assert plain.setup_code and (plain.tmp / "setup-code").exists()
    v = Visitor(plain.url)
    v.get("/setup/")
    form = {"username": "owner", "password": PASSWORD, "password2": PASSWORD}
    assert v.post("/setup/", form)[0] == 200, "the form again: the code is missing"
    assert v.post("/setup/", {**form, "code": "AAAAA-AAAAA-AAAAA"})[0] == 403
    assert users(plain) == []

    visitors = [Visitor(plain.url) for _ in range(6)]
    for x in visitors:
        x.get("/setup/")
    start, results = threading.Barrier(len(visitors)), {}

    def go(i, x):
        start.wait()
        results[i] = x.post("/setup/", {**form, "username": f"owner{i}", "code": plain.setup_code})
    threads = [threading.Thread(target=go, args=(i, x)) for i, x in enumerate(visitors)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [i for i, (status, where) in results.items() if where.endswith("/network/wizard/")]
    assert len(results) == 6 and len(winners) == 1, results
    assert all(where.endswith("/login/") for i, (_, where) in results.items() if i not in winners), results
    assert users(plain) == [f"owner{winners[0]}"]
    assert not (plain.tmp / "setup-code").exists(), "the code is used up"
    assert plain.read_setup_code() == ""
    _state["admin"] = f"owner{winners[0]}"


def test_the_cache_holds_json_and_a_pickle_in_redis_runs_nothing(plain):
    import redis

    r = redis.Redis(port=plain.redis_port)
    marker = plain.tmp / "unpickled"
    plain.manage("shell", "-c", "from django.core.cache import cache; cache.set('probe', {'a': [1, 2]}, 60)")
    assert r.get(":1:probe") == b'{"a":[1,2]}'

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))
    r.set(":1:evil", pickle.dumps(Payload()))
    res = subprocess.run([sys.executable, "manage.py", "shell", "-c",
                          "from django.core.cache import cache; cache.get('evil')"], env=plain.env, cwd=plain.root,
                         capture_output=True, text=True)
    assert res.returncode != 0 and "CacheValueRefused: a cache value that is not JSON" in res.stderr
    assert not marker.exists()


def _chromium():
    if not os.path.exists(CHROMIUM):
        pytest.skip("needs /usr/bin/chromium")


def watch(page):
    """Collect the page's CSP reports and its websocket frames."""
    seen = {"csp": [], "frames": []}
    page.on("console", lambda m: seen["csp"].append(m.text) if "Content Security Policy" in m.text else None)
    page.on("websocket", lambda ws: ws.on("framereceived", lambda f: seen["frames"].append(f)))
    return seen


def wait_for_a_frame(page, seen, timeout=20):
    for _ in range(timeout * 10):
        if seen["frames"]:
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"no websocket frame in {timeout} s; CSP said {seen['csp']}")


BLOCKED_WS = """() => new Promise(resolve => {
    document.addEventListener('securitypolicyviolation', e => resolve(e.violatedDirective + ' ' + e.blockedURI));
    const ws = new WebSocket('ws://127.0.0.2:9/');  // port 9: Chromium itself never connects there
    ws.onclose = () => resolve('not refused by the policy');
})"""


def test_csp_lets_the_console_websocket_through_and_nothing_else(plain, browser):
    _chromium()
    ctx = browser.new_context(base_url=plain.url)  # no bypass_csp: the policy as a user's browser applies it
    try:
        page = ctx.new_page()
        seen = watch(page)
        page.goto("/login/")
        page.fill("#id_username", _state.get("admin", "owner0"))
        page.fill("#id_password", PASSWORD)
        page.click("#login-form button")
        page.wait_for_url(plain.url + "/")
        wait_for_a_frame(page, seen)
        assert seen["csp"] == []
        assert page.evaluate(BLOCKED_WS).startswith("connect-src"), "another host is refused by the policy"
    finally:
        ctx.close()


def test_cookies_over_https_are_host_only_secure_httponly_strict(https, browser):
    _chromium()
    status, headers, _ = Visitor(https.url).get("/setup/")
    assert status == 200
    cookie = SimpleCookie()
    for h in headers.get_all("Set-Cookie"):
        cookie.load(h)
    m = cookie["__Host-csrftoken"]
    assert (m["secure"], m["httponly"], m["samesite"], m["path"], m["domain"]) == (True, True, "Strict", "/", "")

    ctx = browser.new_context(base_url=https.url, ignore_https_errors=True)
    try:
        page = ctx.new_page()
        seen = watch(page)
        page.goto("/setup/")
        page.fill("#id_code", https.setup_code)  # as the box's own console shows it
        page.fill("#id_username", "admin")
        page.fill("#id_password", PASSWORD)
        page.fill("#id_password2", PASSWORD)
        page.click("#setup-form button")
        page.wait_for_url("**/network/wizard/")
        cookies = {c["name"]: c for c in ctx.cookies()}
        assert set(cookies) == {"__Host-csrftoken", "__Host-sessionid"}, cookies
        for c in cookies.values():
            assert (c["secure"], c["httpOnly"], c["sameSite"], c["path"], c["domain"]) == \
                (True, True, "Strict", "/", "127.0.0.1"), c
        assert page.evaluate("() => document.cookie") == "", "no script reads them"
        page.goto("/")  # the dashboard's websocket over wss, with the __Host- session cookie
        wait_for_a_frame(page, seen)
        assert seen["csp"] == []
    finally:
        ctx.close()


def test_cookies_over_http_keep_plain_names_and_samesite(plain):
    status, headers, _ = Visitor(plain.url).get("/login/")
    cookie = SimpleCookie()
    for h in headers.get_all("Set-Cookie") or ():
        cookie.load(h)
    m = cookie["csrftoken"]
    assert (m["secure"], m["httponly"], m["samesite"]) == ("", True, "Strict")
