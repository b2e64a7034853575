"""`python -m appliance.services.notify --config FILE`: follow the events file and send alerts.

FILE (JSON, written by the box's plan, readable by the notifier only): `urls` (Apprise URLs),
`events` (the kinds to send), `events_file`, `box` (a name for the titles).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time

from appliance.services.health.record import read_events
from appliance.services.notify import kind, message

log = logging.getLogger("appliance.notify")
POLL = 1.0


class Notifier:
    def __init__(self, config: dict, send=None):
        self.urls = list(config["urls"])
        self.kinds = set(config.get("events", ()))
        self.events_file = config["events_file"]
        self.box = config.get("box") or "the box"
        self._send = send if send is not None else self._apprise
        self.seen = {e.id for e in read_events(self.events_file)}  # the previous run's
        self._stamp = self._file_stamp()

    def _file_stamp(self):
        try:
            st = os.stat(self.events_file)
            return st.st_size, st.st_mtime_ns, st.st_ino
        except FileNotFoundError:
            return None

    def _apprise(self, title: str, body: str) -> bool:
        import apprise

        a = apprise.Apprise()
        for url in self.urls:
            a.add(url)
        return bool(a.notify(title=title, body=body or title))

    def poll(self) -> int:
        """Send what is new in the events file; how many alerts were sent."""
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return 0
        self._stamp = stamp
        sent = 0
        for event in read_events(self.events_file):
            if event.id in self.seen:
                continue
            self.seen.add(event.id)
            if kind(event) not in self.kinds:
                continue
            title, body = message(event, self.box)
            if self._send(title, body):
                sent += 1
                log.info("sent: %s", title)
            else:
                log.warning("not sent (no channel took it): %s", title)
        return sent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="appliance.services.notify")
    ap.add_argument("--config", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s notify: %(message)s")
    with open(args.config) as f:
        notifier = Notifier(json.load(f))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log.info("following %s for %s", notifier.events_file, ", ".join(sorted(notifier.kinds)) or "nothing")
    while True:
        try:
            notifier.poll()
        except Exception as e:  # noqa: BLE001 - one bad read or channel must not end the alerts
            log.warning("%s: %s", type(e).__name__, e)
        time.sleep(POLL)


if __name__ == "__main__":
    sys.exit(main())
