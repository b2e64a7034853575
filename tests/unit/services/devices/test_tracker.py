"""One tick of the datapath's counters: new devices once, deltas across a counter reset, budgets once a period."""
from datetime import datetime

from appliance.services.devices.policy import Budget, DevicePolicy, Policy
from appliance.switch.datapath.datapath import MacStats
from appliance.services.devices.tracker import Tracker

TABLET, PHONE, NEWCOMER = "3c:5a:b4:00:00:01", "7a:11:22:33:44:55", "00:1a:11:00:00:02"
NOW = datetime(2026, 12, 7, 20, 0)
BOOT = "boot-1"


def st(mac, rx=0, tx=0):
    return MacStats(mac, rx_packets=rx // 100, rx_bytes=rx, tx_packets=tx // 100, tx_bytes=tx, last_tx_ns=1)


def tick(t: Tracker, *stats, policy=Policy(), now=NOW, elapsed=1.0, boot=BOOT):
    return t.tick({s.mac: s for s in stats}, policy, now, now.timestamp(), elapsed, boot,
                  vendor=lambda mac: "Google, Inc." if mac == TABLET else "")


def test_a_new_box_learns_the_devices_already_there_silently_then_alerts_once_for_a_new_one():
    t = Tracker(learn_left=60.0)
    assert tick(t, st(TABLET, 100, 100)).events == []
    assert tick(t, st(TABLET, 200), st(PHONE, 10), elapsed=30.0).events == []   # a late sender, still learned
    res = tick(t, st(TABLET, 300), st(PHONE, 10), st(NEWCOMER, 10), elapsed=31.0)
    assert res.events == [] and set(t.known) == {TABLET, PHONE, NEWCOMER}   # the window was still open
    res = tick(t, st(TABLET, 300), st(PHONE, 10), st(NEWCOMER, 10), st("02:00:00:00:00:09", 5))
    assert [(e.what, e.mac) for e in res.events] == [("new", "02:00:00:00:00:09")] and res.changed
    assert tick(t, st("02:00:00:00:00:09", 50)).events == []   # once


def test_a_new_device_names_its_vendor():
    t = Tracker(learn_left=0.0)
    (event,) = tick(t, st(TABLET, 1)).events
    assert event.detail == f"{TABLET} (Google, Inc.)"


def test_deltas_per_device_and_for_all_with_the_first_reading_as_baseline():
    t = Tracker(learn_left=0.0)
    assert tick(t, st(TABLET, 5000, 700)).series == {}   # what it counted before this service ran is not now's
    res = tick(t, st(TABLET, 8000, 900), st(PHONE, 100, 0))
    assert res.series == {f"dev.{TABLET}.rx_bytes": 3000, f"dev.{TABLET}.tx_bytes": 200,
                          f"dev.{PHONE}.rx_bytes": 100, "dev.all.rx_bytes": 3100, "dev.all.tx_bytes": 200}


def test_a_counter_that_goes_down_is_a_restarted_datapath_and_its_new_value_is_counted():
    t = Tracker(learn_left=0.0)
    tick(t, st(TABLET, 5000, 700))
    res = tick(t, st(TABLET, 300, 40))
    assert res.series[f"dev.{TABLET}.rx_bytes"] == 300 and res.series[f"dev.{TABLET}.tx_bytes"] == 40
    # Gone from the map (forgotten, evicted) and back: its counters started again from zero.
    tick(t)
    assert tick(t, st(TABLET, 900)).series[f"dev.{TABLET}.rx_bytes"] == 900


def test_another_boot_counts_every_counter_whole():
    t = Tracker(learn_left=0.0)
    tick(t, st(TABLET, 5000))
    assert tick(t, st(TABLET, 6000), boot="boot-2").series[f"dev.{TABLET}.rx_bytes"] == 6000


def test_a_saved_state_counts_on_from_its_baseline_after_a_restart():
    t = Tracker(learn_left=0.0)
    tick(t, st(TABLET, 5000))
    tick(t, st(TABLET, 6000))
    again = Tracker.from_json(t.to_json())
    res = tick(again, st(TABLET, 6500))
    assert res.series[f"dev.{TABLET}.rx_bytes"] == 500 and res.events == []
    assert again.used(TABLET, "day", NOW) == 1500


def test_a_budget_alerts_once_per_period():
    policy = Policy(devices={TABLET: DevicePolicy(budget=Budget(1000, "day"))})
    t = Tracker(learn_left=0.0)
    tick(t, st(TABLET, 0), policy=policy)
    assert tick(t, st(TABLET, 600, 300), policy=policy).events == []
    res = tick(t, st(TABLET, 700, 300), policy=policy)
    assert [(e.what, e.mac) for e in res.events] == [("over-budget", TABLET)] and res.changed
    assert "1000 bytes this day" in res.events[0].detail
    assert tick(t, st(TABLET, 5000, 300), policy=policy).events == []        # once that day
    tomorrow = datetime(2026, 12, 8, 0, 1)
    assert tick(t, st(TABLET, 5500, 300), policy=policy, now=tomorrow).events == []   # a new day from zero
    assert t.used(TABLET, "day", tomorrow) == 500
    res = tick(t, st(TABLET, 6600, 300), policy=policy, now=tomorrow)
    assert [e.what for e in res.events] == ["over-budget"]
    assert t.used(TABLET, "month", tomorrow) == 6900


def test_a_monthly_budget_counts_the_month():
    policy = Policy(devices={PHONE: DevicePolicy(budget=Budget(10_000, "month"))})
    t = Tracker(learn_left=0.0)
    tick(t, st(PHONE), policy=policy, now=datetime(2026, 12, 1, 9))
    assert tick(t, st(PHONE, 6000), policy=policy, now=datetime(2026, 12, 2, 9)).events == []
    assert [e.what for e in tick(t, st(PHONE, 10_000), policy=policy, now=datetime(2026, 12, 30, 9)).events] == [
        "over-budget"]
