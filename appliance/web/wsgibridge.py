"""The console's sync views under the ASGI server: a WSGI app in a pool of long-lived threads, one hop each way.

a2wsgi (used before) ran the app in a thread too, but handed every piece of
the response back to the event loop while the thread waited: the status and
headers, the body, then an empty last body, each a `run_coroutine_threadsafe`
round trip (and each read of the request body another). Under load every
round trip waited for the event loop to get the GIL from the other request
threads, so a page of ~1 ms held its thread several times as long. Here the
request body is read on the loop before the app runs (spooled to a temporary
file past `SPOOL_BYTES`), the app runs in the thread from start to finish,
and an ordinary (non-streaming) response comes back to the loop in one piece:
one hop into the thread, one back. A streaming response (a download, a
`StreamingHttpResponse`) is sent chunk by chunk as it is produced, as before.

The request body is capped (`max_body`, the setting APPLIANCE_MAX_BODY_BYTES)
before a byte of it is read: a Content-Length over the cap is answered 413 at
once (a client that sent `Expect: 100-continue`, as curl does for large
bodies, never sends the body), and a chunked body is counted as it comes and
refused the moment it passes the cap. The connection is then closed, so the
rest is never read. What is under the cap stays in memory: nothing a client
sends before it has logged in is written to disk (a temporary file per
upload let any host on the LAN fill /tmp).

The environ is a2wsgi's (`build_environ`); each call runs in a copy of the
caller's contextvars, as a2wsgi did.
"""
from __future__ import annotations

import asyncio
import contextvars
import io
from concurrent.futures import ThreadPoolExecutor

from a2wsgi.wsgi import build_environ

MAX_BODY_BYTES = 2 << 20  # the default cap of a request body


class ClientDisconnected(Exception):
    pass


class BodyTooLarge(Exception):
    pass


class WSGIApp:
    """ASGI (http) -> a WSGI app, run in `threads` long-lived threads."""

    def __init__(self, app, threads: int = 4, max_body: int = MAX_BODY_BYTES):
        self.app = app
        self.max_body = max_body
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="wsgi")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"WSGIApp serves http, not {scope['type']}")
        try:
            body = await _read_body(scope, receive, self.max_body)
        except ClientDisconnected:
            return
        except BodyTooLarge:
            await _refuse(send, 413, f"request body over the limit of {self.max_body} bytes\n")
            return
        except ValueError as e:
            await _refuse(send, 400, f"{e}\n")
            return
        environ = build_environ(scope, body)
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        try:
            response = await loop.run_in_executor(self.executor, ctx.run, self._run, environ, loop, send)
        finally:
            body.close()
        if response is not None:  # buffered: the whole response in one piece
            status, headers, content = response
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": content})

    def _run(self, environ, loop, send):
        """In a pool thread: the app from start to finish. (status, headers, body), or None when streamed."""
        head: list = []
        sent = False
        written: list[bytes] = []

        def start_response(status, response_headers, exc_info=None):
            if exc_info is not None and sent:
                raise exc_info[1].with_traceback(exc_info[2])
            head[:] = [int(status.split(" ", 1)[0]),
                       [(k.strip().lower().encode("latin1"), v.strip().encode("latin1")) for k, v in response_headers]]
            return written.append  # the legacy write(): buffered, sent before the iterable's chunks

        def send_now(message):
            asyncio.run_coroutine_threadsafe(send(message), loop).result()

        iterable = self.app(environ, start_response)
        try:
            if isinstance(iterable, (list, tuple)) or getattr(iterable, "streaming", None) is False:
                content = b"".join([*written, *iterable])  # a Django HttpResponse: its content, one chunk
                return head[0], head[1], content
            for chunk in iterable:  # streamed: headers with the first chunk, then each chunk as it comes
                if not sent:
                    send_now({"type": "http.response.start", "status": head[0], "headers": head[1]})
                    sent = True
                    if written:
                        send_now({"type": "http.response.body", "body": b"".join(written), "more_body": True})
                if chunk:
                    send_now({"type": "http.response.body", "body": chunk, "more_body": True})
            if not sent:
                send_now({"type": "http.response.start", "status": head[0], "headers": head[1]})
                if written:
                    send_now({"type": "http.response.body", "body": b"".join(written), "more_body": True})
            send_now({"type": "http.response.body", "body": b""})
            return None
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()


async def _refuse(send, status: int, text: str) -> None:
    """Answer without reading the body, and close: what the client still sends is never read."""
    body = text.encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                n = int(value)
            except ValueError:
                n = -1
            if n < 0:
                raise ValueError(f"bad Content-Length {value[:20]!r}")
            return n
    return None


async def _read_body(scope, receive, limit: int):
    """The request body, in memory; BodyTooLarge past `limit` (before reading, when its length is declared)."""
    declared = _content_length(scope)
    if declared is not None and declared > limit:
        raise BodyTooLarge
    f = io.BytesIO()
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        f.write(chunk)
        more = message.get("more_body", False)
    f.seek(0)
    return f
