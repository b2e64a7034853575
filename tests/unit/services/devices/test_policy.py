"""Schedules, groups and budgets: which devices a schedule has off at a given minute."""
from datetime import datetime

import pytest

from appliance.services.devices.policy import (
    Budget, DevicePolicy, Policy, PolicyError, Schedule, period_key, scheduled_off,
)

TABLET, PHONE, TV = "3c:5a:b4:00:00:01", "7a:11:22:33:44:55", "00:1a:11:00:00:02"
SCHOOL_NIGHTS = Schedule.from_json({"days": ["mon", "tue", "wed", "thu", "fri"], "start": "21:00", "end": "07:00"})


def at(text: str) -> datetime:
    """2026-12-07 is a Monday."""
    return datetime.fromisoformat(text)


@pytest.mark.parametrize("when, off", [
    ("2026-12-07 20:59", False),   # Monday, before
    ("2026-12-07 21:00", True),    # Monday, at its minute
    ("2026-12-07 23:59", True),
    ("2026-12-08 00:00", True),    # past midnight: Monday's period goes on
    ("2026-12-08 06:59", True),
    ("2026-12-08 07:00", False),   # Tuesday morning: over
    ("2026-12-11 22:00", True),    # Friday evening starts one
    ("2026-12-12 06:00", True),    # ... which ends Saturday morning
    ("2026-12-12 22:00", False),   # Saturday evening: not listed
    ("2026-12-13 22:00", False),   # Sunday evening: not listed
    ("2026-12-07 06:00", False),   # Monday morning: Sunday started nothing
])
def test_a_school_night_schedule_crosses_midnight_from_the_days_it_starts_on(when, off):
    assert SCHOOL_NIGHTS.active(at(when)) is off


def test_a_daytime_schedule_covers_its_minutes_on_its_days_only():
    homework = Schedule.from_json({"days": ["sat", "sun"], "start": "09:30", "end": "12:00"})
    assert [homework.active(at(t)) for t in ("2026-12-12 09:29", "2026-12-12 09:30", "2026-12-12 11:59",
                                             "2026-12-12 12:00", "2026-12-07 10:00")] == [
        False, True, True, False, False]


def test_start_equal_to_end_is_the_whole_day_from_start():
    day = Schedule.from_json({"days": ["wed"], "start": "00:00", "end": "00:00"})
    assert day.active(at("2026-12-09 00:00")) and day.active(at("2026-12-09 23:59"))
    assert not day.active(at("2026-12-10 00:00")) and not day.active(at("2026-12-08 23:59"))


def test_a_group_schedule_applies_to_its_members_and_a_device_schedule_to_the_device_alone():
    policy = Policy(devices={TABLET: DevicePolicy(group="Kids"), PHONE: DevicePolicy(group="Kids"),
                             TV: DevicePolicy(schedules=(Schedule(("sun",), 0, 6 * 60),))},
                    groups={"Kids": (SCHOOL_NIGHTS,)})
    assert scheduled_off(policy, at("2026-12-07 22:00")) == {TABLET, PHONE}
    assert scheduled_off(policy, at("2026-12-13 05:00")) == {TV}
    assert scheduled_off(policy, at("2026-12-13 12:00")) == set()
    assert policy.members("Kids") == [TABLET, PHONE] and policy.group_names() == ["Kids"]


def test_the_policy_reads_back_as_written():
    policy = Policy(devices={TABLET: DevicePolicy("Kids", (SCHOOL_NIGHTS,), Budget(2 << 30, "day"))},
                    groups={"Kids": (Schedule(("sat",), 600, 660),)})
    assert Policy.from_json(policy.to_json()) == policy
    assert SCHOOL_NIGHTS.to_json() == {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "21:00", "end": "07:00"}
    assert SCHOOL_NIGHTS.describe() == "off 21:00-07:00 starting Mon-Fri"


@pytest.mark.parametrize("data, field", [
    ({"days": ["monday"], "start": "21:00", "end": "07:00"}, "schedule.days"),
    ({"days": [], "start": "21:00", "end": "07:00"}, "schedule.days"),
    ({"days": ["mon", "mon"], "start": "21:00", "end": "07:00"}, "schedule.days"),
    ({"days": ["mon"], "start": "24:00", "end": "07:00"}, "schedule.start"),
    ({"days": ["mon"], "start": "21:00", "end": "7:00"}, "schedule.end"),
    ({"days": ["mon"], "start": "21:00", "end": "07:00", "why": "bed"}, "schedule.why"),
])
def test_a_bad_schedule_is_refused_naming_the_field(data, field):
    with pytest.raises(PolicyError) as e:
        Schedule.from_json(data)
    assert e.value.field == field


def test_a_bad_budget_is_refused_naming_the_field():
    for data, field in (({"bytes": 0, "period": "day"}, "budget.bytes"), ({"bytes": True, "period": "day"}, "budget.bytes"),
                        ({"bytes": 10, "period": "week"}, "budget.period")):
        with pytest.raises(PolicyError) as e:
            Budget.from_json(data)
        assert e.value.field == field


def test_periods_are_the_local_day_and_month():
    assert period_key("day", at("2026-12-07 23:59")) == "2026-12-07"
    assert period_key("month", at("2026-12-31 23:59")) == "2026-12"
