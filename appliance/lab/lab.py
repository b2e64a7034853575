"""Bring the lab up, down, and report on it.

`Lab.up()` is idempotent: it reconciles the topology from `topology.build`
and starts each lab process that is not already running with the same
command line; a second call reports no changes. Processes are tracked by PID
in the lab's run directory and ended by PID; `down()` also ends anything
still running inside the lab's namespaces before deleting them, so nothing
the lab made outlives it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from appliance.kernel import Kernel, LinuxKernel
from appliance.kernel.linux import listening
from appliance.kernel.reconcile import reconcile
from appliance.lab import topology
from appliance.lab.topology import LabSpec

RUN_ROOT = Path(os.environ.get("APPLIANCE_LAB_RUN", "/run/appliance-lab"))
NETNS_ETC = Path("/etc/netns")

# Clients run Debian's dhclient with this script instead of dhclient-script,
# which would write the host's /etc/resolv.conf. It writes /etc/resolv.conf
# in place (never by rename): under `ip netns exec` that path is the client's
# own /etc/netns/NS/resolv.conf.
_DHCLIENT_SCRIPT = """#!/bin/sh
case "$reason" in
PREINIT)
    ip link set dev "$interface" up ;;
BOUND|RENEW|REBIND|REBOOT)
    if [ -n "$old_ip_address" ] && [ "$old_ip_address" != "$new_ip_address" ]; then
        ip -4 addr flush dev "$interface"
    fi
    ip -4 addr replace "$new_ip_address/$new_subnet_mask" dev "$interface"
    for r in $new_routers; do ip -4 route replace default via "$r" dev "$interface"; break; done
    : > /etc/resolv.conf
    for d in $new_domain_name_servers; do echo "nameserver $d" >> /etc/resolv.conf; done
    env | grep -E '^(reason|interface|new_[a-z_]+)=' | sort > "{lease_env}" ;;
EXPIRE|FAIL|RELEASE|STOP)
    ip -4 addr flush dev "$interface"
    rm -f "{lease_env}" ;;
esac
exit 0
"""


@dataclass
class ClientLease:
    client: str
    address: str
    server_identifier: str
    routers: list[str]
    dns: list[str]
    raw: dict = field(default_factory=dict)


class Lab:
    def __init__(self, spec: LabSpec, kernel: Kernel | None = None, run_root: Path = RUN_ROOT):
        self.spec = spec
        self.kernel = kernel or LinuxKernel()
        self.rundir = Path(run_root) / spec.prefix

    # -- state --------------------------------------------------------------
    def _state_path(self) -> Path:
        return self.rundir / "state.json"

    def _load(self) -> dict:
        try:
            return json.loads(self._state_path().read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {"processes": {}}

    def _save(self, state: dict) -> None:
        self.rundir.mkdir(parents=True, exist_ok=True)
        tmp = self._state_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self._state_path())

    def lab_namespaces(self) -> list[str]:
        """Every namespace this lab's prefix names, including ones the spec no longer lists."""
        return [n for n in self.kernel.list_netns() if n.startswith(self.spec.prefix + "-")]

    # -- up -----------------------------------------------------------------
    def up(self, progress=print) -> list[str]:
        self.rundir.mkdir(parents=True, exist_ok=True)
        for c in self.spec.client_names:
            resolv = NETNS_ETC / c / "resolv.conf"
            if not resolv.exists():
                resolv.parent.mkdir(parents=True, exist_ok=True)
                resolv.write_text("")
        changes = reconcile(self.kernel, topology.build(self.spec), progress)
        changes += self._ensure_processes(progress)
        self._wait_ready()
        return changes

    def _ensure_processes(self, progress) -> list[str]:
        state = self._load()
        procs = state.setdefault("processes", {})
        changes = []
        for p in topology.processes(self.spec, str(self.rundir)):
            have = procs.get(p.name)
            if have and have["argv"] == list(p.argv) and have["ns"] == p.ns and self.kernel.alive(have["pid"]):
                continue
            if have and self.kernel.alive(have["pid"]):
                self.kernel.stop(have["pid"])
            pid = self.kernel.spawn(p.ns, p.argv, log=str(self.rundir / f"{p.name}.out"))
            procs[p.name] = {"pid": pid, "ns": p.ns, "argv": list(p.argv)}
            self._save(state)
            line = f"+ process {p.name} in {p.ns} (pid {pid})"
            changes.append(line)
            if progress:
                progress(line)
        return changes

    def _wait_ready(self, timeout: float = 10.0) -> None:
        want = [(self.spec.internet, "tcp", 80), (self.spec.internet, "udp", 53),
                (self.spec.modem, "udp", 53), (self.spec.modem, "udp", 67)]
        deadline = time.monotonic() + timeout
        for ns, proto, port in want:
            while not listening(ns, proto, port):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"lab: nothing listens on {proto}/{port} in {ns}; "
                                       f"see the logs in {self.rundir}")
                time.sleep(0.05)

    # -- down ---------------------------------------------------------------
    def down(self, progress=print) -> list[str]:
        changes = []
        state = self._load()
        pids = [p["pid"] for p in state.get("processes", {}).values()]
        pids += [int(f.read_text().strip() or 0) for f in self.rundir.glob("*.dhclient.pid")
                 if f.read_text().strip().isdigit()]
        for pid in pids:
            if pid and self.kernel.alive(pid):
                self.kernel.stop(pid)
                changes.append(f"- process {pid}")
        for ns in self.lab_namespaces():
            # Anything else still running in a lab namespace (a test's
            # dhclient, a capture) would keep it alive: end it by PID.
            for pid in self.kernel.netns_pids(ns):
                self.kernel.stop(pid)
                changes.append(f"- process {pid} in {ns}")
            self.kernel.del_netns(ns)
            changes.append(f"- netns {ns}")
            etc = NETNS_ETC / ns
            if etc.is_dir():
                shutil.rmtree(etc, ignore_errors=True)
        if self.rundir.exists():
            shutil.rmtree(self.rundir, ignore_errors=True)
        if progress:
            for c in changes:
                progress(c)
        return changes

    # -- status -------------------------------------------------------------
    def status(self) -> dict:
        present = set(self.kernel.list_netns())
        state = self._load()
        procs = {
            name: {**p, "alive": self.kernel.alive(p["pid"])}
            for name, p in state.get("processes", {}).items()
        }
        clients = {}
        for c in self.spec.client_names:
            if c in present:
                clients[c] = self.kernel.addresses(c, "eth0")
        return {
            "prefix": self.spec.prefix,
            "namespaces": {n: n in present for n in self.spec.namespaces},
            "extra_namespaces": sorted(set(self.lab_namespaces()) - set(self.spec.namespaces)),
            "processes": procs,
            "clients": clients,
            "up": all(n in present for n in self.spec.namespaces) and all(p["alive"] for p in procs.values())
                  and len(procs) == len(topology.processes(self.spec, str(self.rundir))),
        }

    # -- clients ------------------------------------------------------------
    def run(self, ns: str, argv: list[str], timeout: float = 30, check: bool = False) -> subprocess.CompletedProcess:
        """Run a command in a lab namespace (with its /etc/netns files)."""
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                              timeout=timeout, check=check)

    def dhcp(self, client: str, timeout: float = 20) -> ClientLease:
        """Run dhclient in a client until it holds a lease; it keeps renewing in the background."""
        self.rundir.mkdir(parents=True, exist_ok=True)
        lease_env = self.rundir / f"{client}.lease.env"
        script = self.rundir / f"{client}.dhclient-script"
        script.write_text(_DHCLIENT_SCRIPT.replace("{lease_env}", str(lease_env)))
        script.chmod(0o755)
        pidfile = self.rundir / f"{client}.dhclient.pid"
        self.release(client)
        res = self.run(client, ["dhclient", "-4", "-1", "-v", "-sf", str(script),
                                "-lf", str(self.rundir / f"{client}.leases"), "-pf", str(pidfile),
                                "eth0"], timeout=timeout)
        if res.returncode != 0 or not lease_env.exists():
            raise RuntimeError(f"dhclient in {client} got no lease:\n{res.stderr[-2000:]}")
        return read_lease(client, lease_env)

    def release(self, client: str) -> None:
        pidfile = self.rundir / f"{client}.dhclient.pid"
        if pidfile.exists():
            text = pidfile.read_text().strip()
            if text.isdigit() and self.kernel.alive(int(text)):
                self.kernel.stop(int(text))
            pidfile.unlink(missing_ok=True)


def read_lease(client: str, path: Path) -> ClientLease:
    env = {}
    for line in path.read_text().splitlines():
        k, _, v = line.partition("=")
        env[k] = v.strip("'\"")
    return ClientLease(
        client=client,
        address=env.get("new_ip_address", ""),
        server_identifier=env.get("new_dhcp_server_identifier", ""),
        routers=env.get("new_routers", "").split(),
        dns=env.get("new_domain_name_servers", "").split(),
        raw=env,
    )


def parse_dig_answers(output: str) -> list[str]:
    """The addresses in `dig +short` output (CNAME targets are skipped)."""
    return [l for l in output.split() if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", l)]
