"""The query log on disk: every answer, bounded by size, age and the partition's free space.

A sink of the query log (`QueryLog.sinks`): each settled batch (the last
0.05 s of answers, the workers' too) is appended to the newest segment file
as tab-separated lines, flushed at once. Segments are `queries-<µs>.log`
named by their first entry's time, so their names sort by age:

  dir/queries-0001780000000000000.log   oldest: removed first
  dir/queries-0001780003600000000.log
  dir/queries-0001780007200000000.log   written now; a new one after SEGMENT_SECONDS
                                        or max_bytes / SEGMENTS bytes

Bounds, enforced on every write: all segments together under `max_bytes`;
a segment whose last entry (its mtime) is older than `max_age` goes; and
the partition keeps `reserve()` free (5% of it, at least 64 MB): when a
batch would eat into that, the oldest segments go first, and if that is not
enough the batch is not written (counted in `unwritten`). So the log yields
to everything else on the data partition and never fills it.

The console reads the files directly (`search`), in its own process: a
search through a month of log never holds up the DNS server's answers.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, Iterator, NamedTuple

from .querylog import matches

log = logging.getLogger(__name__)

SEGMENTS = 16  # the oldest segment is at most 1/16 of the log: removing it loses little
SEGMENT_SECONDS = 3600
MIN_SEGMENT = 64 * 1024
RESERVE_SHARE = 0.05
RESERVE_MIN = 64 * 1024 * 1024
_PREFIX, _SUFFIX = "queries-", ".log"
_CLEAN = str.maketrans("\t\n\r", "   ")


class Room(NamedTuple):
    free: int
    total: int


def partition_room(path: str) -> Room:
    st = os.statvfs(path)
    return Room(st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)


def reserve(total: int) -> int:
    """What the log leaves free on a partition of `total` bytes."""
    return max(int(total * RESERVE_SHARE), RESERVE_MIN)


def line(e: tuple) -> str:
    """One LogEntry tuple (time, client, qname, qtype, action, rcode, cached, origin, mac)."""
    qname, origin = e[2], e[7]
    # Tabs and line ends are not printable: a printable name needs no translation (the usual).
    if not qname.isprintable():
        qname = qname.translate(_CLEAN)
    if not origin.isprintable():
        origin = origin.translate(_CLEAN)
    return f"{e[0]:.3f}\t{e[1]}\t{e[8]}\t{qname}\t{e[3]}\t{e[4]}\t{e[5]}\t{1 if e[6] else 0}\t{origin}\n"


def parse(text: str) -> tuple | None:
    """The LogEntry tuple of a line, None for a torn or foreign one."""
    f = text.split("\t")
    if len(f) != 9:
        return None
    try:
        return (float(f[0]), f[1], f[3], int(f[4]), f[5], int(f[6]), f[7] == "1", f[8], f[2])
    except ValueError:
        return None


def segments(directory: str) -> list[str]:
    """The segment files, oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(_PREFIX) and n.endswith(_SUFFIX))


class DiskLog:
    def __init__(self, directory: str, max_bytes: int, max_age: float,
                 clock: Callable[[], float] = time.time,
                 room: Callable[[str], Room] = partition_room):
        self.directory = directory
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._clock = clock
        self._room = room
        # The console (root) reads it; no other service of vproxy's group needs to.
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._sizes = {n: os.path.getsize(self._path(n)) for n in segments(directory)}
        self._file = None
        self._current: str | None = None
        self._started = 0.0
        self.unwritten = 0  # entries not written: no room on the partition, or a write failed
        self.last_error: str | None = None

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    @property
    def segment_bytes(self) -> int:
        return max(MIN_SEGMENT, self.max_bytes // SEGMENTS)

    def size(self) -> int:
        return sum(self._sizes.values())

    def write(self, batch: list[tuple]) -> None:
        if not batch:
            return
        data = "".join(map(line, batch)).encode("utf-8", "replace")
        now = self._clock()
        self._expire(now)
        try:
            if not self._make_room(len(data)):
                self._lost(len(batch), "the data partition is nearly full")
                return
            if (self._file is None or self._sizes.get(self._current, 0) + len(data) > self.segment_bytes
                    or now - self._started >= SEGMENT_SECONDS):
                self._rotate(batch[0][0])
            self._file.write(data)
            self._file.flush()
        except OSError as exc:
            self._close()
            self._lost(len(batch), str(exc))
            return
        self._sizes[self._current] += len(data)
        self.last_error = None
        self._bound(0)

    def _lost(self, entries: int, why: str) -> None:
        if self.last_error != why:
            log.error("query log on disk: %d entries not written: %s", entries, why)
        self.unwritten += entries
        self.last_error = why

    def _rotate(self, first: float) -> None:
        self._close()
        name = f"{_PREFIX}{int(first * 1e6):019d}{_SUFFIX}"
        while name in self._sizes:  # two segments begun in one microsecond
            first += 1e-6
            name = f"{_PREFIX}{int(first * 1e6):019d}{_SUFFIX}"
        self._file = open(self._path(name), "ab")
        os.chmod(self._path(name), 0o600)
        self._current = name
        self._started = self._clock()
        self._sizes[name] = 0

    def _close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
        self._file = None
        self._current = None

    def _remove(self, name: str) -> None:
        if name == self._current:
            self._close()
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass
        self._sizes.pop(name, None)

    def _bound(self, extra: int) -> None:
        """Oldest first until the log and `extra` bytes fit in `max_bytes`."""
        for name in sorted(self._sizes):
            if self.size() + extra <= self.max_bytes:
                return
            self._remove(name)

    def _make_room(self, needed: int) -> bool:
        """Whether `needed` bytes fit, both in the log's bound and on the partition (oldest go)."""
        self._bound(needed)
        for name in [None, *sorted(self._sizes)]:
            if name is not None:
                self._remove(name)
            room = self._room(self.directory)
            if room.free - needed >= reserve(room.total):
                return True
        return False

    def _expire(self, now: float) -> None:
        horizon = now - self.max_age
        for name in sorted(self._sizes):
            try:
                if os.path.getmtime(self._path(name)) >= horizon:
                    return
            except FileNotFoundError:
                pass
            self._remove(name)

    def close(self) -> None:
        self._close()


def search(directory: str, client: str | None = None, mac: str | None = None,
           domain: str | None = None, action: str | None = None, since: float | None = None,
           until: float | None = None, limit: int = 100) -> list[tuple]:
    """LogEntry tuples, newest first, from the segments in `directory`: `domain` a part of
    the name, the others exact; `until`: entries before it only."""
    domain = domain.lower().rstrip(".") if domain else None
    mac = mac.lower() if mac else None
    out: list[tuple] = []
    for entry in _newest_first(directory, since, (client, mac, domain, action)):
        if since is not None and entry[0] < since:
            break
        if until is not None and entry[0] >= until:
            continue
        if matches(entry, client, mac, domain, action):
            out.append(entry)
            if len(out) >= limit:
                break
    return out


def _newest_first(directory: str, since: float | None, needles) -> Iterator[tuple]:
    for name in reversed(segments(directory)):
        path = os.path.join(directory, name)
        try:
            if since is not None and os.path.getmtime(path) < since:
                return  # this one and every older one ended before `since`
            with open(path, "rb") as fh:
                text = fh.read().decode("utf-8", "replace")
        except FileNotFoundError:
            continue  # removed by the server meanwhile
        # A segment without the text asked for has no entry for it: skip it whole.
        if any(n and n not in text for n in needles):
            continue
        for raw in reversed(text.split("\n")):
            entry = parse(raw)
            if entry is not None:
                yield entry
