"""Bounded time series a box service keeps for the console's charts.

Each writer (the DNS server, the devices service) owns one SQLite file under
`STATE/series/`; the console only reads. A sample is a count over an interval
(queries answered, bytes a device sent): `add` folds it into its minute bucket
and its hour bucket at once, so a chart over a month never scans minutes.
`prune` keeps what the console shows and no more: minutes for a day, hours
for a month (`KEEP`), whatever the number of series, so the file is bounded by
(series x 1440 + series x 720) rows.

SQLite rather than a ring file: a power cut leaves the last committed
minute, not a torn file, and the UPSERT makes two adds to one bucket one row.
"""
from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Mapping

MINUTE = 60
HOUR = 3600
KEEP = {MINUTE: 24 * HOUR, HOUR: 31 * 24 * HOUR}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    series TEXT NOT NULL,
    step INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (series, step, ts)
) WITHOUT ROWID;
"""


class Series:
    """One writer's store; open it with the path the box's layout names."""

    def __init__(self, path: str, *, readonly: bool = False):
        self.path = path
        if readonly:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        else:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            self._db = sqlite3.connect(path)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            os.chmod(path, 0o644)

    def close(self) -> None:
        self._db.close()

    def add(self, values: Mapping[str, float], now: float | None = None) -> None:
        """Count `values` (series -> amount) into the buckets holding `now`."""
        t = int(time.time() if now is None else now)
        rows = [(name, step, t - t % step, float(v))
                for name, v in values.items() if v for step in KEEP]
        with self._db:
            self._db.executemany(
                "INSERT INTO samples (series, step, ts, value) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (series, step, ts) DO UPDATE SET value = value + excluded.value",
                rows)

    def prune(self, now: float | None = None) -> int:
        """Drop buckets older than `KEEP`; returns how many went."""
        t = int(time.time() if now is None else now)
        gone = 0
        with self._db:
            for step, keep in KEEP.items():
                gone += self._db.execute(
                    "DELETE FROM samples WHERE step = ? AND ts < ?", (step, t - keep)).rowcount
        return gone

    def read(self, series: str, step: int, since: float) -> list[tuple[int, float]]:
        """[(bucket start, value)] of one series from `since`, oldest first; empty buckets left out."""
        if step not in KEEP:
            raise ValueError(f"step must be one of {sorted(KEEP)}, not {step}")
        return self._db.execute(
            "SELECT ts, value FROM samples WHERE series = ? AND step = ? AND ts >= ? ORDER BY ts",
            (series, step, int(since))).fetchall()

    def totals(self, prefix: str, step: int, since: float) -> dict[str, float]:
        """{series: its sum from `since`} of every series under `prefix` (a chart's top N)."""
        if step not in KEEP:
            raise ValueError(f"step must be one of {sorted(KEEP)}, not {step}")
        return dict(self._db.execute(
            "SELECT series, SUM(value) FROM samples WHERE series >= ? AND series < ? AND step = ?"
            " AND ts >= ? GROUP BY series", (prefix, prefix + "\U0010ffff", step, int(since))))

    def names(self, prefix: str = "") -> list[str]:
        return [r[0] for r in self._db.execute(
            "SELECT DISTINCT series FROM samples WHERE series >= ? AND series < ? ORDER BY series",
            (prefix, prefix + "\U0010ffff"))]


def filled(points: Iterable[tuple[int, float]], step: int, since: int, until: int) -> list[tuple[int, float]]:
    """The buckets from `since` to `until` with the missing ones as 0 (a chart's x axis has no holes)."""
    have = dict(points)
    start = since - since % step
    return [(ts, have.get(ts, 0.0)) for ts in range(start, until + 1, step)]
