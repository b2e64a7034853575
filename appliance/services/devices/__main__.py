"""`python -m appliance.services.devices --config RUN/devices.json` (`service.DevicesService`)."""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from appliance.services.devices.service import DevicesConfig, DevicesService
from appliance.services.health.watchdog import sd_notify


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m appliance.services.devices")
    ap.add_argument("--config", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s devices: %(message)s")
    with open(args.config) as f:
        config = DevicesConfig.from_json(json.load(f))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    DevicesService(config).run(stop, sd_notify)
    return 0


if __name__ == "__main__":
    sys.exit(main())
