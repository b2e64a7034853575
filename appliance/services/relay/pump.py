"""One direction of a relayed TCP connection: source socket -> destination.

With `splice` the bytes go socket -> pipe -> socket inside the kernel and
are never copied into Python; without it they are copied through one
buffer. Either way the pump is driven by the event loop's readiness
callbacks, not by a coroutine per direction (cheaper per byte and per idle
connection), and keeps to three rules:

- backpressure: while the destination cannot take more, the source is not
  read (its reader is removed), so TCP flow control reaches the sender;
- half-close: end of stream from the source is passed on as
  ``shutdown(SHUT_WR)`` on the destination once everything before it is
  written; the other direction keeps running;
- errors (reset, broken pipe) end the pump with the error; the connection
  decides what to do with the other direction.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
from typing import Callable

SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
ROUNDS = 8  # read/write rounds per wake-up before yielding to other connections


def make_pipe(size: int) -> tuple[int, int]:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, size)
    except OSError:
        pass  # over /proc/sys/fs/pipe-max-size: the default size still works
    return r, w


class Pump:
    """Moves bytes from `src` to `dst`; calls `done(pump, error)` once at the end."""

    __slots__ = ("loop", "src", "dst", "src_fd", "dst_fd", "done", "touch", "bytes",
                 "_splice", "_pipe", "_buf", "_view", "_pending", "_start", "_cap",
                 "_reading", "_writing", "_eof", "finished")

    def __init__(self, loop: asyncio.AbstractEventLoop, src: socket.socket, dst: socket.socket,
                 done: Callable[["Pump", OSError | None], None], touch: Callable[[], None],
                 pipe_size: int, use_splice: bool):
        self.loop, self.src, self.dst = loop, src, dst
        self.src_fd, self.dst_fd = src.fileno(), dst.fileno()
        self.done, self.touch = done, touch
        self.bytes = 0
        self._splice = use_splice
        self._cap = pipe_size
        self._pipe: tuple[int, int] | None = None
        self._buf = self._view = None
        self._pending = 0  # bytes read from src, not yet written to dst
        self._start = 0  # copy mode: offset of the pending bytes in the buffer
        self._reading = self._writing = False
        self._eof = False
        self.finished = False

    def start(self) -> None:
        self._set_reading(True)

    # -- registration -------------------------------------------------------
    def _set_reading(self, on: bool) -> None:
        if on and not self._reading:
            self.loop.add_reader(self.src_fd, self._on_readable)
        elif not on and self._reading:
            self.loop.remove_reader(self.src_fd)
        self._reading = on

    def _set_writing(self, on: bool) -> None:
        if on and not self._writing:
            self.loop.add_writer(self.dst_fd, self._on_writable)
        elif not on and self._writing:
            self.loop.remove_writer(self.dst_fd)
        self._writing = on

    # -- the two halves -----------------------------------------------------
    def _fill(self) -> int:
        """Read what src has into the pipe/buffer: >0 bytes, 0 nothing now, -1 end of stream."""
        if self._splice:
            if self._pipe is None:
                self._pipe = make_pipe(self._cap)
            n = os.splice(self.src_fd, self._pipe[1], self._cap, flags=SPLICE_FLAGS)
        else:
            if self._buf is None:
                self._buf = bytearray(self._cap)
                self._view = memoryview(self._buf)
            self._start = 0
            n = self.src.recv_into(self._view, self._cap)
        if n == 0:
            return -1
        self._pending += n
        return n

    def _drain(self) -> bool:
        """Write pending bytes to dst; False when dst is full (EAGAIN) with bytes left."""
        while self._pending:
            try:
                if self._splice:
                    n = os.splice(self._pipe[0], self.dst_fd, self._pending, flags=SPLICE_FLAGS)
                else:
                    n = self.dst.send(self._view[self._start:self._start + self._pending])
                    self._start += n
            except BlockingIOError:
                return False
            self._pending -= n
            self.bytes += n
        return True

    def _step(self) -> None:
        try:
            for _ in range(ROUNDS):
                n = 1  # bytes already pending count as progress
                if not self._pending and not self._eof:
                    try:
                        n = self._fill()
                    except BlockingIOError:
                        n = 0
                    if n < 0:
                        self._eof = True
                if self._pending and not self._drain():
                    # dst is full: stop reading src until it drains (backpressure)
                    self._set_reading(False)
                    self._set_writing(True)
                    self.touch()
                    return
                if self._eof or n == 0:
                    break
        except OSError as exc:
            self._finish(exc)
            return
        self.touch()
        self._set_writing(False)
        if self._eof:
            self._set_reading(False)
            try:
                self.dst.shutdown(socket.SHUT_WR)
            except OSError as exc:
                if exc.errno != errno.ENOTCONN:
                    self._finish(exc)
                    return
            self._finish(None)
        else:
            self._set_reading(True)

    def _on_readable(self) -> None:
        self._step()

    def _on_writable(self) -> None:
        self._step()

    # -- end ----------------------------------------------------------------
    def _finish(self, error: OSError | None) -> None:
        if self.finished:
            return
        self.finished = True
        self.stop()
        self.done(self, error)

    def stop(self) -> None:
        """Unregister and free the pipe; the sockets belong to the connection."""
        self._set_reading(False)
        self._set_writing(False)
        if self._pipe is not None:
            os.close(self._pipe[0])
            os.close(self._pipe[1])
            self._pipe = None
        self._buf = self._view = None
