"""The fake-IP store's writer: a process of its own that commits the pool's batches.

`FakeIpPool` hands each write-behind batch (deletes, upserts, retirements)
to `StoreWriter.write`, which sends it to this module's process and waits
until it is committed. The process applies the batch in one transaction
(`transaction`) and answers with nothing, or with SQLite's error.

Why a process and not a thread of the DNS server: the thread's SQLite work
was not the cost, its place was. New fake-IP names through the box in the
lab (dnsperf at saturation, 64 queries in flight, the same SQLite work in
both; 3 alternating pairs of runs, 2 rounds each):

- writer thread: 11.5-17.3k q/s (mean 14.7k), the thread at 12-20% of a core;
- writer process: 15.7-18.5k q/s (mean 17.3k), the process at 15% of a core,
  the server's dispatch thread at 1%.

With no store at all the server gave 14.2-17.7k against 13.7-15.4k. The
likely mechanism is the GIL: every call of the event loop that gives it
up (each send and receive, RE2's match) let the writer thread in, and the
loop then waited for the thread to give it back, a thread wake-up each
time. A process shares no GIL; what is left in the server is one blocking
exchange a batch, in the pool's dispatch thread, which holds the GIL only
to pickle the batch.

The process is started at the first batch and again at the next batch
after it ended (killed, crashed): a batch it did not answer is reported
as not written, and the pool writes those addresses again with the next
one (their state then, which is the state that counts). A batch the
process committed but could not answer is written again the same way:
every statement of a batch is idempotent. It exits when its socket ends
(the DNS server closed the store, or is gone).
"""

from __future__ import annotations

import argparse
import logging
import pickle
import signal
import socket
import sqlite3
import struct
import sys
import time

from appliance.kernel.base import KernelError
from appliance.kernel.process import end_helper, start_helper

log = logging.getLogger(__name__)

_LENGTH = struct.Struct(">I")
CHUNK = 200  # rows per SQL statement
# The table and its domain index (about 7 MB at 65,536 names) stay in SQLite's cache, so a batch
# does not read back the pages it changes (with the default 2 MB: 26% of a core, then 20% with
# checkpoints every 8,000 WAL pages instead of 1,000: a page changed by many batches is copied
# into the database once). The WAL file then grows to about 32 MB, and is cut back to that.
CACHE_KIB = 16 << 10
CHECKPOINT_PAGES = 8000
WAL_LIMIT = 32 << 20
# Seconds a batch waits for a lock. Nothing else writes the file (the DNS server's own
# connection only while it opens and closes the store); a batch that fails is written again
# with the next.
BUSY_TIMEOUT = 1.0
EXIT_WAIT = 5.0  # seconds the process has to finish its batch and exit after its socket ends
RESTART_PAUSE = 1.0  # seconds before a process that ended is started again (its batches fail)


class StoreWriteError(sqlite3.Error):
    """A batch that was not committed: SQLite's error, or the writer process's end."""


def open_for_writing(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    db.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
    db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
    return db


def transaction(db: sqlite3.Connection, deletes: list[int], upserts: list[tuple],
                retired: list[tuple] = (), expired_before: float | None = None) -> None:
    """One batch in one transaction: the table then matches one moment of the pool."""
    try:
        db.execute("BEGIN IMMEDIATE")
        for i in range(0, len(deletes), CHUNK):
            part = deletes[i:i + CHUNK]
            db.execute(f"DELETE FROM fakeip WHERE ip IN ({','.join('?' * len(part))})", part)
        for i in range(0, len(upserts), CHUNK):
            part = upserts[i:i + CHUNK]
            # REPLACE also drops a stale row that still holds the domain at its old
            # address (that address is in the same batch, deleted or reassigned).
            db.execute("INSERT OR REPLACE INTO fakeip (ip, domain, route, created, last_used) VALUES "
                       + ",".join(["(?,?,?,?,?)"] * len(part)),
                       [value for row in part for value in row])
        # In the same transaction as the deletes: a flush is on disk whole
        # (forgotten and kept from other names) or not at all (still mapped).
        if retired:
            db.executemany("INSERT OR REPLACE INTO retired (ip, domain, until) VALUES (?, ?, ?)", retired)
        if expired_before is not None:
            db.execute("DELETE FROM retired WHERE until < ?", (expired_before,))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _send(sock: socket.socket, message) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_LENGTH.pack(len(data)) + data)


def _receive(sock: socket.socket):
    head = _exactly(sock, 4)
    return pickle.loads(_exactly(sock, _LENGTH.unpack(head)[0]))


def _exactly(sock: socket.socket, size: int) -> bytes:
    parts, left = [], size
    while left:
        part = sock.recv(min(left, 1 << 20))
        if not part:
            raise EOFError("the other side closed the socket")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


class StoreWriter:
    """The DNS server's side. `write` is called from one thread at a time (the pool's dispatch)."""

    def __init__(self, path: str):
        self.path = path
        self._sock: socket.socket | None = None
        self.proc = None  # the process's Popen, while it runs
        self._not_before = 0.0  # monotonic time of the next start allowed

    def _start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = start_helper([sys.executable, "-m", __name__, "--fd", str(child.fileno()),
                                      self.path], pass_fds=(child.fileno(),))
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self._sock = parent

    def write(self, deletes: list[int], upserts: list[tuple], retired: list[tuple] = (),
              expired_before: float | None = None) -> None:
        """Commit one batch; raises StoreWriteError when it was not (or may not have been)."""
        if self._sock is None:
            if time.monotonic() < self._not_before:
                raise StoreWriteError("the store's writer process ended; started again within "
                                      f"{RESTART_PAUSE:g} s")
            try:
                self._start()
            except KernelError as exc:
                raise StoreWriteError(f"the store's writer process did not start: {exc}") from exc
        try:
            _send(self._sock, (deletes, upserts, list(retired), expired_before))
            error = _receive(self._sock)
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            self._end(kill=True)
            self._not_before = time.monotonic() + RESTART_PAUSE
            raise StoreWriteError(f"the store's writer process ended: {exc}") from exc
        if error is not None:
            raise StoreWriteError(error)

    def _end(self, kill: bool) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if not end_helper(proc, EXIT_WAIT, kill=kill):
            log.error("fake-IP store's writer process %d did not exit; killed", proc.pid)

    def close(self) -> None:
        """Let the process finish and exit (its socket ends)."""
        self._end(kill=False)


def serve(sock: socket.socket, path: str) -> int:
    db = None  # opened at the first batch, and again at the next one after it failed to open
    try:
        while True:
            try:
                batch = _receive(sock)
            except (EOFError, ConnectionError):
                return 0
            try:
                if db is None:
                    db = open_for_writing(path)
                transaction(db, *batch)
                error = None
            except sqlite3.Error as exc:
                error = str(exc)
            _send(sock, error)
    finally:
        if db is not None:
            db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True, help="the stream socket to the DNS server")
    parser.add_argument("path", help="the SQLite file")
    args = parser.parse_args(argv)
    # The DNS server ends it (its socket). A stop signals the server's whole process group: the
    # server then closes the store, and its last batch needs this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    return serve(socket.socket(fileno=args.fd), args.path)


if __name__ == "__main__":
    sys.exit(main())
