"""The console websocket: anonymous refused; apply events reach every open console."""
import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from appliance.web.applies.live import publish


def _app():
    from appliance.web.asgi import application
    return application


@pytest.mark.django_db(transaction=True)
def test_anonymous_websocket_is_closed(settings):
    settings.APPLIANCE_LIVE_PERIOD = 3600

    async def go():
        comm = WebsocketCommunicator(_app(), "/ws/console/", headers=[(b"origin", b"http://localhost"),
                                                                        (b"host", b"localhost")])
        connected, code = await comm.connect()
        await comm.disconnect()
        return connected
    assert async_to_sync(go)() is False


@pytest.mark.django_db(transaction=True)
def test_logged_in_consoles_receive_apply_events(admin, client, settings):
    settings.APPLIANCE_LIVE_PERIOD = 3600
    client.force_login(admin)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()

    async def go():
        consoles = []
        for _ in range(2):
            comm = WebsocketCommunicator(_app(), "/ws/console/", headers=[
                (b"origin", b"http://localhost"), (b"host", b"localhost"), (b"cookie", cookie)])
            connected, _ = await comm.connect()
            assert connected
            first = await comm.receive_json_from(timeout=5)  # the port figures
            assert first["kind"] == "ports"
            consoles.append(comm)
        await get_channel_layer().group_send("console", {"type": "console.event",
                                                         "event": {"kind": "apply", "id": 7, "line": "step 1/5"}})
        got = [await c.receive_json_from(timeout=5) for c in consoles]
        for c in consoles:
            await c.disconnect()
        return got
    got = async_to_sync(go)()
    assert [g["line"] for g in got] == ["step 1/5", "step 1/5"]


def test_publish_without_a_layer_is_harmless(settings):
    settings.CHANNEL_LAYERS = {}
    publish({"kind": "apply", "id": 1})
