"""The DNS service's control socket, and the client the console and relay use.

A Unix stream socket (a filesystem path, so it crosses network namespaces:
the console in the host namespace reaches the server in netns vproxy). One
JSON object a line each way: ``{"op": "stats", "args": {...}}`` ->
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``.

Pins are owned by the connection that made them: when the relay's
connection closes (the relay exits or crashes), its pins are released, so a
dead relay can never keep addresses from being recycled forever.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections import Counter
from typing import Any

OPS = {"stats", "query_log", "query_log_oldest", "fake_ip_table", "flush_fake_ips", "lookup_fake_ip", "pin", "unpin",
       "lists", "upstreams", "local_names", "relay"}


async def serve_control(service, path: str) -> asyncio.AbstractServer:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pins: Counter[str] = Counter()
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                    op = request.get("op")
                    args = request.get("args") or {}
                    if op not in OPS or not isinstance(args, dict):
                        raise ValueError(f"unknown op {op!r}")
                    result = getattr(service, op)(**args)
                    if op == "pin" and result:
                        pins[args["ip"]] += 1
                    elif op == "unpin" and pins[args["ip"]] > 0:
                        pins[args["ip"]] -= 1
                    reply = {"ok": True, "result": result}
                except (ValueError, TypeError, KeyError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            for ip, count in pins.items():
                for _ in range(count):
                    service.unpin(ip)
            writer.close()

    server = await asyncio.start_unix_server(client, path)
    os.chmod(path, 0o660)
    return server


class DnsControl:
    """Blocking client of the control socket, with the service's method names."""

    def __init__(self, path: str = "/run/appliance/dns.sock", timeout: float = 5.0):
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._sock.connect(path)
        self._file = self._sock.makefile("rwb")

    def call(self, op: str, **args: Any) -> Any:
        self._file.write(json.dumps({"op": op, "args": args}).encode() + b"\n")
        self._file.flush()
        line = self._file.readline()
        if not line:
            raise ConnectionError("the DNS service closed the control socket")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise ValueError(reply.get("error"))
        return reply["result"]

    def stats(self, top: int = 10) -> dict:
        return self.call("stats", top=top)

    def query_log(self, **filters: Any) -> list[dict]:
        return self.call("query_log", **filters)

    def query_log_oldest(self) -> float | None:
        return self.call("query_log_oldest")

    def fake_ip_table(self, limit: int | None = 1000) -> list[dict]:
        return self.call("fake_ip_table", limit=limit)

    def flush_fake_ips(self) -> dict:
        """Forget every unpinned fake-IP mapping: {"removed": n, "kept": pinned}."""
        return self.call("flush_fake_ips")

    def lookup_fake_ip(self, ip: str) -> dict | None:
        return self.call("lookup_fake_ip", ip=ip)

    def pin(self, ip: str) -> bool:
        return self.call("pin", ip=ip)

    def unpin(self, ip: str) -> None:
        self.call("unpin", ip=ip)

    def lists(self) -> list[dict]:
        return self.call("lists")

    def upstreams(self) -> list[dict]:
        return self.call("upstreams")

    def local_names(self) -> list[dict]:
        return self.call("local_names")

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> "DnsControl":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
