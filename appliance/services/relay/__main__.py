"""Run the relay: ``python -m appliance.services.relay --config FILE``.

SIGHUP re-reads the file (a bad file is logged and the running settings
kept); SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from appliance.services.entry import service_main
from .relay import Relay
from .settings import SettingsError, load_settings_file

log = logging.getLogger("appliance.relay")


async def run(config: str) -> int:
    settings = load_settings_file(config)
    loop = asyncio.get_running_loop()
    relay = Relay(settings, loop=loop)
    await relay.start()
    stop = asyncio.Event()

    def reload() -> None:
        try:
            relay.reload(load_settings_file(config))
        except SettingsError as exc:
            log.error("reload of %s refused, keeping the running settings: %s", config, exc)
        except OSError as exc:
            log.error("reload of %s failed, keeping the running settings: %s", config, exc)

    loop.add_signal_handler(signal.SIGHUP, reload)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await relay.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    return service_main("python -m appliance.services.relay", run, SettingsError, argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
