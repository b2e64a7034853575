"""The home's devices on the box in the lab: per-device counters, pause, schedules and new devices,
with real clients.

Two lab clients get their leases from the box and reach the lab's internet
through it. The box's datapath counts each by MAC; pausing client 1
(`status.pause_device`, what the console's Pause button and the API call)
makes its curl fail from its next frame on while client 2's works, the
box's DNS answer its every name as blocked, and leaves it its lease
renewal; a re-apply keeps the pause; resuming gives it the internet back. A group schedule, on a
clock the test moves (the devices service's `APPLIANCE_CLOCK_OFFSET_FILE`),
switches client 1 off at its minute; a device with a MAC the box never saw
is an event in the box's events file and an alert at a webhook on the lab's
internet.
"""
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta

import pytest

from appliance.box import status
from appliance.box.settings import parse_settings
from appliance.durable import write_atomic
from appliance.lab import topology
from appliance.services.devices.policy import DAYS, DevicePolicy, Policy, Schedule
from appliance.services.devices.service import CLOCK_OFFSET_ENV
from appliance.services.health.record import read_events
from tests.support.boxlab import box_in_lab, settings_data

SITE = "http://198.51.100.10/whoami"
WEBHOOK_PORT = 8089
SETTINGS = settings_data(alerts={"urls": [f"json://{topology.PUBLIC_RESOLVER}:{WEBHOOK_PORT}/box"],
                                 "events": ["new-device"]})
NEW_MAC = "02:0d:0e:0a:0d:02"
_WEBHOOK = (
    "import http.server, sys\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_POST(self):\n"
    "        body = self.rfile.read(int(self.headers['Content-Length']))\n"
    "        with open(sys.argv[1], 'ab') as f: f.write(body + b'\\n')\n"
    "        self.send_response(200); self.end_headers()\n"
    "    def log_message(self, *a): pass\n"
    f"http.server.ThreadingHTTPServer(('0.0.0.0', {WEBHOOK_PORT}), H).serve_forever()\n")


class Home:
    def __init__(self, lab, box, clock, hooks):
        self.lab, self.box, self.clock, self.hooks = lab, box, clock, hooks

    def __iter__(self):   # `lab, box = home`
        return iter((self.lab, self.box))

    def set_clock(self, wall: float) -> None:
        """The devices service's clock reads `wall` now (and runs on from there)."""
        self.clock.write_text(f"{wall - time.time():+.3f}\n")

    def alerts(self) -> list[dict]:
        try:
            return [json.loads(line) for line in self.hooks.read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            return []


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    clock = tmp_path_factory.mktemp("clock") / "offset"
    clock.write_text("+0\n")
    hooks = tmp_path_factory.mktemp("webhook") / "alerts.jsonl"
    # Inherited by the services the apply starts (the supervisor passes its environment on).
    os.environ[CLOCK_OFFSET_ENV] = str(clock)
    try:
        with box_in_lab(tmp_path_factory.mktemp("devices"), "v", clients=2) as (lab, box):
            # A box that has run a while and knows its two clients (a new box learns the devices
            # already there for an hour, silently).
            write_atomic(box.layout.devices_state, json.dumps(
                {"known": {topology.client_mac(i): 0 for i in (1, 2)}, "learn_left": 0}))
            res = box.apply(parse_settings(SETTINGS))
            assert res.ok, res.error
            webhook = subprocess.Popen(["ip", "netns", "exec", lab.spec.internet, sys.executable, "-c", _WEBHOOK,
                                        str(hooks)])
            try:
                for c in lab.spec.client_names:
                    lab.dhcp(c)
                yield Home(lab, box, clock, hooks)
            finally:
                print("\nthe devices service's log:\n" + box.services.log_tail("devices")[-3000:])
                webhook.kill()
                webhook.wait()
    finally:
        os.environ.pop(CLOCK_OFFSET_ENV, None)


def curl_ok(lab, client) -> bool:
    res = lab.run(client, ["curl", "-s", "-m", "2", "-o", "/dev/null", "-w", "%{http_code}", SITE])
    return res.stdout.strip() == "200"


def dig_status(lab, client) -> str:
    """The rcode the box's DNS (as the modem, 192.168.1.1) gives the client for a public name."""
    res = lab.run(client, ["dig", "+time=1", "+tries=1", "@192.168.1.1", "www.example.test"])
    for line in res.stdout.splitlines():
        if "status:" in line:
            return line.split("status:")[1].split(",")[0].strip()
    return "no answer"


def dns_turns(lab, client, want: str, message: str) -> float:
    """Seconds until the client's answer is `want` (polled every 0.2 s, at most 10 s)."""
    start = time.monotonic()
    wait_until(lambda: dig_status(lab, client) == want, 10, message)
    return time.monotonic() - start


def wait_until(what, timeout: float, message: str):
    """What `what()` returned once it was true, polled until `timeout`."""
    deadline = time.monotonic() + timeout
    while not (got := what()):
        assert time.monotonic() < deadline, message
        time.sleep(0.2)
    return got


def test_each_client_is_counted_by_its_mac(home):
    lab, box = home
    one, two = lab.spec.client(1), lab.spec.client(2)
    assert curl_ok(lab, one) and curl_ok(lab, two)
    got = status.device_counters(box)
    assert got.ok, got.problem
    for i in (1, 2):
        st = got.value[topology.client_mac(i)]
        assert st.tx_packets > 0 and st.rx_packets > 0 and st.rx_bytes > 0
    # Only the home side's devices: the modem is behind the uplink.
    assert topology.MODEM_LAN_MAC not in got.value


def test_a_paused_client_loses_the_internet_keeps_dhcp_and_dns_and_resumes(home):
    lab, box = home
    one, two = lab.spec.client(1), lab.spec.client(2)
    mac = topology.client_mac(1)
    wait_until(lambda: curl_ok(lab, one), 10, "client 1 cannot reach the lab's internet to start with")
    try:
        done = status.pause_device(box, mac, True)
        assert done.ok and done.value["enforced"], done
        # From the next frame on: the first try after the pause already fails.
        assert not curl_ok(lab, one)
        assert curl_ok(lab, two)
        assert status.paused_devices(box) == {mac}
        # Its questions are answered at once, every name blocked (the box's block_mode, NXDOMAIN):
        # apps say "no network" instead of waiting on connections that time out.
        took = dns_turns(lab, one, "NXDOMAIN", "a paused client's names were not blocked by the box's DNS")
        print(f"\npause: client 1's names blocked {took:.2f} s after the pause")
        assert took <= 2.0
        assert dig_status(lab, two) == "NOERROR"
        # What a paused device keeps: its lease (renewed from the box).
        assert lab.dhcp(one).address
        assert not curl_ok(lab, one)
        # An apply keeps it paused (the map is pinned; the box loads it again with the datapath).
        res = box.apply(parse_settings(SETTINGS))
        assert res.ok, res.error
        assert not curl_ok(lab, one) and curl_ok(lab, two)
    finally:
        done = status.pause_device(box, mac, False)
    assert done.ok and done.value["enforced"], done
    took = dns_turns(lab, one, "NOERROR", "client 1's names stayed blocked after the resume")
    print(f"resume: client 1's names back {took:.2f} s after the resume")
    assert took <= 2.0
    wait_until(lambda: curl_ok(lab, one), 10, "client 1 did not get the internet back after the resume")
    assert status.paused_devices(box) == set()


def next_monday(hour: int, minute: int, second: int) -> float:
    """The wall time of the next Monday at that local time."""
    today = datetime.now()
    monday = today + timedelta(days=(7 - today.weekday()) % 7 or 7)
    return monday.replace(hour=hour, minute=minute, second=second, microsecond=0).timestamp()


def in_datapath(box, mac: str) -> bool:
    return mac in status.applied_bridge(box).datapath().paused()


def test_a_group_schedule_switches_a_client_off_at_its_minute_while_another_works(home):
    lab, box = home
    one, two = lab.spec.client(1), lab.spec.client(2)
    mac = topology.client_mac(1)
    wait_until(lambda: curl_ok(lab, one), 10, "client 1 cannot reach the lab's internet to start with")
    school_nights = Schedule(DAYS[:5], 21 * 60, 7 * 60)   # off 21:00-07:00 starting Mon-Fri
    status.change_device_policy(box, lambda p: Policy({mac: DevicePolicy(group="Kids")}, {"Kids": (school_nights,)}))
    try:
        home.set_clock(next_monday(20, 59, 57))
        at_minute = time.monotonic() + 3.0
        wait_until(lambda: in_datapath(box, mac), 10,
                   f"the schedule never switched client 1 off; the service: {box.services.status('devices')}")
        late = time.monotonic() - at_minute
        print(f"\nschedule: client 1 off {late:+.2f} s after its minute")
        assert -0.5 <= late <= 2.0, f"switched off {late:+.2f} s from 21:00:00"
        assert not curl_ok(lab, one)
        assert curl_ok(lab, two)
        dns_turns(lab, one, "NXDOMAIN", "client 1's names were not blocked while its schedule had it off")
        # Off by its schedule, not paused by hand: nothing to resume, and it ends by itself.
        assert status.scheduled_devices(box) == {mac} and status.paused_devices(box) == set()
        home.set_clock(next_monday(20, 59, 57) + timedelta(hours=10).total_seconds())   # Tuesday 06:59:57
        ends = time.monotonic() + 3.0
        wait_until(lambda: not in_datapath(box, mac), 10, "the schedule never let client 1 back at 07:00")
        print(f"schedule: client 1 back {time.monotonic() - ends:+.2f} s after 07:00")
        assert time.monotonic() - ends <= 2.0
        wait_until(lambda: curl_ok(lab, one), 10, "client 1 did not get the internet back at 07:00")
        dns_turns(lab, one, "NOERROR", "client 1's names stayed blocked after its schedule ended")
    finally:
        status.change_device_policy(box, lambda p: Policy())
        home.set_clock(time.time())


def test_a_device_the_box_never_saw_is_an_event_and_an_alert(home):
    lab, box = home
    two = lab.spec.client(2)
    subprocess.run(["ip", "-n", two, "link", "set", "eth0", "address", NEW_MAC], check=True)
    try:
        t0 = time.monotonic()
        lab.run(two, ["ping", "-c", "1", "-W", "1", "192.168.1.1"])
        new = lambda: [e for e in read_events(box.layout.health_events)   # noqa: E731
                       if (e.service, e.what) == ("devices", "new")]
        wait_until(lambda: any(NEW_MAC in e.detail for e in new()), 5, "no devices/new event for the new MAC")
        print(f"\nnew device: an event {time.monotonic() - t0:.2f} s after its first frame")
        # Only the device the box had not seen: the two clients it knew are no news.
        assert [e.detail for e in new()] == [NEW_MAC]
        wait_until(lambda: any(a.get("title") == "appliance: A device joined the home" and NEW_MAC in json.dumps(a)
                               for a in home.alerts()), 15, f"no alert reached the webhook: {home.alerts()}")
        print(f"new device: the webhook's alert {time.monotonic() - t0:.2f} s after its first frame")
    finally:
        subprocess.run(["ip", "-n", two, "link", "set", "eth0", "address", topology.client_mac(2)], check=True)
