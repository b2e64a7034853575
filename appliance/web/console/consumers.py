"""The console's websocket: apply progress and live figures pushed to every open page."""
from __future__ import annotations

import asyncio

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from appliance.web.applies.live import GROUP


class ConsoleConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()
        self.ticker = asyncio.ensure_future(self.tick())

    async def disconnect(self, code):
        if hasattr(self, "ticker"):
            self.ticker.cancel()
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def console_event(self, message):
        await self.send_json(message["event"])

    async def tick(self):
        """Port counters every few seconds, for the rate charts."""
        from appliance.web import sources

        period = getattr(settings, "APPLIANCE_LIVE_PERIOD", 2.0)
        try:
            while True:
                reading = await database_sync_to_async(sources.ports)()
                await self.send_json({"kind": "ports", "ok": reading.ok, "problem": reading.problem,
                                      "ports": reading.value or []})
                await asyncio.sleep(period)
        except asyncio.CancelledError:
            pass
        except Exception as e:  # noqa: BLE001 - stop ticking, keep the socket for apply events
            await self.send_json({"kind": "ports", "ok": False, "problem": str(e), "ports": []})
