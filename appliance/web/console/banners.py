"""What the console says on every page when something it or the home depends on is not right.

- the boot fell back (the last good settings, or the factory bridge): the
  boot note (`appliance.box.boot`), with why;
- Redis does not answer: no live updates, no login lockout, no apply queue;
- the Celery worker does not answer: applies wait in the queue, unconfirmed
  changes are not rolled back until it is back;
- the DHCP pool is nearly full, or full (`appliance.box.status.dhcp_pool`).

Each check is cheap or kept for a few seconds in the process (`_kept`): a
page never waits for a dead Redis more than its connect timeout, nor for a
dead worker's ping more than once per WORKER_EVERY seconds. A problem here
never makes a page fail (`BackendDownMiddleware` turns one that does, a
view that needed Redis, into a 503 page saying so).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from django.conf import settings

log = logging.getLogger(__name__)

REDIS_EVERY = 2.0  # seconds a Redis check is kept in the process
WORKER_EVERY = 10.0  # ... a worker ping (it waits up to WORKER_TIMEOUT when none answers)
WORKER_TIMEOUT = 1.0
_KEPT: dict[str, tuple[float, object]] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Banner:
    level: str  # "error" or "warn"
    key: str  # what it is about: boot, redis, worker, dhcp-pool
    text: str


def _kept(key: str, seconds: float, check):
    hit = _KEPT.get(key)
    if hit is not None and time.monotonic() - hit[0] < seconds:
        return hit[1]
    value = check()
    with _LOCK:
        _KEPT[key] = (time.monotonic(), value)
    return value


def forget() -> None:
    """Check again on the next page (something just failed)."""
    with _LOCK:
        _KEPT.clear()


def redis_problem() -> str | None:
    import redis

    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5).ping()
    except redis.exceptions.RedisError as e:
        return str(e) or type(e).__name__
    return None


def worker_problem() -> str | None:
    from appliance.web.celery import app

    try:
        replies = app.control.ping(timeout=WORKER_TIMEOUT, limit=1)
    except Exception as e:  # noqa: BLE001 - the broker went away meanwhile
        return f"the task queue is not reachable: {e}"
    return None if replies else f"no worker answered a ping within {WORKER_TIMEOUT:g} s"


def backends() -> list[Banner]:
    """Redis and the Celery worker, as this process last saw them."""
    if not getattr(settings, "APPLIANCE_CHECK_BACKENDS", True):
        return []
    redis_down = _kept("redis", REDIS_EVERY, redis_problem)
    if redis_down:
        return [Banner("error", "redis", "Redis does not answer: pages work, but live updates, the login "
                                         "lockout and applies do not until it is back "
                                         f"({redis_down}). On the box: systemctl restart redis-server")]
    worker_down = _kept("worker", WORKER_EVERY, worker_problem)
    if worker_down:
        return [Banner("error", "worker", "The apply worker (Celery) does not answer: applies wait in the "
                                          "queue and an unconfirmed change is rolled back only once it is "
                                          f"back ({worker_down}). On the box: systemctl restart appliance-worker")]
    return []


def box_banners() -> list[Banner]:
    """The boot note and the DHCP pool, from the box's readings: read at most once a second
    per process, as the readings themselves (every page of every viewer shows them)."""
    from appliance.web import sources

    return sources.cached("box_banners", _read_box_banners)


def _read_box_banners() -> list[Banner]:
    from appliance.web import sources

    out = []
    try:
        src = sources.get()
        note = src.boot_note()
        if note is not None:
            out.append(Banner("error", "boot", note.banner))
        pool = sources.cached("dhcp_pool", src.dhcp_pool)
        if pool.ok and pool.value.get("warning"):
            out.append(Banner("error" if pool.value.get("exhausted") else "warn", "dhcp-pool",
                              pool.value["warning"]))
    except Exception as e:  # noqa: BLE001 - a banner must never break the page
        log.warning("box banners not read: %s", e)
    return out


def all_banners() -> list[Banner]:
    return [*backends(), *box_banners()]


def context(request):
    """Template context: `banners` on every page of a signed-in user; Redis and the worker for everyone."""
    if getattr(request, "path", "").startswith(("/static/", "/api/")):
        return {}
    user = getattr(request, "user", None)
    return {"banners": all_banners() if user is not None and user.is_authenticated else backends()}
