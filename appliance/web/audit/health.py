"""The box's health events (the watchdog's record, kept by the box itself) copied into the audit log.

The watchdog appends every health transition and restart to the box's
events file whether or not the console runs (`appliance.services.health.record`);
the console copies the ones it has not seen yet into the audit log, with
their own time, whenever it reads the box's services (the dashboard) or
shows the log. An event's id rides in the entry's `source`, so none is
copied twice.
"""
from __future__ import annotations

from datetime import datetime, timezone

from appliance.services.health.record import Event

ACTION = "health"
SOURCE_PREFIX = "event:"


def import_events(events: list[Event]) -> int:
    """Copy the events not in the audit log yet; how many were copied."""
    from appliance.web.audit.models import AuditEntry

    if not events:
        return 0
    sources = {SOURCE_PREFIX + e.id: e for e in events if e.id}
    seen = set(AuditEntry.objects.filter(action=ACTION, source__in=list(sources)).values_list("source", flat=True))
    n = 0
    for source, e in sources.items():
        if source in seen:
            continue
        entry = AuditEntry.objects.create(username="", action=ACTION, target=f"{e.service}: {e.what}"[:200],
                                          diff=e.detail, source=source[:45])
        AuditEntry.objects.filter(pk=entry.pk).update(time=datetime.fromtimestamp(e.time, timezone.utc))
        n += 1
    return n
