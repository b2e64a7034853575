"""The DHCPv6 server of the virtual gateway: dhcpkit's `ipv6-dhcpd` with our fixes, following the modem's RA.

    python -m appliance.services.dhcp.dhcp6 --config dhcp6.json

The config is `Dhcp6Settings` as JSON (written by the plan). Before
dhcpkit starts, its config and static-lease CSV are rendered from it and
the modem's last RA (kept in `paths.ra`); then dhcpkit's own `main` runs,
after `dhcpkit_fixes.apply()` (the fixes live here, the installed package
stays as released). A thread hears the RAs on the interface: when the
modem's (its source is the modem's link-local address) changes what is
served (its DNS servers, its M flag), the files are rendered again and
dhcpkit reloads them (SIGHUP, its own reload). `paths.status` says whether
the server serves or stands aside for the modem, and why; the health probe
reads it.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from appliance.kernel.ra import RaListener
from appliance.services.dhcp import dhcpkit_fixes
from appliance.services.dhcp.dhcpkit_config import Dhcp6Settings, assignments_csv, dhcpkit_config, following
from appliance.services.dhcp.ra import NotAnAdvert, RouterAdvert, parse_ra

log = logging.getLogger("appliance.dhcp6")


# The modem's RA is read by the DNS service too (another user: the home's
# prefix is a rebinding network there); it is what the modem multicasts to
# the whole home, nothing secret.
RA_MODE = 0o644


def _write(path: str, text: str, mode: int | None = None) -> bool:
    """Write atomically (with `mode`, if given); whether the content changed."""
    p = Path(path)
    try:
        if p.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(text)
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, p)
    return True


def load_ra(path: str) -> RouterAdvert | None:
    try:
        return RouterAdvert.from_json(json.loads(Path(path).read_text()))
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or unreadable: wait for the next RA
        return None


class Follower:
    """The rendered files, kept in step with the modem's RA."""

    def __init__(self, settings: Dhcp6Settings):
        self.settings = settings
        # A version that ran as root kept the RA beside the settings: taken
        # over once, so the DNS keeps the home's prefix until the next RA.
        self.ra = load_ra(settings.paths.ra) or load_ra(str(Path(settings.paths.config).with_name("modem-ra.json")))
        self.aside: str | None = None

    def render(self) -> bool:
        """Render dhcpkit's files and the status for the current RA; whether dhcpkit's must be reloaded."""
        serving, self.aside = following(self.settings, self.ra)
        changed = _write(serving.paths.assignments, assignments_csv(serving))
        changed |= _write(serving.paths.dhcpkit, dhcpkit_config(serving, os.getuid(), os.getgid()))
        _write(serving.paths.status, json.dumps({
            "aside": self.aside, "stateful": serving.stateful, "dns": list(serving.dns_servers),
            "ra": self.ra.to_json() if self.ra else None}) + "\n")
        return changed

    def heard(self, source: str, message: bytes) -> bool:
        """An RA arrived; whether dhcpkit must reload."""
        try:
            ra = parse_ra(source, message)
        except NotAnAdvert:
            return False
        if ra.source != self.settings.reply_from:  # not the modem: a home device's RA is no news
            return False
        if ra == self.ra:
            return False
        before = self.aside
        self.ra = ra
        _write(self.settings.paths.ra, json.dumps(ra.to_json()) + "\n", RA_MODE)
        changed = self.render()
        if self.aside != before:
            log.warning("%s", self.aside or "the box serves DHCPv6 again")
        return changed

    def listen(self, listener: RaListener, dhcpkit_ready) -> None:
        # dhcpkit reloads on SIGHUP only once its handlers are in place; RAs
        # heard meanwhile wait in the socket.
        dhcpkit_ready.wait()
        while True:
            got = listener.receive()
            if got and self.heard(*got):
                log.info("the modem's RA changed what is served: reloading")
                signal.raise_signal(signal.SIGHUP)


def _when_dhcpkit_handles_sighup(ready: threading.Event) -> None:
    # dhcpkit's main installs its handlers (writing to a wakeup pipe) after
    # loading its config; until then SIGHUP would end the process.
    while signal.getsignal(signal.SIGHUP) in (signal.SIG_DFL, None):
        threading.Event().wait(0.05)
    ready.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the DHCPv6 settings (JSON)")
    parser.add_argument("-v", "--verbosity", action="count", default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: [%(levelname)s] %(message)s")
    try:
        settings = Dhcp6Settings.from_json(json.loads(Path(args.config).read_text()))
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.critical("cannot read %s: %s", args.config, e)
        return 1
    follower = Follower(settings)
    follower.render()
    if follower.aside:
        log.warning("%s", follower.aside)
    listener = RaListener(settings.interface)
    dhcpkit_fixes.apply()
    from dhcpkit.ipv6.server import main as dhcpkit_main

    ready = threading.Event()
    threading.Thread(target=_when_dhcpkit_handles_sighup, args=(ready,), daemon=True).start()
    threading.Thread(target=follower.listen, args=(listener, ready), daemon=True).start()
    try:
        return dhcpkit_main.main([settings.paths.dhcpkit, *(["-" + "v" * args.verbosity] if args.verbosity else [])])
    except Exception as e:  # dhcpkit's own `run` logs and exits 1 the same way
        dhcpkit_main.logger.exception("Error: %s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
