"""Real Kea DHCPv4, configured by the box's plan and run by the supervisor,
in a namespace of our own whose gw0 carries the gateway's IP and MAC, with
a veth to a client namespace where dhclient and perfdhcp run.

Nothing leaves these two namespaces. dhclient runs with `-sf /bin/true`
and its lease file in a temp dir, so nothing on the host is touched.
"""
import dataclasses
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

from appliance.box.files import RealFileSystem
from appliance.box.plan import Layout, Observed, plan
from appliance.box.settings import default_settings, parse_settings, to_data
from appliance.services.dhcp.kea import KeaControl, KeaError, check_config
from appliance.services.supervisor import RUNNING, Supervisor


GW_MAC = "18:00:00:00:00:e8"
STATIC_MAC = "02:00:00:00:aa:01"
REPO = Path(__file__).resolve().parents[4]


def ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def wait_for(predicate, timeout=20.0):
    """Poll until predicate() is truthy: a liveness wait, not a speed check."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (KeaError, OSError) as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout}s (last error: {last})")


class Box:
    def __init__(self, tmp: Path):
        tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.gw, self.client = f"kt{tag}g", f"kt{tag}c"
        self.tmp = tmp
        data = to_data(default_settings("enp5s0", "enp1s0", gateway={"ip": "192.168.1.1", "mac": GW_MAC}))
        data["dhcp"]["static_leases"] = [{"mac": STATIC_MAC, "ip": "192.168.1.20", "hostname": "nas"}]
        data["dhcp"]["options"] = {"domain": "home.arpa", "ntp": ["192.168.1.8"]}
        self.settings = parse_settings(data)
        self.plan = plan(self.settings, Observed.of({"enp5s0": "5c:00:00:00:00:7d", "enp1s0": "5c:00:00:00:00:7c"}),
                         Layout(state_dir=str(tmp / "state"), run_dir=str(tmp / "run")))
        # The plan names netns gw; ours is uniquely named.
        self.spec = dataclasses.replace(self.plan.services[0], netns=self.gw)
        self.sup = Supervisor(tmp / "services")
        self.socket = str(tmp / "run" / "dhcp" / "kea4.sock")
        self.control = KeaControl(self.socket)

    def up(self):
        ip("netns", "add", self.gw)
        ip("netns", "add", self.client)
        ip("-n", self.gw, "link", "add", "gw0", "type", "veth", "peer", "name", "eth0", "netns", self.client)
        ip("-n", self.gw, "link", "set", "gw0", "address", GW_MAC)
        ip("-n", self.gw, "addr", "add", "192.168.1.1/24", "dev", "gw0")
        for ns, dev in ((self.gw, "gw0"), (self.gw, "lo"), (self.client, "eth0"), (self.client, "lo")):
            ip("-n", ns, "link", "set", dev, "up")
        # What the apply layer does with the plan's files part: Kea runs as its own user,
        # so its directories are its own and the way to them is open.
        self.tmp.chmod(0o755)
        fs = RealFileSystem()
        for d in self.plan.directories:
            fs.mkdir(d)
        for path, uid, gid, mode in self.plan.owners:
            fs.mkdir(path)
            fs.own(path, uid, gid, mode)
        for f in self.plan.files:
            fs.write(f.path, f.content, f.mode, f.owner)

    def start_kea(self):
        result = self.sup.start(self.spec)
        wait_for(lambda: self.control.status())
        return result

    def down(self):
        try:
            self.sup.stop(self.spec.name)
        finally:
            for ns in (self.gw, self.client):
                for pid in ip("netns", "pids", ns, check=False).stdout.split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                ip("netns", "del", ns, check=False)

    def dhclient(self, mac: str | None = None) -> dict:
        """Run dhclient once in the client namespace; the lease's options."""
        if mac:
            ip("-n", self.client, "link", "set", "eth0", "address", mac)
        tag = secrets.token_hex(3)
        lease_file, pid_file = self.tmp / f"dhclient-{tag}.leases", self.tmp / f"dhclient-{tag}.pid"
        try:
            p = subprocess.run(["ip", "netns", "exec", self.client, "dhclient", "-1", "-v",
                                "-sf", "/bin/true", "-lf", str(lease_file), "-pf", str(pid_file), "eth0"],
                               capture_output=True, text=True, timeout=60)
        finally:
            if pid_file.exists():  # dhclient stays as a daemon after binding
                try:
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
                except (ProcessLookupError, ValueError, IndexError):
                    pass
        assert p.returncode == 0, p.stderr
        text = lease_file.read_text()
        lease = {"fixed-address": re.findall(r"fixed-address ([\d.]+);", text)[-1]}
        for name, value in re.findall(r"option ([\w-]+) (.*);", text):
            lease[name] = value.strip('"')
        return lease


@pytest.fixture(scope="module")
def box():
    tmp = Path(tempfile.mkdtemp(prefix="kea-", dir="/tmp"))  # short: unix socket paths
    b = Box(tmp)
    try:
        b.up()
        b.start_kea()
        yield b
    finally:
        b.down()
        shutil.rmtree(tmp, ignore_errors=True)


def test_the_real_config_passes_kea_check_in_the_namespace(box):
    assert check_config(box.plan.files[0].content, netns=box.gw) == []


def test_dhclient_gets_a_lease_naming_the_gateway_for_everything(box):
    lease = box.dhclient("02:00:00:00:bb:01")
    start, end = (int(str(x).rsplit(".", 1)[1]) for x in (box.settings.dhcp.pools[0].start,
                                                          box.settings.dhcp.pools[0].end))
    assert start <= int(lease["fixed-address"].rsplit(".", 1)[1]) <= end
    assert lease["dhcp-server-identifier"] == "192.168.1.1"
    assert lease["routers"] == "192.168.1.1"
    assert lease["domain-name-servers"] == "192.168.1.1"
    assert lease["domain-name"] == "home.arpa"
    assert lease["subnet-mask"] == "255.255.255.0"


def test_a_static_lease_gets_its_reserved_address(box):
    lease = box.dhclient(STATIC_MAC)
    assert lease["fixed-address"] == "192.168.1.20"
    assert lease["dhcp-server-identifier"] == "192.168.1.1"


def test_leases_are_listed_through_the_control_socket(box):
    box.dhclient("02:00:00:00:bb:02")
    leases = {x.mac: x for x in box.control.leases()}
    assert "02:00:00:00:bb:02" in leases
    assert str(leases["02:00:00:00:bb:02"].ip).startswith("192.168.1.")
    assert box.control.config()["Dhcp4"]["interfaces-config"]["interfaces"] == ["gw0"]
    out = subprocess.run([sys.executable, "manage.py", "dhcp", "leases", "--socket", box.socket],
                         capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert "02:00:00:00:bb:02" in out and str(leases["02:00:00:00:bb:02"].ip) in out


def test_leases_survive_a_kea_restart(box):
    box.dhclient("02:00:00:00:bb:03")
    before = {(str(x.ip), x.mac) for x in box.control.leases()}
    assert any(mac == "02:00:00:00:bb:03" for _, mac in before)
    box.sup.stop(box.spec.name)
    with pytest.raises(KeaError):
        box.control.status()
    assert "02:00:00:00:bb:03" in Path(box.plan.files[0].path).with_name("dhcp4.leases").read_text()
    assert box.start_kea() == "started"
    after = {(str(x.ip), x.mac) for x in box.control.leases()}
    assert after == before
    # The client renewing gets the same address back.
    lease = box.dhclient("02:00:00:00:bb:03")
    assert (lease["fixed-address"], "02:00:00:00:bb:03") in before


def test_supervisor_brings_a_killed_kea_back(box):
    before = {(str(x.ip), x.mac) for x in box.control.leases()}
    st = box.sup.status(box.spec.name)
    assert st.state == RUNNING
    os.kill(st.pid, signal.SIGKILL)
    new = wait_for(lambda: (s := box.sup.status(box.spec.name)).state == RUNNING and s.pid != st.pid and s)
    assert new.restarts == st.restarts + 1 and "SIGKILL" in new.last_error
    wait_for(lambda: box.control.status())
    assert {(str(x.ip), x.mac) for x in box.control.leases()} == before
    assert box.sup.start(box.spec) == "unchanged"


def test_perfdhcp_straight_to_kea(box):
    # perfdhcp acts as a relay and needs an address: one outside the pool.
    ip("-n", box.client, "addr", "add", "192.168.1.250/24", "dev", "eth0")
    try:
        p = subprocess.run(["ip", "netns", "exec", box.client, "perfdhcp", "-4", "-l", "eth0",
                            "-r", "100", "-R", "30", "-n", "60", "-p", "20"],
                           capture_output=True, text=True, timeout=60)
    finally:
        ip("-n", box.client, "addr", "del", "192.168.1.250/24", "dev", "eth0", check=False)
    stats = re.findall(r"Statistics for: ([A-Z-]+)\*+\nsent packets: (\d+)\nreceived packets: (\d+)", p.stdout)
    got = {name: (int(sent), int(received)) for name, sent, received in stats}
    assert set(got) == {"DISCOVER-OFFER", "REQUEST-ACK"}, p.stdout + p.stderr
    assert got["REQUEST-ACK"][1] > 0 and got["DISCOVER-OFFER"][1] > 0
