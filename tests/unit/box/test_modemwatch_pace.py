"""The modem watch under steady traffic from the gateway: a round (the tap read, the netlink dump
of the devices) still comes once an interval, not back to back for every frame."""
import time

from appliance.box.modem import WatchConfig
from appliance.box.modemwatch import ModemWatch
from appliance.kernel.arp import Sighting
from appliance.kernel.devices import Device

MAC = "02:00:00:00:00:01"


class Files:
    def read(self, path):
        return None

    def write(self, path, text):
        pass


class Box:
    fs = Files()

    def learned_gateway(self):
        return None

    def applied(self):
        return None


class FloodedTap:
    """The gateway speaks all the time: a frame is always there."""

    def read(self, timeout):
        return [Sighting(MAC, False)]


class CountingDevices:
    def __init__(self):
        self.dumps = 0

    def devices(self, netns):
        self.dumps += 1
        return [Device("eth0", 2, "device", True)]


def test_under_steady_gateway_traffic_a_round_still_takes_an_interval(tmp_path):
    cfg = WatchConfig(host_ns=None, uplink="eth0", admin_dev="admin", admin_ip="192.168.1.8",
                      gateway_ip="192.168.1.1", gw_ns=None, gw_dev="gw0", interval=0.05,
                      learned=str(tmp_path / "gateway.json"), events=str(tmp_path / "events.jsonl"))
    devices = CountingDevices()
    watch = ModemWatch(cfg, Box(), FloodedTap(), devices=devices)
    watch.learner.current = MAC
    watch.next_check = float("inf")  # no re-apply in this test
    started = time.monotonic()
    for _ in range(5):
        watch.round()
    # Five rounds take four intervals at least (the fifth's wait is its own), one dump each.
    assert time.monotonic() - started >= 4 * cfg.interval
    assert devices.dumps == 5


class StrayTap:
    """IPv4 frames from the gateway's address with a home client's MAC (seen under a DNS flood
    from that client in the lab), and nothing from the gateway itself."""

    def read(self, timeout):
        time.sleep(timeout)
        return [Sighting(CLIENT, False), Sighting(CLIENT, False)]


class AskingKernel:
    def __init__(self):
        self.asked = []

    def arp_request(self, ns, dev, sender_ip, target_ip):
        self.asked.append((dev, sender_ip, target_ip))


class FollowingBox(Box):
    def __init__(self):
        self.kernel = AskingKernel()
        self.follows = 0

    def follow_gateway(self, progress=None):
        self.follows += 1
        return None


CLIENT = "02:00:00:00:10:01"


def test_ipv4_from_the_gateway_address_with_a_clients_mac_is_asked_about_never_believed(tmp_path):
    cfg = WatchConfig(host_ns=None, uplink="eth0", admin_dev="admin", admin_ip="192.168.1.8",
                      gateway_ip="192.168.1.1", gw_ns=None, gw_dev="gw0", interval=0.05,
                      learned=str(tmp_path / "gateway.json"), events=str(tmp_path / "events.jsonl"))
    box = FollowingBox()
    watch = ModemWatch(cfg, box, StrayTap(), devices=CountingDevices())
    watch.learner.current = MAC
    watch.next_check = float("inf")  # only a change of MAC would bring a re-apply forward
    deadline = time.monotonic() + 5
    while not box.kernel.asked and time.monotonic() < deadline:
        watch.round()
    assert box.kernel.asked == [("admin", "192.168.1.8", "192.168.1.1")]
    assert watch.learner.current == MAC and box.follows == 0
    assert not (tmp_path / "events.jsonl").exists()  # no "mac-changed"
