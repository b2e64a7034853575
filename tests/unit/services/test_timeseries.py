import sqlite3

import pytest

from appliance.services.timeseries import HOUR, KEEP, MINUTE, Series, filled

T0 = 1_780_000_000 - 1_780_000_000 % HOUR  # an hour boundary


@pytest.fixture
def store(tmp_path):
    s = Series(str(tmp_path / "series" / "dns.sqlite"))
    yield s
    s.close()


def test_samples_in_one_minute_add_up_and_roll_into_the_hour(store):
    store.add({"dns.queries": 3}, now=T0 + 5)
    store.add({"dns.queries": 4}, now=T0 + 59)
    store.add({"dns.queries": 10}, now=T0 + 61)
    assert store.read("dns.queries", MINUTE, T0) == [(T0, 7.0), (T0 + 60, 10.0)]
    assert store.read("dns.queries", HOUR, T0) == [(T0, 17.0)]


def test_prune_keeps_a_day_of_minutes_and_a_month_of_hours(store):
    store.add({"x": 1}, now=T0)
    store.add({"x": 1}, now=T0 + 2 * 24 * HOUR)
    store.prune(now=T0 + 2 * 24 * HOUR)
    assert [ts for ts, _ in store.read("x", MINUTE, 0)] == [T0 + 2 * 24 * HOUR]
    assert [ts for ts, _ in store.read("x", HOUR, 0)] == [T0, T0 + 2 * 24 * HOUR]
    store.prune(now=T0 + KEEP[HOUR] + HOUR)
    assert [ts for ts, _ in store.read("x", HOUR, 0)] == [T0 + 2 * 24 * HOUR]


def test_a_reader_sees_what_the_writer_committed(store):
    store.add({"dev.aa:bb.rx_bytes": 1500, "dev.aa:bb.tx_bytes": 0}, now=T0)
    reader = Series(store.path, readonly=True)
    try:
        assert reader.names("dev.") == ["dev.aa:bb.rx_bytes"]  # a zero adds no row
        with pytest.raises(sqlite3.OperationalError):
            reader.add({"y": 1}, now=T0)
    finally:
        reader.close()


def test_a_bad_step_is_refused_by_name(store):
    with pytest.raises(ValueError, match="step must be one of"):
        store.read("x", 30, 0)


def test_filled_gives_every_bucket():
    assert filled([(T0 + 60, 2.0)], MINUTE, T0 + 10, T0 + 120) == [(T0, 0.0), (T0 + 60, 2.0), (T0 + 120, 0.0)]
