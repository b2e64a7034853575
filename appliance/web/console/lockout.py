"""Login lockout: after N failures for a user name or a client address, refuse for a while.

Counts live in the cache (Redis in production, so every console worker process
agrees); the window and the limit come from Django settings.
"""
from __future__ import annotations

from django.conf import settings
from django.core.cache import cache


def _keys(username: str, ip: str) -> list[str]:
    return [f"login-fail:user:{username.lower()}", f"login-fail:ip:{ip}"]


def locked(username: str, ip: str) -> bool:
    limit = settings.APPLIANCE_LOGIN_MAX_FAILURES
    return any((cache.get(k) or 0) >= limit for k in _keys(username, ip))


def failed(username: str, ip: str) -> None:
    for k in _keys(username, ip):
        if not cache.add(k, 1, settings.APPLIANCE_LOGIN_LOCKOUT_SECONDS):
            try:
                cache.incr(k)
            except ValueError:
                cache.set(k, 1, settings.APPLIANCE_LOGIN_LOCKOUT_SECONDS)


def succeeded(username: str, ip: str) -> None:
    cache.delete(_keys(username, ip)[0])


def client_ip(request) -> str:
    return request.META.get("REMOTE_ADDR", "") or "-"
