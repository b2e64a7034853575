"""Push an event to every open console (the Channels group `console`)."""
from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

GROUP = "console"
log = logging.getLogger(__name__)


def publish(event: dict) -> None:
    """Best effort: a console that misses a line still finds it in the history."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(GROUP, {"type": "console.event", "event": event})
    except Exception as e:  # noqa: BLE001 - a dead Redis must not fail an apply
        log.warning("live update not sent: %s", e)
