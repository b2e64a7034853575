"""The box's notifications (`alerts` in the settings): what the box records as events, sent to
the channels a home already uses, through Apprise (ntfy, e-mail, Telegram, webhooks...).

It follows the box's events file (`appliance.services.health.record`: the watchdog's health
transitions and restarts, the modem watch's gateway changes, and whatever else appends
there, such as new devices), turns each event of a kind the settings ask for into a title and
a body (`message`, pure) and sends it. It sends only what happens while it runs: events
already in the file when it starts were the previous run's (a restart re-sends nothing).
"""
from __future__ import annotations

from appliance.services.health.record import Event

# The events file's (service, what) -> the settings' kind of alert.
SERVICE_STATES = {"unhealthy", "healthy", "restart", "restart-failed"}
MODEM_EVENTS = {"mac-changed", "re-applied", "re-apply-failed"}


def kind(event: Event) -> str | None:
    """Which `alerts.events` kind an event is, or None for what no one is alerted of."""
    if event.service == "gateway" and event.what in MODEM_EVENTS:
        return "modem"
    if event.service == "devices" and event.what == "new":
        return "new-device"
    if event.service == "devices" and event.what == "over-budget":
        return "data-budget"
    if event.what in SERVICE_STATES:
        return "service"
    return None


def message(event: Event, box: str = "the box") -> tuple[str, str]:
    """(title, body) for an event."""
    what = {"unhealthy": "does not answer", "healthy": "answers again", "restart": "was restarted",
            "restart-failed": "could not be restarted", "mac-changed": "has a new MAC address",
            "re-applied": "followed", "re-apply-failed": "could not be followed",
            "new": "joined the home", "over-budget": "is over its data budget"}.get(event.what, event.what)
    subject = {"gateway": "The modem", "devices": "A device"}.get(event.service, f"The {event.service} service")
    return f"{box}: {subject} {what}", event.detail
