"""Real dhcpkit (our wrapper, `python -m appliance.services.dhcp.dhcp6`), configured as the
plan configures it and run by the supervisor, in a namespace of our own whose gw0 carries the
modem's MAC and link-local address, with a veth to a client namespace (a bridge br0 where
dhclient -6 runs) and a "modem" namespace on the same bridge, which sends the modem's RAs
from the modem's link-local address.

Nothing leaves these three namespaces. dhclient runs with a script that only writes what it was
given, and its lease and pid files in a temp dir, so nothing on the host is touched.
"""
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from appliance.box.layout import Layout
from appliance.services.identity import DHCP6
from appliance.box.plan import dhcp6_service
from appliance.services.dhcp.dhcpkit_config import Dhcp6Settings, StaticLease6, duid_ll
from appliance.services.dhcp.leases6 import read_leases
from appliance.services.dhcp.ra import router_advert
from appliance.services.health.probes import check
from appliance.services.supervisor import RUNNING, Supervisor

MODEM_MAC = "18:00:00:00:00:e8"
MODEM_LL = "fe80::1a00:ff:fe00:e8"  # its EUI-64 link-local
STATIC_LL, STATIC_LLT = "02:00:00:00:aa:01", "02:00:00:00:aa:02"
REPO = Path(__file__).resolve().parents[4]
SCRIPT = "#!/bin/sh\nenv | grep -E '^(reason|new_)' > \"$0.$$.out\"\n"


def ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def wait_for(predicate, timeout=20.0, what="condition"):
    """Poll until predicate() is truthy: a liveness wait, not a speed check."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not met within {timeout}s")


class Gateway:
    def __init__(self, tmp: Path):
        tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.gw, self.client, self.modem = f"d6{tag}g", f"d6{tag}c", f"d6{tag}m"
        self.tmp = tmp
        layout = Layout(state_dir=str(tmp / "state"), run_dir=str(tmp / "run"))
        # As the plan makes it: DNS and the M flag come from the modem's RA.
        self.settings = Dhcp6Settings(
            server_mac=MODEM_MAC, reply_from=MODEM_LL, dns_servers=(), paths=layout.dhcp6,
            link_address="2001:db8:1::1", domain="home.arpa",
            static_leases=(StaticLease6(STATIC_LL, "2001:db8:1::20"), StaticLease6(STATIC_LLT, "2001:db8:1::21")))
        config, spec = dhcp6_service(self.settings, layout)
        self.files = (config,)
        # The plan names netns gw; ours is uniquely named.
        self.spec = dataclasses.replace(spec, netns=self.gw, probe=dataclasses.replace(spec.probe, netns=self.gw))
        self.sup = Supervisor(tmp / "services")
        self.script = tmp / "dhclient-script"

    def up(self):
        for ns in (self.gw, self.client, self.modem):
            ip("netns", "add", ns)
        ip("-n", self.gw, "link", "add", "gw0", "type", "veth", "peer", "name", "eth0", "netns", self.client)
        ip("-n", self.modem, "link", "add", "lan0", "type", "veth", "peer", "name", "eth1", "netns", self.client)
        ip("-n", self.client, "link", "add", "br0", "type", "bridge")
        for dev in ("eth0", "eth1"):
            ip("-n", self.client, "link", "set", dev, "master", "br0")
            ip("netns", "exec", self.client, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
            ip("-n", self.client, "link", "set", dev, "up")
        # The modem: its MAC, so its link-local is the EUI-64 one gw0 carries too (gw0 answers
        # its DAD here; in the box the flows keep gw0's answers from the modem).
        ip("-n", self.modem, "link", "set", "lan0", "address", MODEM_MAC)
        ip("netns", "exec", self.modem, "sysctl", "-qw", "net.ipv6.conf.lan0.accept_dad=0")
        ip("-n", self.gw, "link", "set", "gw0", "address", MODEM_MAC)
        # gw0 carries the modem's link-local as the box's gw0 does: no address of its own, no DAD.
        for key in ("addr_gen_mode=1", "accept_dad=0", "dad_transmits=0", "accept_ra=0"):
            ip("netns", "exec", self.gw, "sysctl", "-qw", f"net.ipv6.conf.gw0.{key}")
        ip("-n", self.gw, "addr", "add", f"{MODEM_LL}/64", "dev", "gw0", "nodad")
        for ns, dev in ((self.gw, "gw0"), (self.gw, "lo"), (self.client, "lo"), (self.client, "br0"),
                        (self.modem, "lan0"), (self.modem, "lo")):
            ip("-n", ns, "link", "set", dev, "up")
        self.tmp.chmod(0o711)  # the server's own user reaches its directories inside
        for d in {Path(f.path).parent for f in self.files}:
            d.mkdir(parents=True, exist_ok=True)
        # The server's own directories, as the apply makes them (the plan's owners).
        for d in {Path(self.settings.paths.status).parent, Path(self.settings.paths.leases).parent}:
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, DHCP6.uid, DHCP6.gid)
        for f in self.files:
            Path(f.path).write_text(f.content)
        self.script.write_text(SCRIPT)
        self.script.chmod(0o755)

    def down(self):
        try:
            self.sup.stop(self.spec.name)
        finally:
            for ns in (self.gw, self.client, self.modem):
                for pid in ip("netns", "pids", ns, check=False).stdout.split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                ip("netns", "del", ns, check=False)

    def client_mac(self, mac: str) -> None:
        """The client's NIC with this MAC, up, its link-local address usable (DAD done)."""
        ip("-n", self.client, "link", "set", "br0", "down")
        ip("-n", self.client, "link", "set", "br0", "address", mac)
        ip("-n", self.client, "link", "set", "br0", "up")
        wait_for(lambda: "scope link" in (out := ip("-n", self.client, "-6", "addr", "show", "dev", "br0").stdout)
                 and "tentative" not in out, what="the client's link-local address")

    def modem_says(self, **ra) -> dict:
        """The modem multicasts an RA; the server's status once it has followed it."""
        message = router_advert(prefixes=("2001:db8:1::/64",), **ra)
        ip("netns", "exec", self.modem, sys.executable, "-c",
           f"from appliance.kernel.ra import send_ra; send_ra('lan0', bytes.fromhex('{message.hex()}'))")
        status = Path(self.settings.paths.status)
        return wait_for(lambda: (st := json.loads(status.read_text()))["ra"] and st["ra"]["managed"] == ra["managed"]
                        and st, what="the server following the RA")

    def dhclient(self, *flags: str) -> dict:
        """dhclient -6 once in the client namespace; what it handed its script last."""
        tag = secrets.token_hex(3)
        lease_file, pid_file = self.tmp / f"dhclient-{tag}.leases", self.tmp / f"dhclient-{tag}.pid"
        for old in self.tmp.glob("dhclient-script.*.out"):
            old.unlink()
        try:
            p = subprocess.run(["ip", "netns", "exec", self.client, "dhclient", "-6", *flags, "-1", "-v",
                                "-sf", str(self.script), "-lf", str(lease_file), "-pf", str(pid_file), "br0"],
                               capture_output=True, text=True, timeout=60)
        finally:
            if pid_file.exists():  # dhclient stays as a daemon after binding
                try:
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
                except (ProcessLookupError, ValueError, IndexError):
                    pass
        assert p.returncode == 0, p.stderr
        outs = sorted(self.tmp.glob("dhclient-script.*.out"), key=lambda f: f.stat().st_mtime)
        got = {}
        for out in outs:
            got.update(dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line))
        got["log"] = p.stderr
        return got


@pytest.fixture(scope="module")
def gateway():
    tmp = Path(tempfile.mkdtemp(prefix="d6-", dir="/tmp"))  # short: unix socket paths
    g = Gateway(tmp)
    try:
        g.up()
        assert g.sup.start(g.spec) == "started"  # returns once the probe is answered
        status = g.modem_says(managed=True, dns=("2001:db8:1::1",))
        assert status == {"aside": None, "stateful": True, "dns": ["2001:db8:1::1"], "ra": status["ra"]}
        yield g
    finally:
        g.down()
        shutil.rmtree(tmp, ignore_errors=True)


def test_stateless_client_gets_the_modems_dns_and_the_search_domain_from_the_modem(gateway):
    gateway.client_mac("02:00:00:00:bb:01")
    got = gateway.dhclient("-S")
    assert got["new_dhcp6_name_servers"] == "2001:db8:1::1"
    assert got["new_dhcp6_domain_search"] == "home.arpa."
    assert f"Reply message on br0 from {MODEM_LL}" in got["log"]
    server_id = "".join(f"{int(x, 16):02x}" for x in got["new_dhcp6_server_id"].split(":"))
    assert server_id == duid_ll(MODEM_MAC)
    assert "new_ip6_address" not in got


@pytest.mark.parametrize("mac,duid,address", [(STATIC_LL, "LL", "2001:db8:1::20"),
                                              (STATIC_LLT, "LLT", "2001:db8:1::21")])
def test_a_static_lease_is_given_by_the_mac_in_the_clients_duid(gateway, mac, duid, address):
    gateway.client_mac(mac)
    got = gateway.dhclient("-D", duid)
    assert got["new_ip6_address"] == address
    assert got["new_dhcp6_name_servers"] == "2001:db8:1::1"
    client_id = "".join(f"{int(x, 16):02x}" for x in got["new_dhcp6_client_id"].split(":"))
    assert client_id.startswith({"LL": "00030001", "LLT": "00010001"}[duid])
    leases = {str(lease.ip): lease for lease in read_leases(gateway.settings.paths.leases)}
    assert leases[address].mac == mac and leases[address].duid == client_id
    assert leases[address].client_address.startswith("fe80::")
    assert leases[address].expires > time.time() + 86400


def test_the_leases_are_listed_by_the_cli(gateway):
    gateway.client_mac(STATIC_LL)
    gateway.dhclient("-D", "LL")
    out = subprocess.run([sys.executable, "manage.py", "dhcp", "leases6", "--leases6", gateway.settings.paths.leases],
                         capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert re.search(rf"2001:db8:1::20\s+{STATIC_LL}", out), out


def test_the_probe_asks_what_a_client_asks_and_the_supervisor_brings_a_killed_server_back(gateway):
    assert check(gateway.spec.probe).ok
    st = gateway.sup.status(gateway.spec.name)
    assert st.state == RUNNING
    os.kill(st.pid, signal.SIGKILL)
    wait_for(lambda: (s := gateway.sup.status(gateway.spec.name)).state == RUNNING and s.pid != st.pid,
             what="the server running again")
    wait_for(lambda: check(gateway.spec.probe).ok, what="the probe answered again")
    gateway.client_mac("02:00:00:00:bb:02")
    assert gateway.dhclient("-S")["new_dhcp6_name_servers"] == "2001:db8:1::1"
    assert gateway.sup.start(gateway.spec) == "unchanged"


def test_the_server_follows_the_modems_m_flag_and_dns_without_an_apply(gateway):
    status = gateway.modem_says(managed=False, dns=("2001:db8:1::53",))
    assert status["stateful"] is False and status["dns"] == ["2001:db8:1::53"]
    gateway.client_mac("02:00:00:00:bb:03")
    assert gateway.dhclient("-S")["new_dhcp6_name_servers"] == "2001:db8:1::53"
    status = gateway.modem_says(managed=True, dns=("2001:db8:1::1",))
    assert status["stateful"] is True
    gateway.client_mac(STATIC_LL)
    got = gateway.dhclient("-D", "LL")
    assert got["new_ip6_address"] == "2001:db8:1::20" and got["new_dhcp6_name_servers"] == "2001:db8:1::1"
    assert json.loads(Path(gateway.settings.paths.ra).read_text())["dns"] == ["2001:db8:1::1"]


def test_a_stopped_server_fails_its_probe_naming_why(gateway):
    st = gateway.sup.status(gateway.spec.name)
    os.kill(st.pid, signal.SIGSTOP)
    try:
        result = check(gateway.spec.probe)
        assert not result.ok and "no answer within" in result.detail
    finally:
        os.kill(st.pid, signal.SIGCONT)
    wait_for(lambda: check(gateway.spec.probe).ok, what="the probe answered again")
