"""What the home asked of its devices: groups, schedules and data budgets (pure, no I/O).

The console writes it (`STATE/devices/policy.json`, durably); the devices
service reads it every second. It is user data like a device's name, so it
is not in the settings document: changing it needs no apply, and a schedule
takes effect within the service's next tick.

A schedule is "off from `start` to `end` on `days`", in the box's local
time. `days` are the days a period *starts* on: `mon-fri 21:00-07:00` is
Monday 21:00 to Tuesday 07:00, ..., Friday 21:00 to Saturday 07:00. `start == end` is the whole day from `start`.
A device is off when one of its own schedules or one of its group's is.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # datetime.weekday() order
PERIODS = ("day", "month")
TIME_PATTERN = "^([01][0-9]|2[0-3]):[0-5][0-9]$"
GROUP_MAX = 32
# No control characters (C0, DEL, C1), as in a device's name, and no "/" (a group is a URL's part).
GROUP_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f/]*$"
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f/]")
_TIME = re.compile(TIME_PATTERN)
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
MAX_SCHEDULES = 8
BUDGET_MAX = 10 ** 15   # a petabyte: more is a typo


class PolicyError(ValueError):
    """A policy that cannot be kept; `field` names what is wrong (a JSON path)."""

    def __init__(self, field: str, message: str):
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


def minute_of(text: str, where: str) -> int:
    if not isinstance(text, str) or not _TIME.fullmatch(text):
        raise PolicyError(where, "a time of day as HH:MM (00:00 to 23:59)")
    return int(text[:2]) * 60 + int(text[3:])


def hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@dataclass(frozen=True)
class Schedule:
    """Off from `start` to `end` (minutes of the day) on periods starting on `days`."""

    days: tuple[str, ...]
    start: int
    end: int

    def active(self, now: datetime) -> bool:
        day, prev = DAYS[now.weekday()], DAYS[(now.weekday() - 1) % 7]
        m = now.hour * 60 + now.minute
        if self.start < self.end:
            return day in self.days and self.start <= m < self.end
        # Across midnight (or the whole day when start == end): the evening of a listed day,
        # the morning after one.
        return (day in self.days and m >= self.start) or (prev in self.days and m < self.end)

    def to_json(self) -> dict:
        return {"days": list(self.days), "start": hhmm(self.start), "end": hhmm(self.end)}

    @classmethod
    def from_json(cls, data, where: str = "schedule") -> "Schedule":
        if not isinstance(data, dict):
            raise PolicyError(where, "an object with days, start and end")
        extra = sorted(set(data) - {"days", "start", "end"})
        if extra:
            raise PolicyError(f"{where}.{extra[0]}", "not a field of a schedule (days, start, end)")
        days = data.get("days")
        if not isinstance(days, list) or not days or any(d not in DAYS for d in days) or len(set(days)) != len(days):
            raise PolicyError(f"{where}.days", f"one or more of {', '.join(DAYS)}, each once")
        return cls(tuple(d for d in DAYS if d in days), minute_of(data.get("start"), f"{where}.start"),
                   minute_of(data.get("end"), f"{where}.end"))

    def describe(self) -> str:
        return f"off {hhmm(self.start)}-{hhmm(self.end)} starting {day_range(self.days)}"


def day_range(days: tuple[str, ...]) -> str:
    names = {d: d.capitalize() for d in DAYS}
    if set(days) == set(DAYS):
        return "every day"
    idx = [DAYS.index(d) for d in days]
    if idx == list(range(idx[0], idx[-1] + 1)) and len(idx) > 2:
        return f"{names[days[0]]}-{names[days[-1]]}"
    return ", ".join(names[d] for d in days)


@dataclass(frozen=True)
class Budget:
    """At most `bytes` (both ways) per `period` ("day" or "month", in the box's local time)."""

    bytes: int
    period: str

    def to_json(self) -> dict:
        return {"bytes": self.bytes, "period": self.period}

    @classmethod
    def from_json(cls, data, where: str = "budget") -> "Budget":
        if not isinstance(data, dict):
            raise PolicyError(where, "an object with bytes and period, or null")
        extra = sorted(set(data) - {"bytes", "period"})
        if extra:
            raise PolicyError(f"{where}.{extra[0]}", "not a field of a budget (bytes, period)")
        b = data.get("bytes")
        if not isinstance(b, int) or isinstance(b, bool) or not 1 <= b <= BUDGET_MAX:
            raise PolicyError(f"{where}.bytes", f"a whole number of bytes from 1 to {BUDGET_MAX}")
        if data.get("period") not in PERIODS:
            raise PolicyError(f"{where}.period", f"one of {', '.join(PERIODS)}")
        return cls(b, data["period"])


def period_key(period: str, now: datetime) -> str:
    """The period `now` is in: "2026-12-04" (a day) or "2026-12" (a month)."""
    return now.strftime("%Y-%m-%d" if period == "day" else "%Y-%m")


@dataclass(frozen=True)
class DevicePolicy:
    group: str = ""
    schedules: tuple[Schedule, ...] = ()
    budget: Budget | None = None

    @property
    def empty(self) -> bool:
        return not (self.group or self.schedules or self.budget)


@dataclass(frozen=True)
class Policy:
    devices: Mapping[str, DevicePolicy] = field(default_factory=dict)
    groups: Mapping[str, tuple[Schedule, ...]] = field(default_factory=dict)   # group -> its schedules

    def of(self, mac: str) -> DevicePolicy:
        return self.devices.get(mac, DevicePolicy())

    def members(self, group: str) -> list[str]:
        return sorted(m for m, d in self.devices.items() if d.group == group)

    def group_names(self) -> list[str]:
        return sorted({d.group for d in self.devices.values() if d.group} | set(self.groups))

    def with_device(self, mac: str, d: DevicePolicy) -> "Policy":
        devices = {**self.devices, mac: d}
        if d.empty:
            del devices[mac]
        return Policy(devices, self.groups)

    def with_group(self, name: str, schedules: tuple[Schedule, ...]) -> "Policy":
        groups = {**self.groups, name: schedules}
        if not schedules:
            del groups[name]
        return Policy(self.devices, groups)

    def to_json(self) -> dict:
        return {"devices": {m: {"group": d.group, "schedules": [s.to_json() for s in d.schedules],
                                "budget": d.budget.to_json() if d.budget else None}
                            for m, d in sorted(self.devices.items())},
                "groups": {g: {"schedules": [s.to_json() for s in ss]} for g, ss in sorted(self.groups.items())}}

    @classmethod
    def from_json(cls, data) -> "Policy":
        """Raises PolicyError naming the first thing wrong."""
        if not isinstance(data, dict):
            raise PolicyError("policy", "an object with devices and groups")
        devices = {}
        for mac, d in (data.get("devices") or {}).items():
            where = f"devices.{mac}"
            if not _MAC.fullmatch(mac) or not isinstance(d, dict):
                raise PolicyError(where, "a lower-case MAC with an object")
            group = check_group(d.get("group", ""), f"{where}.group")
            schedules = schedules_from_json(d.get("schedules", []), f"{where}.schedules")
            budget = Budget.from_json(d["budget"], f"{where}.budget") if d.get("budget") is not None else None
            devices[mac] = DevicePolicy(group, schedules, budget)
        groups = {}
        for name, g in (data.get("groups") or {}).items():
            check_group(name, f"groups.{name}")
            if not name or not isinstance(g, dict):
                raise PolicyError(f"groups.{name}", "a group's name with an object")
            groups[name] = schedules_from_json(g.get("schedules", []), f"groups.{name}.schedules")
        return cls(devices, groups)


def check_group(name, where: str) -> str:
    if not isinstance(name, str) or len(name) > GROUP_MAX or _CONTROL.search(name):
        raise PolicyError(where, f"a name of at most {GROUP_MAX} characters, no control character or '/'")
    return name


def schedules_from_json(data, where: str) -> tuple[Schedule, ...]:
    if not isinstance(data, list) or len(data) > MAX_SCHEDULES:
        raise PolicyError(where, f"a list of at most {MAX_SCHEDULES} schedules")
    return tuple(Schedule.from_json(s, f"{where}[{i}]") for i, s in enumerate(data))


def scheduled_off(policy: Policy, now: datetime) -> set[str]:
    """The devices a schedule switches off at `now` (the box's local time, naive)."""
    off = set()
    for mac, d in policy.devices.items():
        if any(s.active(now) for s in (*d.schedules, *policy.groups.get(d.group, ()))):
            off.add(mac)
    return off
