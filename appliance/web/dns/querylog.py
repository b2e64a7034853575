"""The query log's search, as the API and the console take it: filters from a query string,
each checked against the schema the API shows (a value the schema allows is never refused)."""
from __future__ import annotations

import ipaddress
import re

from drf_spectacular.utils import OpenApiParameter

MAX_LIMIT = 1000
_ACTION = re.compile(r"^[a-z][a-z-]{0,31}$")
_NUMBER = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$")  # JSON's, as the schema's
_NO_CONTROL = re.compile(r"^[^\x00-\x1f\x7f]+$")
_MAC = re.compile(r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$")

PARAMETERS = [
    OpenApiParameter("client", {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
                     description="the client's address, exactly"),
    OpenApiParameter("mac", {"type": "string", "pattern": _MAC.pattern},
                     description="the device's MAC (colons or dashes, any case)"),
    OpenApiParameter("domain", {"type": "string", "minLength": 1, "maxLength": 253, "pattern": _NO_CONTROL.pattern},
                     description="a part of the name asked"),
    OpenApiParameter("action", {"type": "string", "pattern": _ACTION.pattern},
                     description="what the box did: block, direct, fake-ip, rewrite, local, refused..."),
    OpenApiParameter("since", {"type": "number", "minimum": 0}, description="Unix time: entries at or after it"
                     " (the log on disk is searched past the server's memory, `dns.query_log`)"),
    OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                     description=f"entries to list (1-{MAX_LIMIT}, default 100)"),
]


def filters(params) -> tuple[dict, dict[str, list[str]]]:
    """(filters for `QueryLog.search`, errors by parameter) from a query string. A parameter
    given is checked even when empty: only one left out takes its default."""
    out: dict = {"limit": 100}
    errors: dict[str, list[str]] = {}
    if "client" in params:
        client = params["client"]
        try:
            address = ipaddress.ip_address(client)
            if getattr(address, "scope_id", None):
                raise ValueError
            out["client"] = str(address)
        except ValueError:
            errors["client"] = [f"{client!r} is not an IPv4 or IPv6 address"]
    if "mac" in params:
        mac = params["mac"]
        if _MAC.match(mac):
            out["mac"] = mac.lower().replace("-", ":")
        else:
            errors["mac"] = [f"{mac!r} is not a MAC (six hex pairs, colons or dashes)"]
    if "domain" in params:
        domain = params["domain"]
        if len(domain) <= 253 and _NO_CONTROL.match(domain):
            out["domain"] = domain
        else:
            errors["domain"] = ["1 to 253 characters, no control characters"]
    if "action" in params:
        action = params["action"]
        if _ACTION.match(action):
            out["action"] = action
        else:
            errors["action"] = [f"{action!r} is not an action (lower-case letters and '-')"]
    if "since" in params:
        since = params["since"]
        if _NUMBER.match(since) and float(since) >= 0:
            out["since"] = float(since)
        else:
            errors["since"] = [f"{since!r} is not a Unix time (a number, 0 or more)"]
    if "limit" in params:
        limit = params["limit"]
        if limit.isascii() and limit.isdigit() and 1 <= int(limit) <= MAX_LIMIT:
            out["limit"] = int(limit)
        else:
            errors["limit"] = [f"{limit!r} is not a whole number from 1 to {MAX_LIMIT}"]
    return out, errors
