"""The query log on disk: real files, bounded by size, age and the partition's free space."""
import os

from appliance.services.dns import querydisk
from appliance.services.dns.querydisk import DiskLog, Room, search
from appliance.services.dns.querylog import QueryLog

T0 = 1_780_000_000.0
GB = 1 << 30


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def plenty(_path):
    return Room(free=100 * GB, total=200 * GB)


def entry(t, client="10.0.0.2", name="www.example.test", action="direct", mac="02:00:00:00:00:02"):
    return (t, client, name, 1, action, 0, False, "", mac)


def on_disk(directory):
    return sum(os.path.getsize(os.path.join(directory, n)) for n in querydisk.segments(directory))


def test_every_answer_reaches_the_disk_even_past_the_memory_window(tmp_path):
    clock = Clock(T0)
    log = QueryLog(max_entries=2, clock=clock, mac_of=lambda ip: "02:00:00:00:00:09" if ip == "10.0.0.9" else None)
    disk = DiskLog(str(tmp_path / "q"), 1 << 20, 86400, clock=clock, room=plenty)
    log.sinks.append(disk.write)
    for i in range(5):
        clock.t = T0 + i
        log.add("10.0.0.9", f"n{i}.test", 1, "block" if i % 2 else "direct", 0)
        log.settle()
    assert [e["qname"] for e in log.search()] == ["n4.test", "n3.test"]
    found = search(str(tmp_path / "q"), limit=10)
    assert [e[2] for e in found] == ["n4.test", "n3.test", "n2.test", "n1.test", "n0.test"]
    assert found[0][8] == "02:00:00:00:00:09"  # the device, by MAC
    assert [e[2] for e in search(str(tmp_path / "q"), action="block", until=T0 + 3)] == ["n1.test"]
    assert [e[2] for e in search(str(tmp_path / "q"), mac="02:00:00:00:00:09", domain="N2.TEST")] == ["n2.test"]
    assert [e[2] for e in search(str(tmp_path / "q"), since=T0 + 3)] == ["n4.test", "n3.test"]
    assert search(str(tmp_path / "q"), client="10.0.0.3") == []


def test_the_log_rotates_and_stays_under_its_size(tmp_path):
    clock = Clock(T0)
    d = str(tmp_path / "q")
    disk = DiskLog(d, 256 * 1024, 86400, clock=clock, room=plenty)
    for i in range(400):
        clock.t = T0 + i
        disk.write([entry(T0 + i, name=f"{i:04d}." + "x" * 50 + ".test") for _ in range(20)])
    names = querydisk.segments(d)
    assert len(names) > 2  # rotated by size
    assert on_disk(d) <= 256 * 1024
    assert disk.size() == on_disk(d)
    newest = search(d, limit=1)[0]
    assert newest[2].startswith("0399.")
    assert not search(d, domain="0000.")  # the oldest went first


def test_segments_older_than_max_age_are_removed(tmp_path):
    clock = Clock(T0)
    d = str(tmp_path / "q")
    disk = DiskLog(d, 1 << 20, 2 * 86400, clock=clock, room=plenty)
    disk.write([entry(T0, name="old.test")])
    os.utime(os.path.join(d, querydisk.segments(d)[0]), (T0, T0))
    clock.t = T0 + querydisk.SEGMENT_SECONDS
    disk.write([entry(clock.t, name="newer.test")])
    assert len(querydisk.segments(d)) == 2
    clock.t = T0 + 2 * 86400 + 1
    disk.write([entry(clock.t, name="now.test")])
    assert [e[2] for e in search(d, limit=10)] == ["now.test", "newer.test"]


def test_a_nearly_full_partition_takes_the_oldest_segments_then_the_writes(tmp_path):
    clock = Clock(T0)
    d = str(tmp_path / "q")
    room = {"free": 100 * GB}
    disk = DiskLog(d, 1 << 30, 86400, clock=clock,
                   room=lambda _p: Room(free=room["free"] - on_disk(d), total=200 * GB))
    for i in range(3):
        clock.t = T0 + i * querydisk.SEGMENT_SECONDS
        disk.write([entry(clock.t, name=f"s{i}.test")])
    assert len(querydisk.segments(d)) == 3
    # Something else fills the partition to its last 5% (10 GB here) but for a little.
    room["free"] = 10 * GB + on_disk(d) + 10
    clock.t += 1
    disk.write([entry(clock.t, name="more.test")])
    assert "s0.test" not in {e[2] for e in search(d, limit=10)}  # the oldest made room
    assert {e[2] for e in search(d, limit=10)} >= {"more.test"}
    room["free"] = 10 * GB  # nothing left above the reserve: nothing is written
    clock.t += 1
    disk.write([entry(clock.t, name="lost.test")])
    assert disk.unwritten == 1 and "nearly full" in disk.last_error
    assert not search(d, domain="lost.test")


def test_a_restarted_server_keeps_its_bound_over_the_segments_already_there(tmp_path):
    clock = Clock(T0)
    d = str(tmp_path / "q")
    first = DiskLog(d, 128 * 1024, 86400, clock=clock, room=plenty)
    for i in range(100):
        first.write([entry(T0 + i, name=f"{i:03d}." + "y" * 60 + ".test") for _ in range(20)])
    first.close()
    again = DiskLog(d, 128 * 1024, 86400, clock=clock, room=plenty)
    assert again.size() == on_disk(d)
    for i in range(100, 200):
        again.write([entry(T0 + i, name=f"{i:03d}." + "y" * 60 + ".test") for _ in range(20)])
    assert on_disk(d) <= 128 * 1024


def test_a_torn_last_line_and_odd_names_do_not_break_a_search(tmp_path):
    d = str(tmp_path / "q")
    disk = DiskLog(d, 1 << 20, 86400, clock=Clock(T0), room=plenty)
    disk.write([entry(T0, name="tab\there.test"), entry(T0 + 1, name="ok.test")])
    with open(os.path.join(d, querydisk.segments(d)[0]), "a") as fh:
        fh.write("1780000002.000\t10.0.0.2\t")  # a write the reader caught half-way
    assert [e[2] for e in search(d)] == ["ok.test", "tab here.test"]


def test_the_bounds_are_settings_refused_by_field_when_out_of_range():
    import pytest

    from appliance.services.dns.settings import SettingsError, parse_settings

    ok = parse_settings({"upstreams": [{"url": "udp://192.0.2.1"}]}).query_log
    assert (ok.max_mb, ok.max_days, ok.dir) == (64, 7, None)  # a document without them: the defaults
    for bad, field in [({"max_mb": -1}, "query_log.max_mb"), ({"max_days": 0}, "query_log.max_days"),
                       ({"max_mb": "lots"}, "query_log.max_mb")]:
        with pytest.raises(SettingsError) as e:
            parse_settings({"upstreams": [{"url": "udp://192.0.2.1"}], "query_log": bad})
        assert list(e.value.errors) == [field]
