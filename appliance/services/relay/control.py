"""The relay's local query socket: the console process asks, the relay answers JSON.

A unix stream socket (mode 0660); a client sends one line, a query name or
a JSON object ``{"query": "history", "limit": 100}``, and reads one JSON
document back. Queries: ``connections``, ``history``, ``counters``,
``stats``. `query()` is the client side.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket

QUERIES = ("connections", "history", "counters", "stats")


class ControlServer:
    def __init__(self, relay, path: str):
        self.relay, self.path = relay, path
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.server = await asyncio.start_unix_server(self._handle, self.path)
        os.chmod(self.path, 0o660)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def answer(self, line: bytes) -> dict | list:
        text = line.decode(errors="replace").strip()
        try:
            request = json.loads(text) if text.startswith("{") else {"query": text}
        except json.JSONDecodeError as exc:
            return {"error": f"request: not JSON: {exc}"}
        what = request.get("query")
        if what == "connections":
            return self.relay.connections()
        if what == "history":
            limit = request.get("limit")
            return self.relay.history(limit if isinstance(limit, int) and limit > 0 else None)
        if what == "counters":
            return self.relay.counters()
        if what == "stats":
            return self.relay.stats()
        return {"error": f"query: unknown {what!r}; one of {', '.join(QUERIES)}"}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            writer.write(json.dumps(self.answer(line)).encode() + b"\n")
            await writer.drain()
        except (asyncio.TimeoutError, OSError):
            pass
        finally:
            writer.close()


def query(path: str, what: str = "stats", timeout: float = 5.0, **params) -> dict | list:
    """Ask a running relay (blocking; for the console and tests)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps({"query": what, **params}).encode() + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return json.loads(b"".join(chunks))
