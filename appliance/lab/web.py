"""The internet namespace's web server: one page per test site.

The page names the site it was asked for, so a test can tell which site
(and which path through the network) answered. `/bytes/N` streams N
pseudo-random bytes (for download tests); `/whoami` answers the address the
connection came from (behind the modem's NAT: the modem's WAN address);
`/health` answers "ok". With `--udp-echo PORT ADDRESS...`, UDP datagrams
to that port of those addresses come back with an ``echo:`` prefix (QUIC
and games to the test sites, over IPv4 and IPv6), from the address they
were sent to: a socket per address, since a wildcard socket answers from
the address routing picks, which the modem's NAT would not match.
"""
from __future__ import annotations

import argparse
import hashlib
import selectors
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = hashlib.sha256(b"lab").digest() * 2048  # 64 KiB, the same in every run


def page(host: str) -> bytes:
    return f"<html><body><h1>internet page for {host}</h1></body></html>\n".encode()


class Handler(BaseHTTPRequestHandler):
    server_version = "labweb/1"
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - the http.server interface
        host = (self.headers.get("Host") or "").split(":")[0] or self.server.server_address[0]
        if self.path == "/health":
            return self._send(b"ok\n", "text/plain")
        if self.path == "/whoami":
            peer = self.client_address[0].removeprefix("::ffff:")  # IPv4 on the dual-stack socket
            return self._send(f"{peer}\n".encode(), "text/plain")
        if self.path.startswith("/bytes/"):
            try:
                n = int(self.path.split("/")[2])
            except ValueError:
                return self.send_error(400, "size must be a number")
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            while n > 0:
                part = CHUNK[: min(n, len(CHUNK))]
                self.wfile.write(part)
                n -= len(part)
            return None
        return self._send(page(host), "text/html")

    def _send(self, body: bytes, ctype: str):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--bind", default=None, help="default: IPv4 and IPv6 where the namespace has IPv6")
    ap.add_argument("--udp-echo", nargs="+", default=None, metavar="PORT ADDRESS")
    args = ap.parse_args(argv)
    server = server_for(args.bind, args.port)
    if args.udp_echo:
        port, *addresses = args.udp_echo
        threading.Thread(target=udp_echo, args=(int(port), addresses), daemon=True).start()
    server.serve_forever()


def udp_echo(port: int, addresses: list[str]) -> None:
    sel = selectors.DefaultSelector()
    for address in addresses:
        sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((address, port))
        sel.register(sock, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            data, peer = key.fileobj.recvfrom(65535)
            key.fileobj.sendto(b"echo:" + data, peer)


class _DualStackServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def server_for(bind: str | None, port: int) -> ThreadingHTTPServer:
    if bind is None:
        try:
            return _DualStackServer(("::", port), Handler)
        except OSError:  # IPv6 off in this namespace (the relay's lab)
            bind = "0.0.0.0"
    ThreadingHTTPServer.daemon_threads = True
    return ThreadingHTTPServer((bind, port), Handler)


if __name__ == "__main__":
    main()
