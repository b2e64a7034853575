"""Run the relay: ``python -m appliance.services.relay --config FILE``.

SIGHUP re-reads the file (a bad file is logged and the running settings
kept); SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

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
    parser = argparse.ArgumentParser(prog="python -m appliance.services.relay", description=__doc__)
    parser.add_argument("--config", required=True, help="relay settings (YAML or JSON)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(run(args.config))
    except SettingsError as exc:
        for field, problem in exc.errors.items():
            print(f"{args.config}: {field}: {problem}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
