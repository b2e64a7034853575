"""The dashboard's port figures come from the kernel's devices (as `ip -s link` shows them)."""
from appliance.kernel.fake_devices import FakeDevices
from appliance.web.sources import LiveSources
from tests.support import webfakes as fakes


def box_devices() -> FakeDevices:
    devices = FakeDevices()
    devices.add_netns("lab-box")
    devices.add_netns("lab-modem")
    devices.add_netns("lab-home")
    devices.add_veth("lab-box", "enp5s0", "lab-modem", "lan0")
    devices.add_veth("lab-box", "enp1s0", "lab-home", "sw0")
    devices.add_device("lab-box", "vswitch", "bridge")
    for ns, name in (("lab-box", "enp5s0"), ("lab-modem", "lan0"), ("lab-box", "enp1s0")):
        devices.set_up(ns, name)
    devices.count("lab-box", "enp5s0", rx=1500, tx=700)
    return devices


def test_ports_show_each_nics_role_carrier_and_bytes(db):
    assert fakes.BOX.apply(fakes.settings()).ok
    reading = LiveSources(devices=box_devices()).ports()
    assert reading.ok
    rows = [{k: v for k, v in r.items() if k != "time"} for r in reading.value]
    # The home side's switch is off: the downlink is up without a carrier.
    assert rows == [
        {"name": "enp5s0", "role": "uplink", "up": True, "rx_bytes": 1500, "tx_bytes": 700},
        {"name": "enp1s0", "role": "downlink", "up": False, "rx_bytes": 0, "tx_bytes": 0},
    ]


def test_ports_say_why_when_the_kernel_cannot_be_read(db):
    assert fakes.BOX.apply(fakes.settings()).ok
    reading = LiveSources(devices=FakeDevices()).ports()  # no namespace lab-box
    assert not reading.ok and reading.problem.startswith("cannot read the ports: netns lab-box")


def test_ports_before_any_apply(db):
    assert LiveSources(devices=box_devices()).ports().problem == "nothing applied yet"

