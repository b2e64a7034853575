"""The devices service's tick on files and in-memory maps: schedules into dp_paused, events, series, state."""
import json
import time
import threading
from datetime import datetime

from appliance.durable import write_atomic
from appliance.services.devices.service import Clock, DevicesConfig, DevicesService
from appliance.services.health.record import read_events
from appliance.services.timeseries import MINUTE, Series
from appliance.switch.datapath.datapath import MacStats

KID, PARENT = "3c:5a:b4:00:00:01", "7a:11:22:33:44:55"
MONDAY_2059 = datetime(2026, 12, 7, 20, 59, 58).timestamp()


class Maps:
    """dp_macs and dp_paused as the service sees them through their pins."""

    def __init__(self):
        self.macs = {}
        self.dp_paused = set()
        self.loaded = True

    def counters(self):
        return dict(self.macs) if self.loaded else None

    def paused(self):
        return set(self.dp_paused) if self.loaded else None

    def set_paused(self, macs):
        self.dp_paused = set(macs)
        return True

    def send(self, mac, rx=0, tx=0):
        self.macs[mac] = MacStats(mac, rx // 100, rx, tx // 100, tx, 1)


def config(tmp_path, learn=0.0):
    return DevicesConfig(pin_dir=str(tmp_path / "pins"), paused=str(tmp_path / "datapath" / "paused.json"),
                         policy=str(tmp_path / "devices" / "policy.json"), state=str(tmp_path / "devices" / "state.json"),
                         scheduled=str(tmp_path / "devices" / "scheduled.json"),
                         events=str(tmp_path / "health" / "events.jsonl"), series=str(tmp_path / "series" / "devices.sqlite"),
                         learn_seconds=learn)


def service(tmp_path, maps, at=MONDAY_2059, learn=0.0):
    offset = tmp_path / "clock-offset"
    offset.write_text(f"{at - time.time():+.3f}\n")
    return DevicesService(config(tmp_path, learn), maps=maps, clock=Clock(str(offset)), vendor=lambda mac: "")


def policy(tmp_path, data):
    write_atomic(str(tmp_path / "devices" / "policy.json"), json.dumps(data))


def kids_bedtime(tmp_path):
    policy(tmp_path, {"devices": {KID: {"group": "Kids", "schedules": [], "budget": None}},
                      "groups": {"Kids": {"schedules": [{"days": ["mon", "tue", "wed", "thu", "fri"],
                                                         "start": "21:00", "end": "07:00"}]}}})


def test_a_group_schedule_pauses_its_device_at_its_minute_beside_the_ones_paused_by_hand(tmp_path):
    maps = Maps()
    write_atomic(str(tmp_path / "datapath" / "paused.json"), json.dumps({"macs": [PARENT]}))
    kids_bedtime(tmp_path)
    svc = service(tmp_path, maps)
    svc.tick()
    assert maps.dp_paused == {PARENT}                          # 20:59:58: not yet
    (tmp_path / "clock-offset").write_text(f"{MONDAY_2059 + 2.5 - time.time():+.3f}\n")
    svc.tick()
    assert maps.dp_paused == {PARENT, KID}                     # 21:00:00
    assert json.loads((tmp_path / "devices" / "scheduled.json").read_text()) == {"macs": [KID]}
    policy(tmp_path, {"devices": {}, "groups": {}})             # the console removed the schedule
    svc.tick()
    assert maps.dp_paused == {PARENT}


def test_a_broken_policy_file_keeps_the_last_one(tmp_path):
    maps = Maps()
    kids_bedtime(tmp_path)
    svc = service(tmp_path, maps, at=datetime(2026, 12, 7, 22, 0).timestamp())
    svc.tick()
    assert maps.dp_paused == {KID}
    (tmp_path / "devices" / "policy.json").write_text('{"devices": {"not-a-mac": {}}}')
    svc.tick()
    assert maps.dp_paused == {KID}


def test_a_new_device_is_an_event_once_and_its_bytes_go_to_the_series(tmp_path):
    maps = Maps()
    maps.send(PARENT, 1000, 100)
    svc = service(tmp_path, maps, learn=0.0)
    svc.tick()
    maps.send(PARENT, 5000, 300)
    maps.send(KID, 700, 70)
    svc.tick()
    svc.tick()
    events = [(e.service, e.what, e.detail) for e in read_events(str(tmp_path / "health" / "events.jsonl"))]
    assert events == [("devices", "new", PARENT), ("devices", "new", KID)]
    s = Series(str(tmp_path / "series" / "devices.sqlite"), readonly=True)
    total = lambda name: sum(v for _, v in s.read(name, MINUTE, 0))  # noqa: E731
    assert total(f"dev.{PARENT}.rx_bytes") == 4000 and total(f"dev.{KID}.rx_bytes") == 700
    assert total("dev.all.rx_bytes") == 4700 and total("dev.all.tx_bytes") == 270


def test_a_restarted_service_knows_its_devices_and_counts_on(tmp_path):
    maps = Maps()
    maps.send(PARENT, 1000)
    svc = service(tmp_path, maps, learn=0.0)
    svc.tick()
    maps.send(PARENT, 1500)
    svc.tick()
    svc.run(_stopped())                      # a stop saves the state
    maps.send(PARENT, 2500)
    again = service(tmp_path, maps, learn=3600.0)
    again.tick()
    assert [e.what for e in read_events(str(tmp_path / "health" / "events.jsonl"))] == ["new"]
    assert again.tracker.used(PARENT, "day", datetime.fromtimestamp(MONDAY_2059)) == 1500


def test_no_datapath_no_counting_and_nothing_lost(tmp_path):
    maps = Maps()
    maps.loaded = False
    kids_bedtime(tmp_path)
    svc = service(tmp_path, maps, at=datetime(2026, 12, 7, 22, 0).timestamp())
    svc.tick()
    # Kept for the datapath's next load (`DatapathLoader.enforced`).
    assert json.loads((tmp_path / "devices" / "scheduled.json").read_text()) == {"macs": [KID]}


def _stopped():
    e = threading.Event()
    e.set()
    return e
