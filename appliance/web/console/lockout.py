"""Login lockout per (user name, client address), with back-off.

Counting per user name let any host on the LAN keep `admin` locked out with
five wrong passwords a window; counting per address alone lets a host try
every name. So failures are counted per pair: a host that guesses locks
only itself out of that account. After `APPLIANCE_LOGIN_MAX_FAILURES` the
pair is refused for `APPLIANCE_LOGIN_LOCKOUT_SECONDS`, and every failure after
that (once the lock has run out) doubles the time, up to
`APPLIANCE_LOGIN_LOCKOUT_MAX_SECONDS`. The count is forgotten that long
after the last failure, or at once by a complete login: after the second
factor, never after the password alone (else a right password would reset
the count between guesses of the TOTP code).

Counts and locks live in the cache (Redis in production, so every console
worker process agrees); `clock` is the wall clock, passed in for tests.
"""
from __future__ import annotations

import hashlib
import time

from django.conf import settings
from django.core.cache import cache

clock = time.time


def _keys(username: str, ip: str) -> tuple[str, str]:
    # Hashed: a user name is any text, a cache key must not be.
    pair = hashlib.sha256(f"{username.lower()}\0{ip}".encode()).hexdigest()[:32]
    return f"login-fail:{pair}", f"login-lock:{pair}"


def _memory() -> int:
    return max(settings.APPLIANCE_LOGIN_LOCKOUT_MAX_SECONDS, settings.APPLIANCE_LOGIN_LOCKOUT_SECONDS)


def locked(username: str, ip: str) -> float:
    """Seconds until this user name may be tried again from this address (0: it may)."""
    until = cache.get(_keys(username, ip)[1])
    return max(0.0, until - clock()) if until else 0.0


def lock_seconds(failures: int) -> float:
    """How long the pair is locked after its `failures`-th failure (0: not locked)."""
    over = failures - settings.APPLIANCE_LOGIN_MAX_FAILURES
    if over < 0:
        return 0.0
    return float(min(settings.APPLIANCE_LOGIN_LOCKOUT_SECONDS * 2 ** min(over, 32),
                     settings.APPLIANCE_LOGIN_LOCKOUT_MAX_SECONDS))


def failed(username: str, ip: str) -> float:
    """Count a failure; the seconds the pair is now locked for (0: not locked)."""
    count_key, lock_key = _keys(username, ip)
    memory = _memory()
    if cache.add(count_key, 1, memory):
        n = 1
    else:
        try:
            n = cache.incr(count_key)
        except ValueError:  # expired between the two calls
            cache.set(count_key, 1, memory)
            n = 1
        cache.touch(count_key, memory)
    seconds = lock_seconds(n)
    if seconds:
        # The lock's end is kept as a time (the clock decides), the key outlives it a little.
        cache.set(lock_key, clock() + seconds, int(seconds) + 5)
    return seconds


def succeeded(username: str, ip: str) -> None:
    """A complete login (every factor): the pair starts again from nothing."""
    cache.delete_many(_keys(username, ip))


def client_ip(request) -> str:
    return request.META.get("REMOTE_ADDR", "") or "-"


def wait_text(seconds: float) -> str:
    s = int(seconds + 0.999)
    return f"{s} s" if s < 120 else f"{(s + 59) // 60} min"
