"""The clock that does not jump: CLOCK_BOOTTIME, with the boot it belongs to.

A box without a real-time clock boots with a wall clock that is hours or
years off and jumps when NTP syncs. CLOCK_BOOTTIME is the same in every
process, counts a suspend and never jumps; its seconds mean something only
within one boot, so they are kept with the boot's id.
"""
from __future__ import annotations

import time

BOOT_ID = "/proc/sys/kernel/random/boot_id"


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def boot_id() -> str:
    try:
        with open(BOOT_ID) as f:
            return f.read().strip()
    except OSError:
        return ""
