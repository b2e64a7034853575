"""The home's devices on the box in the lab: per-device counters and pause, with real clients.

Two lab clients get their leases from the box and reach the lab's internet
through it. The box's datapath counts each by MAC; pausing client 1
(`status.pause_device`, what the console's Pause button and the API call)
makes its curl fail from its next frame on while client 2's works, and
leaves it its lease renewal and DNS answers from the box; a re-apply keeps
the pause; resuming gives it the internet back.
"""
import time

import pytest

from appliance.box import status
from appliance.box.settings import parse_settings
from appliance.lab import topology
from tests.support.boxlab import box_in_lab, settings_data

SITE = "http://198.51.100.10/whoami"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with box_in_lab(tmp_path_factory.mktemp("devices"), "v", clients=2, apply=settings_data()) as (lab, box):
        for c in lab.spec.client_names:
            lab.dhcp(c)
        yield lab, box


def curl_ok(lab, client) -> bool:
    res = lab.run(client, ["curl", "-s", "-m", "2", "-o", "/dev/null", "-w", "%{http_code}", SITE])
    return res.stdout.strip() == "200"


def dig_answers(lab, client) -> bool:
    res = lab.run(client, ["dig", "+time=2", "+tries=2", "@192.168.1.1", "www.example.test"])
    return "status: NOERROR" in res.stdout


def wait_until(what, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, message
        time.sleep(0.2)


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
        # What a paused device keeps: its lease (renewed from the box) and answers from the box's DNS.
        assert lab.dhcp(one).address
        wait_until(lambda: dig_answers(lab, one), 10, "a paused client got no DNS answer from the box")
        assert not curl_ok(lab, one)
        # An apply keeps it paused (the map is pinned; the box loads it again with the datapath).
        res = box.apply(parse_settings(settings_data()))
        assert res.ok, res.error
        assert not curl_ok(lab, one) and curl_ok(lab, two)
    finally:
        done = status.pause_device(box, mac, False)
    assert done.ok and done.value["enforced"], done
    wait_until(lambda: curl_ok(lab, one), 10, "client 1 did not get the internet back after the resume")
    assert status.paused_devices(box) == set()
