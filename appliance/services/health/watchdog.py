"""The box's watchdog: probe every service, keep the datapath's heartbeat, restart what hangs.

One process per box, itself a service of the plan (`watchdog`, last of the
services, in the box's host namespace), run by the same runner as the
others: the supervisor in the lab and the demo, systemd on the image. Why
one process of its own rather than a probe in each supervisor monitor:

- the heartbeat map has one writer, and one round of probes decides every
  bit of the health register together;
- it works the same under both runners: under systemd there is no monitor
  of ours, only units; the watchdog restarts a service through the runner
  that runs it (`kill`: the runner's own restart policy starts it again);
- its own liveness is watched the systemd way (`WatchdogSec=`, sd_notify
  `WATCHDOG=1` every round), which the supervisor's monitor implements too,
  and the datapath needs no one: without heartbeats it falls open by itself.

Every `interval` seconds: all probes at once (each bounded by its own
timeout), then the verdicts (`Probe.fall`, `rise`, `restart_after`), the
heartbeat (`heartbeat.HealthMap`), the relay's state told to the DNS server
(relay down: real addresses instead of fake ones), the status file, and an
event for every transition.

    python -m appliance.services.health --config RUN/health-watchdog.json
"""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from appliance.services.health import record
from appliance.services.health.heartbeat import HealthMap
from appliance.services.health.probes import Probe, ProbeResult, check

HEALTHY, UNHEALTHY, UNKNOWN = "healthy", "unhealthy", "unknown"
# After a restart, this long before the next one, doubled for each restart
# the service has not come back healthy from, up to RESTART_GRACE_MAX.  A
# service that needs longer than the grace to start (a slow board, the 6.1
# image under emulation: the DNS server compiling its BPF) was otherwise
# killed every 5 s while it started, until its runner gave up on it (the
# start limit: 10 deaths within 100 s) and it stayed down.
RESTART_GRACE = 5.0
RESTART_GRACE_MAX = 60.0


@dataclass(frozen=True)
class WatchedService:
    name: str
    probe: Probe


@dataclass(frozen=True)
class WatchdogConfig:
    services: tuple[WatchedService, ...]
    heartbeat: str  # the pinned dp_health map
    status: str
    events: str
    runner: dict  # {"kind": "supervisor", "dir": ...} or {"kind": "systemd"}
    dns_control: str = ""  # told whether the relay is up
    relay: str = "relay"  # the service whose health decides fake or real answers
    failsafe: str = "open"
    interval: float = 0.25
    stale_after: float = 3.0

    def to_json(self) -> dict:
        return {"services": [{"name": s.name, "probe": s.probe.to_json()} for s in self.services],
                "heartbeat": self.heartbeat, "status": self.status, "events": self.events,
                "runner": dict(self.runner), "dns_control": self.dns_control, "relay": self.relay,
                "failsafe": self.failsafe, "interval": self.interval, "stale_after": self.stale_after}

    @classmethod
    def from_json(cls, data: dict) -> "WatchdogConfig":
        data = dict(data)
        data["services"] = tuple(WatchedService(s["name"], Probe.from_json(s["probe"])) for s in data["services"])
        return cls(**data)


@dataclass
class Health:
    """What the watchdog knows of one service."""

    name: str
    probe: Probe
    state: str = UNKNOWN
    failures: int = 0  # in a row
    successes: int = 0
    last_failure: str = ""
    last_failure_at: float | None = None  # wall clock
    last_detail: str = ""
    seconds: float = 0.0  # the last probe's duration
    since: float = field(default_factory=time.time)
    restarts: int = 0  # made by the watchdog
    restart_not_before: float = 0.0  # monotonic
    restart_streak: int = 0  # restarts since it was last healthy

    def to_json(self) -> dict:
        return {"state": self.state, "failures": self.failures, "last_failure": self.last_failure,
                "last_failure_at": self.last_failure_at, "detail": self.last_detail,
                "seconds": round(self.seconds, 4), "since": self.since, "restarts": self.restarts,
                "bit": self.probe.bit}


def runner_from(spec: dict):
    """The service runner named in the config: the one that runs the box's services."""
    if spec.get("kind") == "systemd":
        from appliance.services.units import SystemdUnits

        return SystemdUnits()
    from appliance.services.supervisor import Supervisor

    return Supervisor(spec["dir"])


class Watchdog:
    def __init__(self, config: WatchdogConfig, runner=None, heartbeat: HealthMap | None = None,
                 prober: Callable[[Probe], ProbeResult] = check, tell_dns: Callable[[bool], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self.config = config
        self.runner = runner if runner is not None else runner_from(config.runner)
        self.heartbeat = heartbeat if heartbeat is not None else HealthMap(config.heartbeat)
        self.prober = prober
        self.tell_dns = tell_dns if tell_dns is not None else self._tell_dns
        self.clock = clock
        self.wall = wall
        self.health = {s.name: Health(s.name, s.probe, since=wall()) for s in config.services}
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(config.services)), thread_name_prefix="probe")
        self._restarting: set[str] = set()
        self._lock = threading.Lock()
        self._told: bool | None = None  # what the DNS server was last told about the relay
        self._told_at = float("-inf")
        self.datapath = False  # whether a datapath took the last heartbeat
        self.register = 0

    # -- one round ------------------------------------------------------------
    def round(self) -> None:
        futures = {name: self._pool.submit(self.prober, h.probe) for name, h in self.health.items()}
        for name, fut in futures.items():
            self._judge(self.health[name], fut.result())
        bits = {h.probe.bit: h.state == HEALTHY for h in self.health.values() if h.probe.bit is not None}
        self.register = sum(1 << b for b, ok in bits.items() if ok)
        try:
            self.datapath = self.heartbeat.write(bits, self.config.stale_after)
        except OSError as e:  # the pin went away under us (a teardown): no datapath to steer
            self.datapath = False
            self._event("watchdog", "heartbeat", f"cannot write the heartbeat: {e}")
        self._relay_to_dns()
        record.write_status(self.config.status, self.status())

    def status(self) -> dict:
        return {"monotonic": self.clock(), "time": self.wall(), "pid": os.getpid(),
                "failsafe": self.config.failsafe, "register": self.register, "datapath": self.datapath,
                "stale_after": self.config.stale_after,
                "services": {n: h.to_json() for n, h in self.health.items()}}

    def _judge(self, h: Health, res: ProbeResult) -> None:
        h.seconds = res.seconds
        h.last_detail = res.detail
        p = h.probe
        if res.ok:
            h.successes += 1
            h.failures = 0
            if h.state == UNKNOWN or (h.state == UNHEALTHY and h.successes >= p.rise):
                self._transition(h, HEALTHY, res.detail)
            if h.state == HEALTHY:
                # Up: the wait was for its start, and the next restart's starts at 5 s again.
                h.restart_streak = 0
                h.restart_not_before = 0.0
            return
        if res.aside:  # the service lets the modem serve: no fault, nothing to restart
            h.failures = h.successes = 0
            if h.state != UNHEALTHY:
                self._transition(h, UNHEALTHY, res.detail)
            return
        h.failures += 1
        h.successes = 0
        h.last_failure, h.last_failure_at = res.detail, self.wall()
        if h.state != UNHEALTHY and h.failures >= p.fall:
            self._transition(h, UNHEALTHY, res.detail)
        if h.failures >= p.restart_after and self.clock() >= h.restart_not_before:
            self._restart(h, res.detail)

    def _transition(self, h: Health, state: str, detail: str) -> None:
        before, h.state, h.since = h.state, state, self.wall()
        if before == UNKNOWN and state == HEALTHY:
            return  # the start of watching is no news
        self._event(h.name, state, f"{detail}; {self._consequence(h, state)}")

    def _consequence(self, h: Health, state: str) -> str:
        bit = h.probe.bit
        if h.name == self.config.relay:
            return "the DNS server answers real addresses" if state == UNHEALTHY \
                else "the DNS server answers fake addresses again"
        if bit is None or self.config.failsafe != "open":
            return "no fail-open for it" if state == UNHEALTHY else "back"
        what = {0: "DNS goes to the modem", 1: "the modem's DHCP reaches the home",
                3: "the modem's DHCPv6 reaches the home"}.get(bit, f"health bit {bit} off")
        return f"failed open: {what}" if state == UNHEALTHY else "the box serves it again"

    def _restart(self, h: Health, why: str) -> None:
        with self._lock:
            if h.name in self._restarting:
                return
            self._restarting.add(h.name)
        h.restart_not_before = self.clock() + min(RESTART_GRACE * 2 ** h.restart_streak, RESTART_GRACE_MAX)
        h.restart_streak += 1
        h.restarts += 1
        self._event(h.name, "restart", f"{h.failures} probes failed in a row ({why}): "
                                       "killed; its runner starts it again")

        def kill() -> None:
            try:
                self.runner.kill(h.name)
            except Exception as e:  # noqa: BLE001 - a failed kill is news, not the watchdog's end
                self._event(h.name, "restart-failed", f"{type(e).__name__}: {e}")
            finally:
                with self._lock:
                    self._restarting.discard(h.name)

        threading.Thread(target=kill, name=f"kill-{h.name}", daemon=True).start()

    # -- the relay's state, for the DNS server --------------------------------------
    def _relay_to_dns(self) -> None:
        relay = self.health.get(self.config.relay)
        if relay is None or not self.config.dns_control:
            return
        up = relay.state != UNHEALTHY
        # Said again every few seconds: a DNS server that restarted starts with fake addresses on.
        if up == self._told and self.clock() - self._told_at < 5.0:
            return
        try:
            self.tell_dns(up)
        except (OSError, ValueError):
            self._told = None
            return
        self._told, self._told_at = up, self.clock()

    def _tell_dns(self, up: bool) -> None:
        from appliance.services.dns.control import DnsControl

        with DnsControl(self.config.dns_control, timeout=0.5) as c:
            c.call("relay", up=up)

    def _event(self, service: str, what: str, detail: str) -> None:
        try:
            record.append_event(self.config.events, record.Event(service, what, detail, self.wall()))
        except OSError:
            pass  # a full or read-only state directory must not stop the heartbeat

    # -- the loop -------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        self._event("watchdog", "watchdog-start",
                    f"watching {', '.join(self.health)}; failsafe {self.config.failsafe}")
        first = True
        while not stop.is_set():
            started = self.clock()
            self.round()
            sd_notify("READY=1\nWATCHDOG=1" if first else "WATCHDOG=1")
            first = False
            stop.wait(max(0.0, self.config.interval - (self.clock() - started)))
        self._pool.shutdown(wait=False)


def sd_notify(message: str) -> None:
    """Tell systemd (or the supervisor's monitor, which speaks the same) how we are."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.connect(path)
            s.send(message.encode())
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m appliance.services.health")
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    with open(args.config) as f:
        config = WatchdogConfig.from_json(json.load(f))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # Heartbeats are left as they are on the way out: a watchdog restarted
    # by an apply is back before they go stale, and the services did not
    # become unhealthy because it stopped.
    Watchdog(config).run(stop)
    return 0
