"""Loaded (as sitecustomize, through PYTHONPATH) only by processes a clock-jump test runs under libfaketime.

libfaketime 0.9.10 (Debian 12) with FAKETIME_DONT_FAKE_MONOTONIC=1 fails
clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME), which is how Python's
time.sleep waits: every sleep raises EINVAL. select() waits the same time
through a path libfaketime leaves alone. Only the tool is worked around: the
code under test still reads the faked wall clock and the true boot clock.
"""
import select
import time


def _sleep(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        select.select([], [], [], left)


time.sleep = _sleep
