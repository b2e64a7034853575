"""What the console's end-to-end tests share: the admin's password, the console managing a lab's
box, the first admin made in the browser, how to watch an apply in the browser, and a `Visitor`
that signs in and reads pages without one."""
import contextlib
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

PASSWORD = "a long passphrase for e2e"


@contextlib.contextmanager
def lab_stack(lab, box):
    """The console (Redis, Celery, the ASGI server) managing the lab's box, not fakes, as
    `make demo` runs it (appliance/lab/demo.py)."""
    from tests.support.stack import Stack

    s = Stack(confirm_timeout=30, step_delay=0, fakes=False, env={
        "APPLIANCE_HOST_NETNS": lab.spec.box, "APPLIANCE_BOX_STATE": box.layout.state_dir,
        "APPLIANCE_BOX_RUN": box.layout.run_dir})
    try:
        s.start()
        yield s
    finally:
        s.cleanup()


def first_admin(page, stack):
    """The first visit: the setup code (as `make demo` prints it) and the admin, then the wizard."""
    page.goto("/")
    assert page.url.endswith("/setup/")
    page.fill("#id_code", stack.setup_code)
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.click("#setup-form button")
    page.wait_for_url("**/network/wizard/")


def wait_state(page, states, timeout=30000):
    page.wait_for_function(
        "states => states.includes(document.getElementById('apply-state').textContent.trim())",
        arg=list(states), timeout=timeout)
    return page.locator("#apply-state").inner_text().strip()


def apply_and_watch(page):
    """Click Apply; collect the progress lines that arrive over the websocket."""
    frames = []

    def on_ws(ws):
        ws.on("framereceived", lambda data: frames.append(data))
    page.on("websocket", on_ws)
    page.goto("/applies/")
    page.click("#apply-button")
    page.wait_for_url(re.compile(r"/applies/\d+/$"))
    return frames


def lines_of(frames):
    out = []
    for f in frames:
        ev = json.loads(f if isinstance(f, str) else f.decode())
        if ev.get("kind") == "apply" and ev.get("line"):
            out.append(ev["line"])
    return out


class Visitor:
    """A browser without a browser: cookies, the form's CSRF token, no redirects followed."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    def __init__(self, base: str):
        self.base = base
        self.jar = CookieJar()
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # a stack's self-signed certificate
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), self._NoRedirect,
                                                  urllib.request.HTTPSHandler(context=ctx))
        self.csrf = ""

    def get(self, path):
        """(status, headers, body)."""
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
        """(status, Location, body)."""
        body = urllib.parse.urlencode({"csrfmiddlewaretoken": self.csrf, **data}).encode()
        req = urllib.request.Request(self.base + path, data=body, headers={"Referer": self.base + path})
        try:
            with self.opener.open(req, timeout=30) as r:
                return r.status, r.headers.get("Location", ""), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Location", ""), e.read().decode()

    def login(self, username: str, password: str = PASSWORD) -> None:
        self.get("/login/")
        status, location, body = self.post("/login/", {"username": username, "password": password})
        assert status == 302, (status, body[:500])
