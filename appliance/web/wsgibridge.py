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

The environ is a2wsgi's (`build_environ`); each call runs in a copy of the
caller's contextvars, as a2wsgi did.
"""
from __future__ import annotations

import asyncio
import contextvars
import io
import tempfile
from concurrent.futures import ThreadPoolExecutor

from a2wsgi.wsgi import build_environ

SPOOL_BYTES = 1 << 20  # request bodies up to 1 MiB stay in memory


class ClientDisconnected(Exception):
    pass


class WSGIApp:
    """ASGI (http) -> a WSGI app, run in `threads` long-lived threads."""

    def __init__(self, app, threads: int = 4):
        self.app = app
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="wsgi")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"WSGIApp serves http, not {scope['type']}")
        try:
            body = await _read_body(receive)
        except ClientDisconnected:
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


async def _read_body(receive):
    """The request body as a file: in memory, or spooled to disk past SPOOL_BYTES."""
    first = await receive()
    if first["type"] == "http.disconnect":
        raise ClientDisconnected
    data, more = first.get("body", b""), first.get("more_body", False)
    if not more:
        return io.BytesIO(data)
    f = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    f.write(data)
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            f.close()
            raise ClientDisconnected
        f.write(message.get("body", b""))
        more = message.get("more_body", False)
    f.seek(0)
    return f
