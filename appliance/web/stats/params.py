"""The series API's query string: each parameter checked against the schema the API shows
(a value the schema allows is never refused; one it refuses is a 400 naming it)."""
from __future__ import annotations

import re
import time

from drf_spectacular.utils import OpenApiParameter

from appliance.services.timeseries import HOUR, KEEP, MINUTE

NAME = re.compile(r"^(dns|dev)\.[A-Za-z0-9_.:-]{1,200}$")
PREFIX = re.compile(r"^dev\.$")
_NUMBER = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$")  # JSON's, as the schema's
STEPS = {str(MINUTE): MINUTE, str(HOUR): HOUR}
MAX_TOP = 20

_STEP = OpenApiParameter("step", {"type": "integer", "enum": sorted(KEEP)},
                         description="bucket seconds: 60 (kept a day) or 3600 (kept a month); default 60")
_SINCE = OpenApiParameter("since", {"type": "number", "minimum": 0},
                          description="Unix time of the first bucket; default: an hour ago for minutes,"
                                      " a month for hours; never before what the box keeps")
SERIES_PARAMETERS = [
    OpenApiParameter("name", {"type": "string", "pattern": NAME.pattern}, required=True,
                     description="dns.queries, dns.blocked, dns.forwarded, dns.cached, dns.fake_ip,"
                                 " dns.group.NAME.queries/.blocked; dev.MAC.rx_bytes/.tx_bytes,"
                                 " dev.all.rx_bytes/.tx_bytes"),
    _STEP, _SINCE,
]
TOP_PARAMETERS = [
    _STEP, _SINCE,
    OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": MAX_TOP},
                     description=f"devices to list (1-{MAX_TOP}, default 5)"),
]


def window(params, errors: dict[str, list[str]], now: float | None = None) -> tuple[int, int, int]:
    """(step, since, until) from `step` and `since`; `since` clamped to what the store keeps."""
    now = int(time.time() if now is None else now)
    step = MINUTE
    if "step" in params:
        step = STEPS.get(params["step"])
        if step is None:
            errors["step"] = [f"{params['step']!r} is not 60 or 3600"]
            step = MINUTE
    since = now - (HOUR if step == MINUTE else KEEP[HOUR])
    if "since" in params:
        text = params["since"]
        if _NUMBER.match(text) and float(text) >= 0:
            since = int(min(float(text), now + step))  # a time to come: no bucket yet
        else:
            errors["since"] = [f"{text!r} is not a Unix time (a number, 0 or more)"]
    # Never more buckets than the store keeps: `since=0` is a month of hours, not 55 years.
    since = max(since, now - KEEP[step])
    since -= since % step
    return step, since, now


def series(params, now: float | None = None) -> tuple[dict, dict[str, list[str]]]:
    errors: dict[str, list[str]] = {}
    name = params.get("name")
    if name is None:
        errors["name"] = ["required: the series' name, e.g. dns.queries"]
    elif not NAME.match(name):
        errors["name"] = [f"{name!r} is not a series name (dns.* or dev.*)"]
    step, since, until = window(params, errors, now)
    return {"name": name, "step": step, "since": since, "until": until}, errors


def top(params, now: float | None = None) -> tuple[dict, dict[str, list[str]]]:
    errors: dict[str, list[str]] = {}
    step, since, until = window(params, errors, now)
    limit = 5
    if "limit" in params:
        text = params["limit"]
        if text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_TOP:
            limit = int(text)
        else:
            errors["limit"] = [f"{text!r} is not a whole number from 1 to {MAX_TOP}"]
    return {"step": step, "since": since, "until": until, "limit": limit}, errors
