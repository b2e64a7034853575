"""The modem watch: a service of the box that follows the gateway's MAC (`appliance.box.modem`).

Every `interval`: the frames from the gateway's address that arrived on the
uplink (a passive tap), the uplink's link state (an ARP request from the
admin port after a link change, or when IPv4 from the gateway's address
came with another MAC, until the gateway spoke), then:

- a new MAC believed -> kept (`Layout.gateway_file`) and recorded in the
  box's events (copied into the console's audit log);
- the MAC kept differs from the one applied -> the applied settings are
  applied again (`Box.follow_gateway`, under the box's apply lock, so
  also while the console waits for a confirm: its rollback then plans
  with the kept MAC too); a failure is recorded and tried again. A
  re-apply still running after `APPLY_DEADLINE` ends the process (its
  runner starts it again): the kernel frees the apply lock with it, so a
  hung call (a netlink dump that never ended was seen once under load)
  cannot keep the box from every later apply.

    python -m appliance.box.modemwatch --config RUN/modem-watch.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time

from appliance.box import locate
from appliance.box.modem import Learned, Learner, LinkWatch, WatchConfig
from appliance.box.runtime import Box
from appliance.kernel import KernelError
from appliance.kernel.arp import GatewayTap
from appliance.kernel.devices import LinuxDevices
from appliance.kernel.linux import LinuxKernel
from appliance.services.health import record

log = logging.getLogger("modem-watch")
SERVICE = "gateway"
RETRY_AFTER = 10.0  # s: a failed re-apply is tried again after this
# s: an apply takes about 1 s, a cold first one under load a few. Short enough that a hung
# re-apply, ended and tried again by the restarted watch, still follows the modem within 30 s.
APPLY_DEADLINE = 15.0
EXIT_HUNG = 75  # EX_TEMPFAIL
CHECK_EVERY = 10.0  # s: the applied MAC compared with the kept one even without news


class ModemWatch:
    def __init__(self, cfg: WatchConfig, box: Box, tap, devices=None, on_hang=None,
                 deadline: float = APPLY_DEADLINE):
        self.cfg, self.box, self.tap = cfg, box, tap
        self.on_hang = on_hang or self._exit_hung
        self.deadline = deadline
        self.devices = devices or LinuxDevices()
        kept = box.learned_gateway()
        applied = box.applied()
        current = kept.mac if kept and kept.ip == cfg.gateway_ip else (
            applied.observed.gateway_mac if applied else None)
        self.learner = Learner(current)
        # The link as the last run of the watch read it: a modem swapped while it was
        # down (restarted, or the box re-applying) is a link change all the same.
        self.link = LinkWatch()
        try:
            seen = json.loads(box.fs.read(cfg.link_file) or "null") if cfg.link_file else None
            if seen:
                self.link.ifindex, self.link.changes = int(seen["ifindex"]), int(seen["changes"])
        except (ValueError, KeyError, TypeError):
            pass
        self.next_check = 0.0

    def event(self, what: str, detail: str) -> None:
        log.info("%s: %s", what, detail)
        try:
            record.append_event(self.cfg.events, record.Event(SERVICE, what, detail))
        except OSError as e:
            log.warning("event not recorded: %s", e)

    def read_link(self, now: float) -> None:
        try:
            dev = next((d for d in self.devices.devices(self.cfg.host_ns) if d.name == self.cfg.uplink), None)
        except KernelError as e:
            log.warning("link state: %s", e)
            return
        if dev is None:
            self.link.update(False, None, now)
            return
        before = (self.link.ifindex, self.link.changes)
        if self.link.update(dev.carrier, dev.ifindex, now, dev.carrier_changes):
            log.info("%s: link changed; asking for %s", self.cfg.uplink, self.cfg.gateway_ip)
        if self.cfg.link_file and (self.link.ifindex, self.link.changes) != before:
            self.box.fs.write(self.cfg.link_file, json.dumps({"ifindex": dev.ifindex, "changes": dev.carrier_changes}))
        if self.link.due(now):
            try:
                self.box.kernel.arp_request(self.cfg.host_ns, self.cfg.admin_dev, self.cfg.admin_ip,
                                            self.cfg.gateway_ip)
            except KernelError as e:
                log.warning("ARP request: %s", e)

    def round(self) -> None:
        now = time.monotonic()
        self._round(now)
        # A round takes an interval even when the tap has a frame at once: under steady
        # traffic from the gateway (the box's own DNS to it, thousands a second) the rounds,
        # and their netlink dump of the devices, ran back to back and took half a core. The
        # frames meanwhile wait in the tap's socket (what does not fit is dropped: a sample).
        rest = now + self.cfg.interval - time.monotonic()
        if rest > 0:
            time.sleep(rest)

    def _round(self, now: float) -> None:
        for s in self.tap.read(self.cfg.interval):
            old = self.learner.current
            new = self.learner.saw(s.mac, s.arp, time.monotonic())
            if s.mac == self.learner.current:
                self.link.heard()
            if new:
                kept = Learned(self.cfg.gateway_ip, new, "arp" if s.arp else "ip", time.time())
                self.box.fs.write(self.cfg.learned, kept.to_json())
                self.event("mac-changed", f"the gateway {self.cfg.gateway_ip} is at {new} now"
                           f" (was {old or 'unknown'}; seen by {kept.how} on {self.cfg.uplink})")
                self.next_check = 0.0
        if self.learner.doubt:
            self.learner.doubt = False
            if self.link.ask(now):
                log.info("IPv4 from %s with another MAC; asking by ARP", self.cfg.gateway_ip)
        self.read_link(now)
        if time.monotonic() >= self.next_check:
            self.follow()

    def _exit_hung(self) -> None:
        self.event("re-apply-hung", f"no end after {self.deadline:g} s; the watch restarts")
        logging.shutdown()
        os._exit(EXIT_HUNG)

    def follow(self) -> None:
        self.next_check = time.monotonic() + CHECK_EVERY
        self.timer = timer = threading.Timer(self.deadline, self.on_hang)
        timer.daemon = True
        timer.start()
        try:
            res = self.box.follow_gateway(progress=lambda line: log.info("apply: %s", line))
        except Exception as e:  # noqa: BLE001 - recorded; tried again
            res, error = None, f"{type(e).__name__}: {e}"
            self.event("re-apply-failed", error)
            self.next_check = time.monotonic() + RETRY_AFTER
            return
        finally:
            timer.cancel()
        if res is None:
            return
        mac = self.learner.current
        if res.ok:
            self.event("re-applied", f"virtual gateway, flows and guards now use {mac}"
                       f" ({len(res.changes)} change(s))")
        else:
            self.event("re-apply-failed", f"{res.error}; {'the previous state runs' if res.restored else ''}")
            self.next_check = time.monotonic() + RETRY_AFTER


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.box.modemwatch", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s modem-watch %(message)s", stream=sys.stderr)
    with open(opts.config) as f:
        cfg = WatchConfig.from_json(json.load(f))
    # A socket per call, not one per namespace for a whole apply: in this long-lived process a
    # re-apply's reused socket sometimes never saw its dump's answer (its event loop's epoll had
    # lost the socket while the kernel held the reply: 1 run in 4-6 of the replaced-modem test
    # hung until the deadline; none in 20 without reuse). The watch's re-apply is not the one a
    # user waits on, so it pays the few ms a socket costs.
    box = locate.box(cfg.host_ns, cfg.state_dir or None, cfg.run_dir or None,
                     env={locate.SERVICES: cfg.runner}, kernel=LinuxKernel(reuse_sockets=False))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with GatewayTap(cfg.host_ns, cfg.uplink, cfg.gateway_ip) as tap:
        watch = ModemWatch(cfg, box, tap)
        log.info("watching %s on %s (now %s)", cfg.gateway_ip, cfg.uplink, watch.learner.current or "unknown")
        while True:
            watch.round()


if __name__ == "__main__":
    sys.exit(main())
