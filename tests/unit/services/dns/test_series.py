"""The DNS server's per-minute counts, from its query log's settled batches to the series store."""
import sqlite3

from appliance.services.dns.querylog import QueryLog
from appliance.services.dns.series import DnsSeries
from appliance.services.timeseries import HOUR, MINUTE, Series

T0 = 1_780_000_000 - 1_780_000_000 % HOUR


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def logged(tmp_path, groups=None):
    clock = Clock(T0 + 5)
    log = QueryLog(clock=clock)
    series = DnsSeries(str(tmp_path / "series" / "dns.sqlite"), groups, clock=clock)
    log.sinks.append(series.count)
    return log, series, clock


def read(series, name, step=MINUTE):
    reader = Series(series.store.path, readonly=True)
    try:
        return reader.read(name, step, 0)
    finally:
        reader.close()


def test_each_answer_is_counted_in_its_minute_by_what_the_box_did(tmp_path):
    log, series, clock = logged(tmp_path)
    log.add("10.0.0.2", "ads.test", 1, "block", 3, True)
    log.add("10.0.0.2", "www.test", 1, "direct", 0, False)
    log.add("10.0.0.3", "www.test", 1, "direct", 0, True)
    log.add("10.0.0.3", "video.test", 1, "fake-ip", 0, True)
    log.add("10.0.0.3", "nas.lan", 1, "local", 0, True)
    log.settle()
    clock.t = T0 + 65
    log.add("10.0.0.2", "ads.test", 1, "block", 3, True)
    log.settle()
    series.flush()
    assert read(series, "dns.queries") == [(T0, 5.0), (T0 + 60, 1.0)]
    assert read(series, "dns.blocked") == [(T0, 1.0), (T0 + 60, 1.0)]
    assert read(series, "dns.forwarded") == [(T0, 1.0)]
    assert read(series, "dns.cached") == [(T0, 1.0)]
    assert read(series, "dns.fake_ip") == [(T0, 1.0)]
    assert read(series, "dns.queries", HOUR) == [(T0, 6.0)]
    assert not read(series, "dns.group.default.queries")  # no groups: no group series


def test_groups_are_counted_by_their_names(tmp_path):
    log, series, _ = logged(tmp_path, groups=lambda ip: "kids" if ip == "10.0.0.9" else "default")
    log.add("10.0.0.9", "game.test", 1, "block", 3, True)
    log.add("10.0.0.9", "school.test", 1, "direct", 0, False)
    log.add("10.0.0.2", "www.test", 1, "direct", 0, False)
    log.settle()
    series.flush()
    assert read(series, "dns.group.kids.queries") == [(T0, 2.0)]
    assert read(series, "dns.group.kids.blocked") == [(T0, 1.0)]
    assert read(series, "dns.group.default.queries") == [(T0, 1.0)]


def test_counts_the_store_could_not_take_wait_for_the_next_flush(tmp_path):
    log, series, clock = logged(tmp_path)
    log.add("10.0.0.2", "www.test", 1, "direct", 0, False)
    log.settle()
    series.store._db.close()
    series.store._db = sqlite3.connect(f"file:{series.store.path}?mode=ro", uri=True)  # as a full disk refuses
    series.flush()
    assert series.last_error and "readonly" in series.last_error
    assert not read(series, "dns.queries")
    series.store._db.close()
    series.store._db = sqlite3.connect(series.store.path)
    series.flush()
    assert series.last_error is None
    assert read(series, "dns.queries") == [(T0, 1.0)]


def test_an_hour_later_the_store_is_pruned_to_its_bounds(tmp_path):
    log, series, clock = logged(tmp_path)
    log.add("10.0.0.2", "www.test", 1, "direct", 0, False)
    log.settle()
    series.flush()
    clock.t = T0 + 2 * 24 * HOUR
    log.add("10.0.0.2", "www.test", 1, "direct", 0, False)
    log.settle()
    series.flush()
    assert [ts for ts, _ in read(series, "dns.queries")] == [T0 + 2 * 24 * HOUR]  # a day of minutes
    assert [ts for ts, _ in read(series, "dns.queries", HOUR)] == [T0, T0 + 2 * 24 * HOUR]
