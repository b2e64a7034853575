"""In-memory `Conntrack`, for unit tests: `add()` what traffic would have made."""
from __future__ import annotations

import itertools
from dataclasses import replace

from appliance.kernel.conntrack import CtEntry


class FakeConntrack:
    def __init__(self) -> None:
        self.table: dict[tuple[int, tuple[str, int], tuple[str, int]], CtEntry] = {}
        self.closed = False
        self._ids = itertools.count(1)

    def add(self, entry: CtEntry) -> CtEntry:
        """A connection (a new one, or new counts for one with the same original tuple)."""
        key = (entry.proto, entry.src, entry.dst)
        old = self.table.get(key)
        entry = replace(entry, id=old.id if old else (entry.id or next(self._ids)))
        self.table[key] = entry
        return entry

    async def entries(self, mark, dst=None):
        return [e for e in self.table.values() if e.mark == mark and (dst is None or e.dst[0] == dst)]

    async def get(self, proto, src, dst):
        return self.table.get((proto, tuple(src), tuple(dst)))

    async def delete(self, proto, src, dst):
        return self.table.pop((proto, tuple(src), tuple(dst)), None) is not None

    def close(self) -> None:
        self.closed = True
