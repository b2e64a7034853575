"""Writing audit entries: a settings change is recorded as the document's YAML diff."""
from __future__ import annotations

import difflib

import yaml


def document_diff(before: dict | None, after: dict | None) -> str:
    a = yaml.safe_dump(before, sort_keys=False).splitlines(keepends=True) if before else []
    b = yaml.safe_dump(after, sort_keys=False).splitlines(keepends=True) if after else []
    return "".join(difflib.unified_diff(a, b, "before", "after", n=2))


def record(user, action: str, target: str = "", diff: str = ""):
    from appliance.web.audit.models import AuditEntry

    real = user if getattr(user, "is_authenticated", False) else None
    return AuditEntry.objects.create(user=real, username=getattr(real, "username", "") or "",
                                     action=action, target=target, diff=diff)


def record_change(user, action: str, target: str, before: dict, after: dict):
    return record(user, action, target, document_diff(before, after))
