"""Serve the console: uvicorn, one worker process per core, HTTP and the websocket on one socket.

    python -m appliance.web.serve --bind 127.0.0.1:8000 [--workers N] [--certfile F --keyfile F]

Why not one daphne: Django runs a request's sync code in one thread per
process, so one process is one core; under 50 browsers' worth of load the
requests queued behind each other (p95 0.7-1.4 s for 5-20 ms of work each).
uvicorn's supervisor binds the socket once and its workers accept from it,
so every core serves. Channels is plain ASGI and its groups live in Redis,
so a page's websocket may land on any worker and still gets every apply
event. asyncio also sets TCP_NODELAY on every connection; daphne (Twisted)
does not, and its header and body writes on a keep-alive connection waited
for the client's delayed ACK (the 40 ms-per-request stall the bench showed
with keep-alive but not with "Connection: close").
"""
from __future__ import annotations

import argparse
import os


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bind", default="127.0.0.1:8000", help="host:port")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--certfile", help="TLS certificate (PEM); with --keyfile, serve HTTPS")
    ap.add_argument("--keyfile")
    ap.add_argument("--proxy-headers", action="store_true", help="trust X-Forwarded-* from 127.0.0.1")
    a = ap.parse_args(argv)
    host, _, port = a.bind.rpartition(":")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "appliance.web.settings")
    import uvicorn

    uvicorn.run("appliance.web.asgi:application", host=host.strip("[]") or "127.0.0.1", port=int(port),
                workers=max(1, a.workers), loop="uvloop", http="httptools", ws="websockets-sansio",
                lifespan="off",  # Django has no lifespan handler; "auto" only logs that
                access_log=False, proxy_headers=a.proxy_headers, forwarded_allow_ips="127.0.0.1",
                ssl_certfile=a.certfile, ssl_keyfile=a.keyfile, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
