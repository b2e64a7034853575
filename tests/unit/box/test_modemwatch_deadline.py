"""The modem watch's re-apply deadline: a hung re-apply ends the watch, whose runner starts it
again, and the kernel frees the box's apply lock with the process."""
import threading

from appliance.box.modem import WatchConfig
from appliance.box.modemwatch import ModemWatch


class Files:
    def read(self, path):
        return None


class HungBox:
    """A box whose re-apply never ends until released (as a netlink dump that never ended did)."""

    fs = Files()

    def __init__(self):
        self.release = threading.Event()
        self.started = threading.Event()

    def learned_gateway(self):
        return None

    def applied(self):
        return None

    def follow_gateway(self, progress=None):
        self.started.set()
        self.release.wait(30)
        return None


def config(tmp_path):
    return WatchConfig(host_ns=None, uplink="eth0", admin_dev="admin", admin_ip="192.168.1.8",
                       gateway_ip="192.168.1.1", gw_ns=None, gw_dev="gw0",
                       learned=str(tmp_path / "gateway.json"), events=str(tmp_path / "events.jsonl"))


def test_a_reapply_hung_past_the_deadline_ends_the_watch(tmp_path):
    box = HungBox()
    hung = threading.Event()

    def on_hang():
        hung.set()
        box.release.set()  # the real one exits the process here

    watch = ModemWatch(config(tmp_path), box, tap=None, devices=object(), on_hang=on_hang, deadline=0.2)
    follow = threading.Thread(target=watch.follow)
    follow.start()
    assert box.started.wait(5)
    assert hung.wait(10), "a re-apply hung past the deadline and the watch went on waiting"
    follow.join(10)


def test_a_reapply_that_ends_in_time_cancels_the_deadline(tmp_path):
    box = HungBox()
    box.release.set()  # ends at once
    hung = threading.Event()
    watch = ModemWatch(config(tmp_path), box, tap=None, devices=object(), on_hang=hung.set, deadline=0.3)
    watch.follow()
    # The deadline's timer was cancelled: its thread ends without firing.
    watch.timer.join(5)
    assert not watch.timer.is_alive() and not hung.is_set()
