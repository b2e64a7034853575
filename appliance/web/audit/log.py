"""Writing audit entries: a settings change is recorded as the document's YAML diff.

Failures that anyone on the LAN can cause (a wrong password, a wrong setup
code) wrote a row each, so a host could grow the log without end. They are
aggregated instead (`record_failure`): one row per action, user name and
source address per `APPLIANCE_AUDIT_WINDOW_SECONDS`, whose count goes up;
past `APPLIANCE_AUDIT_FAILURE_ROWS` such rows in a window, further ones all
go to one row per action (source `*`). The log keeps
`APPLIANCE_AUDIT_RETENTION_DAYS` and at most `APPLIANCE_AUDIT_MAX_ROWS`
rows: older ones are dropped, at most once an hour per process.
"""
from __future__ import annotations

import difflib
import time
from datetime import timedelta

import yaml
from django.conf import settings
from django.db.models import F
from django.utils import timezone

PRUNE_EVERY = 3600.0
_pruned_at = float("-inf")
OTHERS = "*"  # the source of the overflow row


def document_diff(before: dict | None, after: dict | None) -> str:
    a = yaml.safe_dump(before, sort_keys=False).splitlines(keepends=True) if before else []
    b = yaml.safe_dump(after, sort_keys=False).splitlines(keepends=True) if after else []
    return "".join(difflib.unified_diff(a, b, "before", "after", n=2))


def record(user, action: str, target: str = "", diff: str = "", source: str = ""):
    from appliance.web.audit.models import AuditEntry

    real = user if getattr(user, "is_authenticated", False) else None
    entry = AuditEntry.objects.create(user=real, username=getattr(real, "username", "") or "",
                                      action=action, target=target[:200], diff=diff, source=source[:45])
    _maybe_prune()
    return entry


def record_change(user, action: str, target: str, before: dict, after: dict):
    return record(user, action, target, document_diff(before, after))


def record_failure(action: str, target: str, source: str):
    """A failure anyone may cause: counted on this window's row for (action, target, source)."""
    from appliance.web.audit.models import AuditEntry

    now = timezone.now()
    recent = AuditEntry.objects.filter(action=action, user=None,
                                       time__gte=now - timedelta(seconds=settings.APPLIANCE_AUDIT_WINDOW_SECONDS))
    target, source = target[:200], source[:45]
    row = recent.filter(target=target, source=source).order_by("-id").values_list("pk", flat=True).first()
    if row is None and recent.count() >= settings.APPLIANCE_AUDIT_FAILURE_ROWS:
        target, source = "(more)", OTHERS
        row = recent.filter(source=OTHERS).order_by("-id").values_list("pk", flat=True).first()
    if row is not None:
        AuditEntry.objects.filter(pk=row).update(count=F("count") + 1, last=now)
        return
    record(None, action, target, source=source)


def prune(now=None) -> int:
    """Drop entries past the retention or the row cap; how many went."""
    from appliance.web.audit.models import AuditEntry

    now = now or timezone.now()
    gone, _ = AuditEntry.objects.filter(time__lt=now - timedelta(days=settings.APPLIANCE_AUDIT_RETENTION_DAYS)).delete()
    keep = settings.APPLIANCE_AUDIT_MAX_ROWS
    past_cap = list(AuditEntry.objects.order_by("-id").values_list("pk", flat=True)[keep:keep + 1])
    if past_cap:
        n, _ = AuditEntry.objects.filter(pk__lte=past_cap[0]).delete()
        gone += n
    return gone


def _maybe_prune() -> None:
    global _pruned_at
    if time.monotonic() - _pruned_at >= PRUNE_EVERY:
        _pruned_at = time.monotonic()
        prune()
