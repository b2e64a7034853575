"""The watchdog's verdicts, heartbeat, restarts and record, with the kernel's BPF fake and a scripted prober."""
import time

import pytest

from appliance.kernel.bpf import ARRAY, MapSpec
from appliance.kernel.fake_bpf import FakeBpf
from appliance.services.health import record
from appliance.services.health.heartbeat import HealthMap
from appliance.services.health.probes import Probe, ProbeResult, dns_query
from appliance.services.health.watchdog import (HEALTHY, UNHEALTHY, WatchdogConfig,
                                                WatchedService, Watchdog)
from appliance.switch.datapath import contract as C

PIN = "/sys/fs/bpf/appliance/host/vswitch/dp_health"


class Runner:
    def __init__(self):
        self.killed = []

    def kill(self, name):
        self.killed.append(name)


class Prober:
    """Each service answers while it is in `up`."""

    def __init__(self, *up):
        self.up = set(up)

    def __call__(self, probe):
        return ProbeResult(probe.target in self.up, "answered" if probe.target in self.up else "no answer within 0.5s")


@pytest.fixture
def dog(tmp_path):
    bpf = FakeBpf(maps={"dp_health": MapSpec(ARRAY, 4, C.HEALTH.size, 1)})
    obj_file = tmp_path / "dp.o"
    obj_file.write_bytes(b"")
    with bpf.load(str(obj_file), ("dp_ingress",)) as obj:
        bpf.make_pin_dir(PIN.rsplit("/", 1)[0])
        bpf.pin(obj.map_fd("dp_health"), PIN)
    config = WatchdogConfig(
        services=(WatchedService("dns", Probe("dns", "dns", bit=0, fall=1, rise=2, restart_after=3)),
                  WatchedService("dhcp4", Probe("kea", "dhcp4", bit=1, fall=2, rise=2, restart_after=8)),
                  WatchedService("relay", Probe("relay", "relay", bit=2, fall=2, rise=2, restart_after=8))),
        heartbeat=PIN, status=str(tmp_path / "health.json"), events=str(tmp_path / "events.jsonl"),
        runner={"kind": "supervisor", "dir": str(tmp_path)}, dns_control="x")
    told = []
    prober = Prober("dns", "dhcp4", "relay")
    w = Watchdog(config, runner=Runner(), heartbeat=HealthMap(PIN, bpf), prober=prober, tell_dns=told.append)
    w.bpf, w.told, w.probes = bpf, told, prober
    return w


def register(w) -> int:
    return w.heartbeat.bits()


def wait_killed(w, n):
    deadline = time.monotonic() + 5
    while len(w.runner.killed) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return w.runner.killed


def test_healthy_services_keep_their_bits_fresh_and_stale_ones_clear_by_themselves(dog):
    dog.round()
    assert register(dog) == 0b111 and dog.status()["register"] == 0b111
    now = time.monotonic_ns()
    assert dog.heartbeat.bits(now + int(2.9e9)) == 0b111
    assert dog.heartbeat.bits(now + int(3.1e9)) == 0, "no heartbeat for 3 s: the datapath falls open by itself"


def test_a_failed_dns_probe_clears_its_bit_at_once_and_a_hang_is_restarted(dog, tmp_path):
    dog.round()
    dog.probes.up.discard("dns")
    dog.round()
    assert register(dog) == 0b110 and dog.health["dns"].state == UNHEALTHY
    dog.round()
    assert dog.runner.killed == []
    dog.round()  # the third failure in a row
    assert wait_killed(dog, 1) == ["dns"]
    dog.round()
    assert wait_killed(dog, 1) == ["dns"], "one restart, then a grace period"
    dog.probes.up.add("dns")
    dog.round()
    assert register(dog) == 0b110, "one good answer is not yet healthy (rise=2)"
    dog.round()
    assert register(dog) == 0b111 and dog.health["dns"].state == HEALTHY
    events = [(e.service, e.what) for e in record.read_events(str(tmp_path / "events.jsonl"))]
    assert events == [("dns", "unhealthy"), ("dns", "restart"), ("dns", "healthy")]
    assert "failed open: DNS goes to the modem" in record.read_events(str(tmp_path / "events.jsonl"))[0].detail
    st = record.read_status(str(tmp_path / "health.json"))
    assert st["services"]["dns"]["last_failure"] == "no answer within 0.5s" and st["services"]["dns"]["restarts"] == 1


def test_kea_falls_open_after_two_misses(dog):
    dog.round()
    dog.probes.up.discard("dhcp4")
    dog.round()
    assert register(dog) == 0b111
    dog.round()
    assert register(dog) == 0b101


def test_the_dns_server_is_told_when_the_relay_is_down_and_up_again(dog):
    dog.round()
    assert dog.told == [True]
    dog.probes.up.discard("relay")
    dog.round()
    dog.round()
    assert dog.told == [True, False]
    dog.probes.up.add("relay")
    dog.round()
    dog.round()
    assert dog.told == [True, False, True]


def test_no_datapath_no_heartbeat_and_no_error(dog):
    dog.bpf.unpin(PIN)
    dog.round()
    assert dog.status()["datapath"] is False and dog.heartbeat.bits() is None


def test_the_dns_probe_asks_a_real_question():
    q = dns_query(0x1234, "appliance-probe.lan")
    assert q[:4] == b"\x12\x34\x01\x00" and b"\x0fappliance-probe\x03lan\x00\x00\x01\x00\x01" in q


def test_a_service_standing_aside_clears_its_bit_at_once_and_is_never_restarted(dog, tmp_path):
    class Aside(Prober):
        def __call__(self, probe):
            if probe.target == "dhcp4":
                return ProbeResult(False, "the modem's RA asks for DHCPv6 addresses", aside=True)
            return super().__call__(probe)

    dog.prober = Aside("dns", "dhcp4", "relay")
    for _ in range(12):
        dog.round()
    assert register(dog) == 0b101 and dog.health["dhcp4"].state == UNHEALTHY
    assert dog.runner.killed == []
    (event,) = record.read_events(str(tmp_path / "events.jsonl"))
    assert event.what == "unhealthy" and "the modem's RA asks for DHCPv6 addresses" in event.detail


def test_a_service_slow_to_start_gets_longer_each_restart_and_is_never_killed_into_its_start_limit(dog):
    """A DNS server that takes 30 s to answer after each start: restarted after 5 s, then 10,
    20, 40 s, so it comes up; the waits start again at 5 s once it is healthy. Killed every
    5 s instead, it died 10 times in 100 s and its runner gave up on it."""
    now = [1000.0]
    dog.clock = lambda: now[0]
    dog.round()
    dog.probes.up.discard("dns")
    kills = []
    for _ in range(400):  # a round every 0.5 s
        now[0] += 0.5
        dog.round()
        if dog.health["dns"].restarts > len(kills):  # (counted as the kill is ordered)
            kills.append(now[0])
        if len(kills) == 5:
            break
    assert wait_killed(dog, 5) == ["dns"] * 5
    gaps = [round(b - a) for a, b in zip(kills, kills[1:])]
    assert gaps == [5, 10, 20, 40], kills
    assert len([t for t in kills if t > kills[-1] - 100]) <= 5, "never 10 deaths within the runner's 100 s"
    dog.probes.up.add("dns")
    for _ in range(2):
        now[0] += 0.5
        dog.round()
    assert dog.health["dns"].state == HEALTHY
    dog.probes.up.discard("dns")
    start = now[0]
    while dog.health["dns"].restarts == 5:
        now[0] += 0.5
        dog.round()
        assert now[0] - start < 60, "healthy again: the first restart comes as soon as before"
    assert now[0] - start == pytest.approx(1.5)  # restart_after=3 failures, no grace left over
