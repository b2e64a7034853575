"""The devices table's rows, built in Python.

Why not the template: a home can have a hundred devices, and Django's
template engine spent about 45 ms rendering a hundred rows (forty tags and
four URL reversals each), the whole page's cost and, at 50 connections on
two workers, the queue every other request waited in. Here every value
that comes from a device, a lease or the user goes through `escape` (`_e`),
as the template's autoescape did; the rows cost a few milliseconds
(bench/web.py's devices row; tests/unit/web/test_devices.py reads the page).
"""
from __future__ import annotations

from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape as _e
from django.utils.safestring import SafeString, mark_safe

_NAME_SOURCE = {"dhcp": "(DHCP)", "static": "(static lease)"}
_MAC_SLOT = "00:00:00:00:00:00"
_ACTIONS = ("pause", "rename", "policy", "forget")


def _when(t, fmt: str) -> str:
    return timezone.localtime(t).strftime(fmt) if t else ""


def _state(d, online_minutes: int) -> str:
    out = ""
    if d.paused:
        out += '<span class="warn" title="paused until you resume it">paused</span><br>'
    if d.scheduled_off:
        out += ('<span class="warn" title="a schedule (its own or its group\'s) has it off now">'
                'off by its schedule</span><br>')
    if d.online:
        return out + f'<span class="ok" title="sent a frame in the last {online_minutes} minutes">online</span>'
    return out + '<span class="small">offline</span>'


def _name(d) -> str:
    source = _NAME_SOURCE.get(d.name_source)
    return _e(d.name or "-") + (f' <span class="small">{source}</span>' if source else "")


def _vendor(d) -> str:
    if d.vendor:
        return _e(d.vendor)
    return '<span class="small">private address</span>' if d.private else "-"


def _traffic(d, direction: str) -> str:
    if not d.counted:
        return "-"
    n = int(getattr(d, f"{direction}_bytes"))
    # The exact count on hover: "20.0 MB" alone cannot be checked against the device's own counters.
    return (f'<span class="bytes" title="{n:,} bytes">{_e(filesizeformat(n))}</span> '
            f'<span class="small">{int(getattr(d, f"{direction}_packets"))} packets</span>')


def _policy(d) -> str:
    out = f"<strong>{_e(d.group)}</strong><br>" if d.group else ""
    out += "".join(f'<span class="small">{_e(t)}</span><br>' for t in d.schedule_text)
    if d.budget:
        over = " warn" if d.budget_used >= d.budget["bytes"] else ""
        out += (f'<span class="small{over}">{_e(filesizeformat(d.budget_used))} of '
                f'{_e(filesizeformat(d.budget["bytes"]))} this {_e(d.budget["period"])}</span>')
    return out or "-"


def _actions(d, urls: dict[str, str], csrf: str) -> str:
    at = {k: _e(u.replace(_MAC_SLOT, d.mac)) for k, u in urls.items()}
    button = "<button>Resume</button>" if d.paused else '<button class="secondary">Pause</button>'
    return (f'<form method="post" action="{at["pause"]}" class="inline">'
            f'<input type="hidden" name="csrfmiddlewaretoken" value="{_e(csrf)}">'
            f'<input type="hidden" name="paused" value="{0 if d.paused else 1}">'
            f'{button}</form>\n'
            f'<a href="{at["rename"]}">rename</a> <a href="{at["policy"]}">schedule</a> '
            f'<a href="{at["forget"]}">forget</a>')


def _row(d, urls: dict[str, str], csrf: str, online_minutes: int) -> str:
    mac = _e(d.mac)
    addresses = "".join(f"<code>{_e(a)}</code><br>" for a in [*d.ipv4, *d.ipv6])
    return (f'<tr data-mac="{mac}"><td>{_state(d, online_minutes)}</td><td>{_name(d)}</td><td>{_vendor(d)}</td>'
            f'<td><code>{mac}</code></td><td>{addresses}</td>'
            f'<td>{_when(d.first_seen, "%Y-%m-%d %H:%M")}</td><td>{_when(d.last_seen, "%Y-%m-%d %H:%M:%S")}</td>'
            f'<td class="num rx">{_traffic(d, "rx")}</td><td class="num tx">{_traffic(d, "tx")}</td>'
            f'<td>{_policy(d)}</td><td>{_actions(d, urls, csrf)}</td></tr>')


def rows(devices, csrf: str, online_minutes: int) -> SafeString:
    """The <tr> of each device (the template has the header)."""
    # One reversal per action for the page, not four per row: a MAC is a plain path segment.
    urls = {k: reverse(f"devices:{k}", args=[_MAC_SLOT]) for k in _ACTIONS}
    return mark_safe("\n".join(_row(d, urls, csrf, online_minutes) for d in devices))
