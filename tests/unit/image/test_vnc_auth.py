"""The noVNC auth plugin lets through exactly the sessions the console accepts."""
import http.server
import importlib.util
import ssl
import subprocess
import sys
import threading
import types
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[3]
PLUGIN = TOP / "image/rootfs/usr/local/lib/python3.11/dist-packages/appliance_vnc_auth.py"


class AuthenticationError(Exception):
    def __init__(self, log_msg=None, response_code=403, response_headers={}, response_msg=None):
        self.code = response_code
        super().__init__(f"{response_code} {response_msg}")


@pytest.fixture
def plugin(monkeypatch):
    # websockify is Debian's (system Python, on the image); a stand-in for its error type.
    mod = types.ModuleType("websockify.auth_plugins")
    mod.AuthenticationError = AuthenticationError
    monkeypatch.setitem(sys.modules, "websockify", types.ModuleType("websockify"))
    monkeypatch.setitem(sys.modules, "websockify.auth_plugins", mod)
    spec = importlib.util.spec_from_file_location("appliance_vnc_auth", PLUGIN)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


@pytest.fixture
def console(tmp_path):
    """A stand-in console on loopback HTTPS: 200 for sessionid=good, 403 otherwise."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "1", "-subj", "/CN=t", "-keyout", str(tmp_path / "k"), "-out", str(tmp_path / "c")],
                   check=True, capture_output=True)
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.path, self.headers.get("Cookie")))
            self.send_response(200 if "sessionid=good" in (self.headers.get("Cookie") or "") else 403)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "c", tmp_path / "k")
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"127.0.0.1:{srv.server_address[1]}", seen
    srv.shutdown()
    srv.server_close()


def test_a_logged_in_session_passes(plugin, console):
    src, seen = console
    plugin.ConsoleSession(src).authenticate({"Cookie": "csrftoken=x; sessionid=good"}, "127.0.0.1", 5901)
    assert seen == [("/api/status/", "csrftoken=x; sessionid=good")]


def test_the_https_consoles_host_prefixed_cookie_passes(plugin, console):
    """Over HTTPS (the image) the console's cookies are __Host-csrftoken and __Host-sessionid."""
    src, seen = console
    cookie = "__Host-csrftoken=x; __Host-sessionid=good"
    plugin.ConsoleSession(src).authenticate({"Cookie": cookie}, "127.0.0.1", 5901)
    assert seen == [("/api/status/", cookie)]


def test_a_stale_session_is_refused(plugin, console):
    src, _ = console
    with pytest.raises(AuthenticationError) as e:
        plugin.ConsoleSession(src).authenticate({"Cookie": "sessionid=old"}, "127.0.0.1", 5901)
    assert e.value.code == 403


def test_no_cookie_is_refused_without_asking(plugin, console):
    src, seen = console
    with pytest.raises(AuthenticationError):
        plugin.ConsoleSession(src).authenticate({}, "127.0.0.1", 5901)
    assert seen == []
