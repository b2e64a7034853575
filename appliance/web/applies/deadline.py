"""The confirm deadline on the clock that does not jump: CLOCK_BOOTTIME, with the boot it belongs to.

A box without a real-time clock boots with a wall clock that is hours or
years off and jumps when NTP syncs (forward, or back when a saved time was
ahead). A deadline kept on the wall clock then fires at once or never. The
deadline is kept as seconds on CLOCK_BOOTTIME (the same clock in the web
and the worker processes; it counts a suspend, it never jumps) with the
boot's id: after a reboot the deadline has passed. The wall clock is only
shown: the time the console prints is now + what is left.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from appliance.kernel.clock import boot_id, boottime as now  # noqa: F401 (now, boot_id: this module's API)


@dataclass(frozen=True)
class Deadline:
    boot: str
    at: float  # CLOCK_BOOTTIME seconds

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(boot_id(), now() + seconds)

    def left(self) -> float:
        """Seconds until the deadline; 0 once passed, or when the box rebooted since."""
        if self.boot != boot_id():
            return 0.0
        return max(0.0, self.at - now())

    def shown(self, wall_now: dt.datetime) -> dt.datetime:
        """The wall-clock time to show for it (wherever the wall clock is now)."""
        return wall_now + dt.timedelta(seconds=self.left())
