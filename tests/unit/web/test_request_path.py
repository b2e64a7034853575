"""What every request goes through, made cheaper without changing what it means.

The session's and the token's user read with one plain query
(`console.auth`), the page frame worked out once per process
(`console.context`), and the WSGI bridge under the ASGI server (`wsgibridge`).
"""
import asyncio
import json

import pytest
from django.contrib.auth import get_user_model
from django.forms.models import model_to_dict
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from appliance.web.console import auth

pytestmark = pytest.mark.django_db


def _fields(obj):
    return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}


def test_the_plain_queries_give_the_orms_user_and_token(admin):
    admin.last_login = admin.date_joined
    admin.save()
    orm = get_user_model().objects.get(pk=admin.pk)
    plain = auth.user_by_pk(admin.pk)
    assert _fields(plain) == _fields(orm) and not plain._state.adding and plain._state.db == "default"
    assert plain.date_joined.tzinfo is not None  # converted as the ORM converts SQLite's text
    assert auth.user_by_pk(admin.pk + 1000) is None
    token = Token.objects.create(user=admin)
    got = auth.token_with_user(token.key)
    assert _fields(got) == _fields(Token.objects.get(key=token.key)) and _fields(got.user) == _fields(orm)
    assert auth.token_with_user("0" * 40) is None
    assert model_to_dict(plain) == model_to_dict(orm)


def test_a_token_of_an_unknown_key_or_an_inactive_user_is_refused(admin, doc):
    token = Token.objects.create(user=admin)
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert c.get("/api/system/settings/").status_code == 200
    c.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    r = c.get("/api/system/settings/")
    assert r.status_code in (401, 403) and r.json()["detail"] == "Invalid token."
    admin.is_active = False
    admin.save()
    c.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    r = c.get("/api/system/settings/")
    assert r.status_code in (401, 403) and r.json()["detail"] == "User inactive or deleted."


def test_a_password_change_ends_the_other_sessions_and_an_inactive_user_is_anonymous(admin, doc):
    a, b = Client(), Client()
    a.force_login(admin)
    b.force_login(admin)
    assert a.get("/").status_code == b.get("/").status_code == 200
    admin.set_password("a new passphrase 2")
    admin.save()
    assert b.get("/").status_code == 302, "the session hash no longer verifies"
    a.force_login(admin)
    assert a.get("/").status_code == 200
    get_user_model().objects.filter(pk=admin.pk).update(is_active=False)
    assert a.get("/").status_code == 302


def test_a_session_of_the_stock_model_backend_path_is_served(admin, doc):
    c = Client()
    c.force_login(admin, backend="django.contrib.auth.backends.ModelBackend")  # what setup/TOTP log in with
    r = c.get("/")
    assert r.status_code == 200 and r.context["user"].pk == admin.pk


def test_the_frame_marks_the_active_tab_and_links_the_assets(client_admin):
    body = client_admin.get("/dhcp/").content.decode()
    assert '<a href="/dhcp/" class="active">DHCP</a>' in body and '<a href="/" >Dashboard</a>' in body
    assert 'href="/static/console/console.css"' in body and 'src="/static/console/console.js"' in body
    assert 'href="/account/"' in body and 'action="/logout/"' in body
    assert '<a href="/" class="active">Dashboard</a>' in client_admin.get("/").content.decode()


# ---------------------------------------------------------------- the WSGI bridge

def _asgi_call(app, method="GET", path="/", body_chunks=(b"",), headers=(), max_body=1 << 20, received=None):
    from appliance.web.wsgibridge import WSGIApp

    sent = []
    chunks = list(body_chunks)
    received = [] if received is None else received

    async def receive():
        received.append(True)
        if chunks:
            data = chunks.pop(0)
            return {"type": "http.request", "body": data, "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": b"", "http_version": "1.1",
             "headers": [(k.encode(), v.encode()) for k, v in headers], "server": ("127.0.0.1", 8000),
             "client": ("127.0.0.1", 5555), "scheme": "http", "root_path": ""}
    bridge = WSGIApp(app, threads=2, max_body=max_body)
    try:
        asyncio.run(bridge(scope, receive, send))
    finally:
        bridge.executor.shutdown()
    return sent


def test_the_bridge_sends_an_ordinary_response_in_one_piece_and_reads_a_body_sent_in_pieces():
    seen = {}

    def app(environ, start_response):
        seen["body"] = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        start_response("201 Created", [("Content-Type", "application/json"), ("X-A", "1")])
        return [b'{"ok": ', b"true}"]

    body = b"x" * 25 + b"\n" + b"y" * 30
    sent = _asgi_call(app, "POST", "/x", [body[:7], body[7:40], body[40:]],
                      [("content-length", str(len(body)))])
    assert seen["body"] == body
    assert sent == [{"type": "http.response.start", "status": 201,
                     "headers": [(b"content-type", b"application/json"), (b"x-a", b"1")]},
                    {"type": "http.response.body", "body": b'{"ok": true}'}]


def test_the_bridge_refuses_a_declared_body_over_the_limit_before_reading_it():
    called, received = [], []

    def app(environ, start_response):
        called.append(True)
        start_response("200 OK", [])
        return [b""]

    sent = _asgi_call(app, "POST", "/x", [b"x" * 100], [("content-length", "101")], max_body=100,
                      received=received)
    assert sent[0]["status"] == 413 and (b"connection", b"close") in sent[0]["headers"]
    assert b"limit of 100 bytes" in sent[1]["body"]
    assert received == [] and called == [], "not a byte read, the app never ran"
    sent = _asgi_call(app, "POST", "/x", [b"x" * 100], [("content-length", "100")], max_body=100)
    assert sent[0]["status"] == 200 and called == [True]


def test_the_bridge_refuses_a_chunked_body_the_moment_it_passes_the_limit():
    called, received = [], []

    def app(environ, start_response):
        called.append(True)
        start_response("200 OK", [])
        return [b""]

    sent = _asgi_call(app, "POST", "/x", [b"x" * 60, b"x" * 60, b"x" * 60, b"x" * 60], [], max_body=100,
                      received=received)
    assert sent[0]["status"] == 413 and called == []
    assert len(received) == 2, "stopped reading at the chunk that passed the limit"


def test_the_bridge_streams_a_streaming_response_chunk_by_chunk():
    closed = []

    class Streaming:
        streaming = True

        def __init__(self):
            self.chunks = iter([b"one", b"", b"two"])

        def __iter__(self):
            return self.chunks

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Streaming()

    sent = _asgi_call(app)
    assert [m.get("status") or m.get("body") for m in sent] == [200, b"one", b"two", b""]
    assert [m.get("more_body") for m in sent[1:]] == [True, True, None] and closed == [True]


@pytest.mark.django_db(transaction=True)  # the page runs in the bridge's thread, on its own connection
def test_the_bridge_serves_django(admin, doc):
    from django.core.wsgi import get_wsgi_application

    c = Client()
    c.force_login(admin)
    cookie = f"sessionid={c.cookies['sessionid'].value}"
    sent = _asgi_call(get_wsgi_application(), path="/api/system/settings/", headers=[("cookie", cookie),
                                                                                     ("host", "127.0.0.1")])
    assert sent[0]["status"] == 200 and json.loads(sent[1]["body"])["version"] == 2


# ---------------------------------------------------------------- a worker's start (warm.py)

FIRST_PAGES = ["/", "/devices/", "/dns/log/", "/stats/", "/dhcp/", "/dhcp/leases/", "/dns/", "/relay/", "/switch/",
               "/account/", "/api/system/settings/", "/api/devices/"]

# In a fresh process as a console worker starts (the ASGI module imported, nothing served yet):
# what the pages load on their first request. Run apart, since this test process has long
# imported everything another test touched.
FIRST_PAGES_PROBE = r"""
import json, sys
import appliance.web.asgi
from django.contrib.auth import get_user_model
from django.template import engines
from django.test import Client
from appliance.web.console.middleware import seed
seed()
c = Client(HTTP_HOST="127.0.0.1")
c.force_login(get_user_model().objects.create_superuser("a", "", "a long passphrase"))
loader = engines["django"].engine.template_loaders[0]
modules, templates = set(sys.modules), set(loader.get_template_cache)
codes = {p: c.get(p).status_code for p in json.loads(sys.argv[1])}
print(json.dumps({"codes": codes, "imported": sorted(set(sys.modules) - modules),
                  "compiled": sorted(set(loader.get_template_cache) - templates)}))
"""


def test_a_fresh_worker_serves_its_first_pages_without_importing_or_compiling(tmp_path):
    # Each module imported or template compiled on a first request held up every request of the
    # worker queued behind it: 190 ms for a fresh worker's first dashboard on the lab box.
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    (tmp_path / "box").mkdir()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "appliance.web.settings", "PYTHONPATH": str(root),
           "APPLIANCE_STATE_DIR": str(tmp_path), "APPLIANCE_DB": str(tmp_path / "db.sqlite3"),
           "APPLIANCE_BOX_STATE": str(tmp_path / "box"), "APPLIANCE_BOX_RUN": str(tmp_path / "run"),
           "APPLIANCE_REDIS_URL": "redis://127.0.0.1:1/0",  # down: the banners' check imports redis all the same
           "DJANGO_SECRET_KEY": "first-pages", "APPLIANCE_BOX_FACTORY": "tests.support.fakebox:make_box",
           "APPLIANCE_SOURCES": "tests.support.fakebox:make_sources"}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], env=env, cwd=root, check=True)
    out = subprocess.run([sys.executable, "-c", FIRST_PAGES_PROBE, json.dumps(FIRST_PAGES)], env=env, cwd=root,
                         capture_output=True, text=True, check=True).stdout
    got = json.loads(out.splitlines()[-1])
    assert got["codes"] == {p: 200 for p in FIRST_PAGES}
    assert (got["imported"], got["compiled"]) == ([], []), got
