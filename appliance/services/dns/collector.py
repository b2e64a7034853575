"""When the DNS server's processes run the garbage collector's full passes: on a clock, not on counts.

A full pass walks every object the collector tracks: in a server that has
answered a while, the answer cache's and the decisions' entries (tens of
thousands of small objects), and before `gc.freeze()` everything imported
at start. Python starts one whenever enough objects have outlived the young
passes, which under a stream of new names is every few seconds, and each
held the event loop 15-25 ms: every query that arrived meanwhile waited
(dnsperf at 5,000 q/s of never-seen names on loopback: slow answers in
bursts at exactly those moments, p99.9 10-25 ms).

The server makes no reference cycles while it answers (no garbage in 3,000
queries of every kind: tests/unit/services/dns/test_collector.py), so a
full pass finds nothing to free; what it costs is the pause. Here the young
passes stay automatic (they walk only what is new), what was loaded at
start is frozen out of the collector's sight, and the full pass runs every
`FULL_EVERY` seconds: any cycle an unusual path makes (an exception's
traceback) lives at most that long.
"""
from __future__ import annotations

import asyncio
import gc

FULL_EVERY = 60.0  # seconds between full passes
_NEVER = 1 << 30  # young passes between automatic full passes: none


def settle_in() -> None:
    """After start (imports done, policy built): freeze what is there, stop counted full passes."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, _NEVER)


async def full_passes(every: float = FULL_EVERY) -> None:
    """Run for the life of the process: a full pass every `every` seconds."""
    while True:
        await asyncio.sleep(every)
        gc.collect()


def start() -> asyncio.Task:
    """`settle_in()` now and the full passes as a task of the running loop (keep the task)."""
    settle_in()
    return asyncio.get_running_loop().create_task(full_passes())
