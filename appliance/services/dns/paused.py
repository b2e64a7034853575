"""The devices that are off now (paused, or off by a schedule), as the DNS server sees them.

The datapath already drops a paused device's traffic, but lets its DNS
through to the box; answering those queries as usual would let apps think
the network works and wait on connections that time out. The server reads
the same files the datapath's pause comes from (the console's `paused.json`,
the devices service's `scheduled.json`) and answers an off device's every
question as blocked. The files are small and change at most once a minute
(a schedule) or when someone presses Pause; a `stat` of each tells whether
to read them again.
"""
from __future__ import annotations

import os

from appliance.services.devices.macfile import read_macs

OFF_EVERY = 0.5  # seconds between looks at the files (a pause is felt within 2 s, devices tick included)


class OffDevices:
    """The union of the MACs in `paths`, re-read when one of the files changes."""

    def __init__(self, paths: list[str]):
        self.paths = list(paths)
        self._seen: list[tuple | None] = [None] * len(self.paths)
        self.macs: frozenset[str] = frozenset()

    @staticmethod
    def _signature(path: str) -> tuple | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def refresh(self) -> bool:
        """Read the files again if any changed; True if the set of MACs changed."""
        seen = [self._signature(p) for p in self.paths]
        if seen == self._seen:
            return False
        self._seen = seen
        macs = frozenset().union(*(read_macs(p) for p in self.paths)) if self.paths else frozenset()
        if macs == self.macs:
            return False
        self.macs = macs
        return True
