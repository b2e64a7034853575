"""The fake-IP relay's lab (issue 7): tests and bench/relay.py use it.

Its topology (`relaytopology.RelaySpec`: client -- vproxy -- internet, a
modem beside) is brought up by `Lab`, as the home lab is: kernel objects by
the reconciler, processes through the kernel, tracked by PID in
/run/appliance-lab/PREFIX. `RelayLab` adds what the relay's tests do: the
fake address of each test domain (from the DNS server, as a client would
ask), the relay's settings file, starting, reloading and killing the relay,
and its control socket. Every name carries a unique prefix; `close()` ends
what it started and removes the namespaces, their /etc/netns files and the
run directory.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

from appliance.kernel.base import Completed, Kernel
from appliance.lab.lab import RUN_ROOT, Lab
from appliance.lab.relaytopology import (  # noqa: F401 - the lab's addresses, for its tests and bench
    CLIENT_IP, CLIENT_IP6, DEAD_PORT, FAKE_RANGE, FAKE_RANGE6, HOME_IP, HTTP_IP, IPERF_PORT, MODEM_IP,
    PASSWORD, PYTHON, ROUTES, SOCKS_IP, TEST_PORT, UDP_ECHO_PORT, UP_IP, USER, WAN_IP, WAN_IP6, WEB_IP,
    WEB_IP6, RelaySpec,
)
from appliance.services.relay.control import query


class RelayLab(Lab):
    ROUTES = ROUTES

    def __init__(self, tag: str | None = None, relay_overrides: dict | None = None,
                 kernel: Kernel | None = None, run_root: Path = RUN_ROOT):
        tag = tag or f"{os.getpid() % 100000}{secrets.token_hex(2)}"
        super().__init__(RelaySpec(prefix=f"r7{tag}"), kernel, run_root)
        self.tag = tag
        self.ns = {role: self.spec.ns(role) for role in ("client", "vproxy", "internet", "modem")}
        self.dir = self.rundir
        paths = self.spec.paths(str(self.rundir))
        self.db, self.control, self.dns_control = paths["db"], paths["control"], paths["dns_control"]
        self.config = Path(paths["config"])
        self.relay_log = self.log("relay")
        self.relay_overrides = relay_overrides or {}
        self.fake: dict[str, str] = {}

    def up(self, progress=None) -> list[str]:
        try:
            changes = super().up(progress)
            for domain in self.ROUTES:
                self.fake[domain] = self.resolve(domain)
            self.write_config()
            self.start_relay()
        except BaseException:
            self.close()
            raise
        return changes

    # -- commands in the lab's namespaces -----------------------------------
    def sh(self, role: str, argv: list[str], check: bool = True, timeout: float = 120,
           input: str | None = None) -> Completed:
        return self.run(self.ns[role], argv, timeout=timeout, check=check, input=input)

    def resolve(self, domain: str) -> str:
        out = self.sh("client", ["dig", "+short", "+time=2", "+tries=2", domain]).stdout.split()
        if not out:
            raise RuntimeError(f"{domain}: no answer from the DNS server")
        return out[-1]

    # -- the relay ------------------------------------------------------------
    def relay_settings(self) -> dict:
        data = self.spec.relay_settings(str(self.rundir))
        data.update(self.relay_overrides)
        return data

    def write_config(self, **changes) -> None:
        data = self.relay_settings()
        data.update(changes)
        self.config.write_text(json.dumps(data, indent=1))

    def start_relay(self, timeout: float = 15) -> None:
        self.start(self.spec.relay(str(self.rundir)), timeout)
        pid = self.pid("relay")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.kernel.alive(pid):
            try:
                if self.query("stats")["pid"]:
                    return
            except (OSError, ValueError):
                time.sleep(0.05)
        raise RuntimeError(f"relay did not start: {self.relay_log.read_text()[-2000:]}")

    def query(self, what: str, **params):
        return query(self.control, what, **params)

    def close(self) -> None:
        self.down(progress=None)

    def __enter__(self) -> "RelayLab":
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
