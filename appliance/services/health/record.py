"""What the watchdog leaves for others to read: its status file and the box's health events.

- status (`Layout.health_status`, under the run directory): rewritten whole
  after every probe round: each service's health, its last failure, the
  health register as written, and the CLOCK_MONOTONIC time of the round
  (the watchdog's own liveness, which its probe reads).
- events (`Layout.health_events`, under the state directory, so they
  survive a reboot and a console that was not running): one JSON object
  per line for every transition (healthy -> unhealthy: the datapath falls
  open; back: steering returns), every restart the watchdog made, every
  start of the watchdog. The console copies them into its audit log
  (`appliance.web.health`); `./manage.py status` prints the last ones.

The events file is cut to its newer half past `MAX_EVENTS_BYTES`.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field

MAX_EVENTS_BYTES = 1 << 20


@dataclass(frozen=True)
class Event:
    service: str
    what: str  # "unhealthy", "healthy", "restart", "watchdog-start", "failsafe"
    detail: str = ""
    time: float = field(default_factory=time.time)  # wall clock: for people
    id: str = ""  # unique: the wall time in ns and the writer's pid

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Event":
        return cls(**{k: data[k] for k in ("service", "what", "detail", "time", "id") if k in data})


def append_event(path: str, event: Event) -> Event:
    """Append one event (flushed and synced: events are rare and must survive a power cut)."""
    if not event.id:
        event = Event(event.service, event.what, event.detail, event.time,
                      f"{int(event.time * 1e9)}-{os.getpid()}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        if os.path.getsize(path) > MAX_EVENTS_BYTES:
            _halve(path)
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(event.to_json()) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return event


def _halve(path: str) -> None:
    with open(path, "rb") as f:
        data = f.read()
    keep = data[len(data) // 2:]
    keep = keep[keep.find(b"\n") + 1:]
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(keep)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_events(path: str, limit: int | None = None) -> list[Event]:
    """The events, oldest first (the last `limit` of them); a torn last line is skipped."""
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines[-limit:] if limit else lines:
        try:
            out.append(Event.from_json(json.loads(line)))
        except (ValueError, TypeError):
            continue
    return out


def write_status(path: str, status: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(status, f)
    os.replace(tmp, path)


def read_status(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None
