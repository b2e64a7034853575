"""Serve the console: uvicorn, one worker process per core, HTTP and the websocket on one socket.

    python -m appliance.web.serve --bind 127.0.0.1:8000 [--workers N] [--certfile F --keyfile F]

Why not one daphne: Django runs a request's sync code in one thread per
process, so one process is one core; under 50 browsers' worth of load the
requests queued behind each other (p95 0.7-1.4 s for 5-20 ms of work each).
Every worker opens its own listening socket on the address with
SO_REUSEPORT, and the kernel spreads new connections evenly over them (by
a hash of the client's address and port). With uvicorn's one shared socket
every worker raced to accept, and a keep-alive connection stays with the
worker that won it: 50 browsers split 20/30 or worse, and the busier
worker's queue set the p95. A worker that dies takes its socket with it, so
no connection waits on a socket nobody accepts from; its replacement (the
supervisor restarts it) binds a new one. Channels is plain ASGI and its groups live in Redis,
so a page's websocket may land on any worker and still gets every apply
event. asyncio also sets TCP_NODELAY on every connection; daphne (Twisted)
does not, and its header and body writes on a keep-alive connection waited
for the client's delayed ACK (the 40 ms-per-request stall the bench showed
with keep-alive but not with "Connection: close").
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import multiprocess


WS_MAX_BYTES = 64 << 10


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bind", default="127.0.0.1:8000",
                    help="host:port, or several separated by commas (the image: loopback and the admin address)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--certfile", help="TLS certificate (PEM); with --keyfile, serve HTTPS")
    ap.add_argument("--keyfile")
    ap.add_argument("--proxy-headers", action="store_true", help="trust X-Forwarded-* from 127.0.0.1")
    a = ap.parse_args(argv)
    binds = [_host_port(b) for b in a.bind.split(",") if b.strip()]
    host, port = binds[0]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "appliance.web.settings")
    # Over HTTPS the cookies are Secure with the __Host- prefix (settings.HTTPS); the workers inherit it.
    os.environ["APPLIANCE_HTTPS"] = "1" if a.certfile else ""
    import uvicorn

    config = uvicorn.Config("appliance.web.asgi:application", host=host, port=port,
                            workers=max(1, a.workers), loop="uvloop", http="httptools", ws="websockets-sansio",
                            lifespan="off",  # Django has no lifespan handler; "auto" only logs that
                            # The console's socket carries small JSON messages; uvicorn's default is 16 MiB.
                            ws_max_size=WS_MAX_BYTES, access_log=False, proxy_headers=a.proxy_headers, forwarded_allow_ips="127.0.0.1",
                            ssl_certfile=a.certfile, ssl_keyfile=a.keyfile, log_level="info")
    config.binds = binds  # every worker listens on each
    if config.workers == 1:
        config.load_app()
        server = uvicorn.Server(config)
        server.run(sockets=[reuseport_socket(h, p) for h, p in binds] if len(binds) > 1 else None)
        return 0 if server.started else 1
    # The supervisor (restarts, SIGHUP/TTIN/TTOU, shutdown) is uvicorn's; only its workers differ:
    # each binds its own socket instead of inheriting the one the supervisor bound.
    multiprocess.Process = ReusePortWorker
    logging.getLogger("uvicorn.error").info("Uvicorn running on %s://%s:%d, %d workers, a socket each (SO_REUSEPORT)",
                                            "https" if config.is_ssl else "http", config.host, config.port,
                                            config.workers)
    try:
        multiprocess.Multiprocess(config, sockets=[]).run()
    except KeyboardInterrupt:
        pass
    return 0


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port with SO_REUSEPORT (the worker's server listens on it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class ReusePortWorker(multiprocess.Process):
    """uvicorn's worker process, listening on a socket of its own (see the module docstring)."""

    def target(self, sockets=None):  # runs in the worker process
        socks = []
        for host, port in getattr(self.config, "binds", [(self.config.host, self.config.port)]):
            try:
                socks.append(reuseport_socket(host, port))
            except OSError as exc:
                logging.getLogger("uvicorn.error").error("%s:%d: %s", host, port, exc)
                sys.exit(STARTUP_FAILURE)  # the supervisor stops rather than restarting it in a loop
        super().target(socks)


if __name__ == "__main__":
    raise SystemExit(main())
