"""Bring a lab up, down, and report on it.

A lab is a topology, pure data: the home network (`topology.LabSpec`) or the
relay's bench (`relaytopology.RelaySpec`) gives its kernel objects, the files
its processes need and the processes. `Lab.up()` is idempotent: it writes the
missing files, reconciles the objects (`appliance.kernel.reconcile`, as the
box's apply does) and starts each process that is not already running with
the same command line; a second call reports no changes. Processes are
started through the kernel, tracked by PID in the lab's run directory and
ended by PID; `down()` also ends anything still running inside the lab's
namespaces before deleting them, so nothing the lab made outlives it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from signal import SIGTERM
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from appliance.kernel import Kernel, KernelError, LinuxKernel
from appliance.kernel.base import Completed
from appliance.kernel.desired import Object
from appliance.kernel.reconcile import reconcile
from appliance.lab.topology import NETNS_ETC, LabFile, LabProcess

RUN_ROOT = Path(os.environ.get("APPLIANCE_LAB_RUN", "/run/appliance-lab"))


class Topology(Protocol):
    prefix: str

    @property
    def namespaces(self) -> list[str]: ...
    @property
    def client_names(self) -> list[str]: ...
    def objects(self) -> list[Object]: ...
    def processes(self, rundir: str) -> list[LabProcess]: ...
    def files(self, rundir: str) -> list[LabFile]: ...


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


# The same for `dhclient -6 -S` (stateless: DNS and search domains only; the
# address comes from SLAAC). It keeps the IPv4 nameservers and adds IPv6's.
_DHCLIENT6_SCRIPT = """#!/bin/sh
case "$reason" in
PREINIT6)
    ip link set dev "$interface" up ;;
INFORM6|BOUND6|RENEW6|REBIND6|REBOOT6)
    grep -v '^nameserver .*:' /etc/resolv.conf > /etc/resolv.conf.v4 2>/dev/null
    cat /etc/resolv.conf.v4 > /etc/resolv.conf; rm -f /etc/resolv.conf.v4
    for d in $new_dhcp6_name_servers; do echo "nameserver $d" >> /etc/resolv.conf; done
    env | grep -E '^(reason|interface|new_[a-z0-9_]+)=' | sort > "{lease_env}" ;;
EXPIRE6|RELEASE6|STOP6)
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
    def __init__(self, spec: Topology, kernel: Kernel | None = None, run_root: Path = RUN_ROOT,
                 netns_etc: Path = Path(NETNS_ETC)):
        self.spec = spec
        self.kernel = kernel or LinuxKernel()
        self.run_root = Path(run_root)
        self.rundir = self.run_root / spec.prefix
        self.netns_etc = Path(netns_etc)

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
        self.rundir.chmod(0o755)  # daemons that drop root read their configs here
        changes = self._write_files(progress)
        changes += reconcile(self.kernel, self.spec.objects(), progress)
        procs = self.spec.processes(str(self.rundir))
        changes += self._ensure_processes(procs, progress)
        self._wait_ready(procs)
        return changes

    def _write_files(self, progress) -> list[str]:
        changes = []
        for f in self.spec.files(str(self.rundir)):
            path = self.netns_etc / f.ns / f.path if f.ns else Path(f.path)
            if path.exists():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            base = Path(f.base).read_text() if f.base else ""
            path.write_text(base + f.text)
            path.chmod(f.mode)
            changes.append(f"+ file {path}")
            if progress:
                progress(changes[-1])
        return changes

    def _ensure_processes(self, procs: list[LabProcess], progress) -> list[str]:
        state = self._load()
        have = state.get("processes", {})
        changes = []
        for p in procs:
            known = have.get(p.name)
            if known and known["argv"] == list(p.argv) and known["ns"] == p.ns and self.kernel.alive(known["pid"]):
                continue
            pid = self._spawn(p)
            line = f"+ process {p.name} in {p.ns} (pid {pid})"
            changes.append(line)
            if progress:
                progress(line)
        return changes

    def _spawn(self, p: LabProcess) -> int:
        state = self._load()
        procs = state.setdefault("processes", {})
        known = procs.get(p.name)
        if known and self.kernel.alive(known["pid"]):
            self.kernel.stop(known["pid"], group=True)
        pid = self.kernel.spawn(p.ns, p.argv, log=str(self.log(p.name)))
        procs[p.name] = {"pid": pid, "ns": p.ns, "argv": list(p.argv)}
        self._save(state)
        return pid

    def log(self, name: str) -> Path:
        """Where a lab process's output goes."""
        return self.rundir / f"{name}.out"

    def _wait_ready(self, procs: list[LabProcess], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        pids = {name: p["pid"] for name, p in self._load().get("processes", {}).items()}
        for p in procs:
            for sock in p.ready:
                proto, _, port = sock.partition("/")
                while not self.kernel.listening(p.ns, proto, int(port)):
                    pid = pids.get(p.name)
                    gone = pid is not None and not self.kernel.alive(pid)
                    if gone or time.monotonic() > deadline:
                        why = "exited" if gone else f"nothing listens on {sock} after {timeout:g}s"
                        raise RuntimeError(f"lab: {p.name} in {p.ns}: {why}; its output "
                                           f"({self.log(p.name)}):\n{_tail(self.log(p.name))}")
                    time.sleep(0.05)

    # -- one process at a time (a test restarting a service) ---------------
    def pid(self, name: str) -> int | None:
        known = self._load().get("processes", {}).get(name)
        return known["pid"] if known else None

    def start(self, p: LabProcess, timeout: float = 30.0) -> int:
        """Start (or restart) one process, tracked like the others, and wait for its sockets."""
        self.rundir.mkdir(parents=True, exist_ok=True)
        pid = self._spawn(p)
        self._wait_ready([p], timeout)
        return pid

    def signal(self, name: str, sig: int) -> bool:
        """Send a signal to a lab process alone (SIGHUP: reload); False if it is not running."""
        pid = self.pid(name)
        return bool(pid) and self.kernel.signal(pid, sig)

    def stop(self, name: str, sig: int = SIGTERM, timeout: float = 5.0) -> None:
        """End a lab process with `sig` (SIGKILL: a crash), SIGKILL after `timeout`;
        returns once it is gone."""
        state = self._load()
        known = state.get("processes", {}).pop(name, None)
        if known is None:
            return
        pid = known["pid"]
        if sig == SIGTERM:
            self.kernel.stop(pid, timeout, group=True)
        elif self.kernel.signal(pid, sig, group=True):
            deadline = time.monotonic() + timeout
            while self.kernel.alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if self.kernel.alive(pid):  # it caught the signal
                self.kernel.stop(pid, timeout, group=True)
        self._save(state)

    # -- down ---------------------------------------------------------------
    def down(self, progress=print) -> list[str]:
        changes = []
        state = self._load()
        for p in state.get("processes", {}).values():
            if self.kernel.alive(p["pid"]):
                self.kernel.stop(p["pid"], group=True)
                changes.append(f"- process {p['pid']}")
        for f in self.rundir.glob("*.dhclient*.pid"):
            text = f.read_text().strip()
            if text.isdigit() and self.kernel.alive(int(text)):
                self.kernel.stop(int(text))
                changes.append(f"- process {text}")
        for ns in self.lab_namespaces():
            # Anything else still running in a lab namespace (a test's
            # dhclient, a capture) would keep it alive: end it by PID.
            for pid in self.kernel.netns_pids(ns):
                self.kernel.stop(pid)
                changes.append(f"- process {pid} in {ns}")
            self.kernel.del_netns(ns)
            changes.append(f"- netns {ns}")
            etc = self.netns_etc / ns
            if etc.is_dir():
                shutil.rmtree(etc, ignore_errors=True)
        if self.rundir.exists():
            shutil.rmtree(self.rundir, ignore_errors=True)
        try:
            self.run_root.rmdir()  # the last lab down leaves no empty /run/appliance-lab
        except OSError:
            pass
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
                clients[c] = self.kernel.addresses(c, "eth0") + [
                    a for a in self.kernel.addresses(c, "eth0", family=6) if not a.startswith("fe80:")]
        wanted = {p.name for p in self.spec.processes(str(self.rundir))}
        return {
            "prefix": self.spec.prefix,
            "namespaces": {n: n in present for n in self.spec.namespaces},
            "extra_namespaces": sorted(set(self.lab_namespaces()) - set(self.spec.namespaces)),
            "processes": procs,
            "clients": clients,
            "up": all(n in present for n in self.spec.namespaces) and all(p["alive"] for p in procs.values())
                  and wanted <= set(procs),
        }

    # -- clients ------------------------------------------------------------
    def run(self, ns: str, argv: list[str], timeout: float = 30, check: bool = False,
            input: str | None = None) -> Completed:
        """Run a command in a lab namespace (with its /etc/netns files)."""
        res = self.kernel.run(ns, argv, timeout=timeout, input=input)
        if check and res.returncode != 0:
            raise KernelError(f"{' '.join(argv)} in {ns} exited with {res.returncode}: "
                              f"{(res.stderr or res.stdout).strip()[-2000:]}")
        return res

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

    def slaac(self, client: str, timeout: float = 15) -> str:
        """Wait until a client holds a usable (DAD done) global address from the RAs
        and a default route; returns the address. SLAAC is the kernel's own."""
        deadline = time.monotonic() + timeout
        while True:
            addrs = self.run(client, ["ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global",
                                      "-tentative"]).stdout.split()
            route = self.run(client, ["ip", "-6", "route", "show", "default"]).stdout
            if "inet6" in addrs and route.strip():
                return addrs[addrs.index("inet6") + 1].split("/")[0]
            if time.monotonic() > deadline:
                raise RuntimeError(f"{client} has no SLAAC address and default route after {timeout:g}s: "
                                   f"{' '.join(addrs) or 'no address'}; {route.strip() or 'no route'}")
            time.sleep(0.1)

    def dhcp6(self, client: str, timeout: float = 20) -> ClientLease:
        """Run `dhclient -6 -S` (stateless DHCPv6: DNS, search domain) once in a client;
        its address stays SLAAC's. The lease's `dns` is what DHCPv6 gave."""
        self.rundir.mkdir(parents=True, exist_ok=True)
        lease_env = self.rundir / f"{client}.lease6.env"
        lease_env.unlink(missing_ok=True)
        script = self.rundir / f"{client}.dhclient6-script"
        script.write_text(_DHCLIENT6_SCRIPT.replace("{lease_env}", str(lease_env)))
        script.chmod(0o755)
        pidfile = self.rundir / f"{client}.dhclient6.pid"
        self.release(client, ipv6=True)
        res = self.run(client, ["dhclient", "-6", "-S", "-1", "-v", "-sf", str(script),
                                "-lf", str(self.rundir / f"{client}.leases6"), "-pf", str(pidfile),
                                "eth0"], timeout=timeout)
        if res.returncode != 0 or not lease_env.exists():
            raise RuntimeError(f"dhclient -6 -S in {client} got no answer:\n{res.stderr[-2000:]}")
        lease = read_lease(client, lease_env)
        lease.dns = lease.raw.get("new_dhcp6_name_servers", "").split()
        lease.server_identifier = lease.raw.get("new_dhcp6_server_id", "")
        return lease

    def release(self, client: str, ipv6: bool = False) -> None:
        pidfile = self.rundir / f"{client}.dhclient{'6' if ipv6 else ''}.pid"
        if pidfile.exists():
            text = pidfile.read_text().strip()
            if text.isdigit() and self.kernel.alive(int(text)):
                self.kernel.stop(int(text))
            pidfile.unlink(missing_ok=True)


def _tail(path: Path, size: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return "(none)"


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
