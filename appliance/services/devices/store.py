"""The devices' policy file as the console changes it, and what the devices service counted.

The console is the policy's one writer (several of its processes: a lock
file makes each change a read-change-write of its own); the file is written
durably (`durable.write_atomic`), so the service reads the old policy or the
new one, whole.
"""
from __future__ import annotations

import fcntl
import json
import os
from datetime import datetime
from typing import Callable

from appliance import durable
from appliance.services.devices.policy import Policy, PolicyError
from appliance.services.devices.service import read_policy
from appliance.services.devices.tracker import Tracker


def read(path: str) -> Policy:
    """The policy, empty when none was written; one that does not read is empty too (the
    service keeps its last good one; the console's next change writes a good one over it)."""
    try:
        return read_policy(path)
    except PolicyError:
        return Policy()


def change(path: str, how: Callable[[Policy], Policy]) -> Policy:
    """Write `how(policy)` in place of the policy, one change at a time; returns the new one."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        new = how(read(path))
        durable.write_atomic(path, json.dumps(new.to_json(), indent=1) + "\n")
        return new


def usage(state_path: str, now: datetime | None = None) -> dict[str, dict[str, int]]:
    """MAC -> bytes both ways this day and this month, as the devices service last saved them."""
    try:
        with open(state_path) as f:
            tracker = Tracker.from_json(json.load(f))
    except (OSError, ValueError, TypeError, AttributeError):
        return {}
    now = now or datetime.now()
    return {mac: {p: tracker.used(mac, p, now) for p in ("day", "month")} for mac in tracker.usage}
