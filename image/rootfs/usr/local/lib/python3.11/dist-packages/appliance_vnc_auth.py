"""websockify auth plugin: noVNC only for someone logged in to the console.

websockify (Debian's, system Python) calls `authenticate` for every page and
websocket (`--web-auth`). The browser sends the console's session cookie
(cookies are per host, not per port), and the console itself says whether it
belongs to a logged-in user: its API answers 200 to a session and 403
otherwise. No second password, no copy of the console's session logic.
"""
import http.client
import ssl

from websockify.auth_plugins import AuthenticationError

CHECK_PATH = "/api/status/"


class ConsoleSession:
    def __init__(self, src=None):
        # src: "HOST:PORT" of the console (default 127.0.0.1:443).
        host, _, port = (src or "127.0.0.1:443").rpartition(":")
        self.host, self.port = host or "127.0.0.1", int(port)

    def authenticate(self, headers, target_host, target_port):
        cookie = headers.get("Cookie", "")
        if "sessionid=" not in cookie:
            raise AuthenticationError(response_code=403, response_msg="log in to the console first")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # loopback to the box's own self-signed console
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=5, context=ctx)
        try:
            conn.request("GET", CHECK_PATH, headers={"Cookie": cookie, "Host": "127.0.0.1"})
            status = conn.getresponse().status
        except OSError as e:
            raise AuthenticationError(response_code=503, response_msg=f"console unreachable: {e}")
        finally:
            conn.close()
        if status != 200:
            raise AuthenticationError(response_code=403, response_msg="log in to the console first")
