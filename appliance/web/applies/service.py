"""Apply, confirm, roll back, recover: the apply history's state machine.

    queue_apply ─> queued ─(worker: lock, box.apply)─> applied
                                   │                 └> awaiting_confirm ─confirm─> confirmed
                                   │                        └─(deadline)─> rolled_back (+ a rollback apply)
                                   └> failed (the box restored the old state: outcome "old")
    worker killed while running ─(next worker start: recover)─> interrupted (outcome "old" or "new")

One apply runs at a time (a lock in the cache, Redis in production). The
progress lines of the box's apply are stored in the record and pushed to
every open console. A change that could cut the admin off (`risk`, comparing
the applied plan with the new one) waits `APPLIANCE_CONFIRM_TIMEOUT` seconds
for a confirm and is rolled back without one. The functions here are the
whole logic; the Celery tasks at the end only call them (`tasks` registers
them with the worker and repairs on its start), and so do the views.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import uuid

from django.conf import settings as django_settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from appliance.box.settings import Settings, parse_settings, to_data
from appliance.web import boxes, document
from appliance.web.applies import live, risk
from appliance.web.applies.deadline import Deadline
from appliance.web.applies.models import ApplyRecord
from appliance.web.audit.log import document_diff, record
from appliance.web.celery import app

log = logging.getLogger(__name__)
LOCK_KEY = "appliance:apply-lock"


class ApplyBusy(Exception):
    """Another apply holds the lock, or one waits for its confirm."""


class NotAllowed(Exception):
    """The record is not in a state that allows this."""


# ---------------------------------------------------------------- helpers

def _event(rec: ApplyRecord, **extra) -> dict:
    shown = shown_deadline(rec)
    return {"kind": "apply", "id": rec.pk, "state": rec.state, "outcome": rec.outcome,
            "deadline": shown.isoformat() if shown else None,
            "left": round(seconds_left(rec), 1) if rec.state == ApplyRecord.AWAITING else None,
            "reasons": rec.confirm_reasons, **extra}


def seconds_left(rec: ApplyRecord) -> float:
    """Until the confirm deadline, on the clock that does not jump (the wall clock for an older record)."""
    d = rec.deadline()
    if d is not None:
        return d.left()
    return max(0.0, (rec.confirm_deadline - timezone.now()).total_seconds()) if rec.confirm_deadline else 0.0


def shown_deadline(rec: ApplyRecord) -> dt.datetime | None:
    """The deadline as the wall clock shows it now (it may have jumped since it was set)."""
    if rec.state != ApplyRecord.AWAITING:
        return rec.confirm_deadline
    if rec.confirm_deadline is None and rec.confirm_at is None:
        return None
    return timezone.now() + dt.timedelta(seconds=seconds_left(rec))


def _set_state(rec: ApplyRecord, state: str, **fields) -> None:
    rec.state = state
    for k, v in fields.items():
        setattr(rec, k, v)
    rec.save()
    live.publish(_event(rec))


def _progress(rec: ApplyRecord):
    def line(text: str) -> None:
        rec.log += text + "\n"
        ApplyRecord.objects.filter(pk=rec.pk).update(log=rec.log)
        # n: the line's number in the log, so a console that connected late can fill gaps.
        live.publish(_event(rec, line=text, n=rec.log.count("\n")))
    return line


@contextlib.contextmanager
def apply_lock(timeout: float | None = None):
    """One apply at a time across workers; raises ApplyBusy if held."""
    token = uuid.uuid4().hex
    ttl = timeout or getattr(django_settings, "APPLIANCE_APPLY_LOCK_TTL", 600)
    if not cache.add(LOCK_KEY, token, ttl):
        raise ApplyBusy("another apply is running")
    try:
        yield
    finally:
        if cache.get(LOCK_KEY) == token:
            cache.delete(LOCK_KEY)


def awaiting() -> ApplyRecord | None:
    return ApplyRecord.objects.filter(state=ApplyRecord.AWAITING).first()


def _enqueue(rec: ApplyRecord) -> None:
    def send():
        try:
            apply_task.apply_async((rec.pk,), task_id=rec.task_id)
        except Exception as e:  # noqa: BLE001 - no broker: say so in the history, touch nothing
            _set_state(rec, ApplyRecord.FAILED, error=f"the task queue is not reachable: {e}",
                       outcome="old", finished=timezone.now())
    transaction.on_commit(send)


# ---------------------------------------------------------------- queue

def queue_apply(user, settings: Settings | None = None, kind: str = "apply") -> ApplyRecord:
    """Record an apply of `settings` (default: the console's document) and queue it.

    Raises SettingsError if the document is invalid (nothing is queued) and
    ApplyBusy while an earlier apply waits for its confirm.
    """
    settings = settings if settings is not None else document.current_settings()
    if kind == "apply" and awaiting() is not None:
        raise ApplyBusy(f"{awaiting()} waits for a confirm; confirm or roll it back first")
    rec = ApplyRecord.objects.create(
        user=user if getattr(user, "is_authenticated", False) else None,
        username=getattr(user, "username", "") or "", kind=kind, settings=to_data(settings),
        task_id=uuid.uuid4().hex)
    record(user, kind, f"apply #{rec.pk}")
    live.publish(_event(rec))
    _enqueue(rec)
    return rec


# ---------------------------------------------------------------- run (in the worker)

def run_apply(record_id: int) -> ApplyRecord | None:
    """The task body: apply one queued record under the lock."""
    with apply_lock():
        rec = ApplyRecord.objects.filter(pk=record_id).first()
        if rec is None or rec.state != ApplyRecord.QUEUED:
            return rec  # redelivered after recovery, or already done
        box = boxes.get_box()
        target = parse_settings(rec.settings)
        progress = _progress(rec)
        try:
            change, error = box.change(target), None
        except Exception as e:  # noqa: BLE001 - it cannot be planned: recorded below, nothing touched
            change, error = None, e
        applied = change.applied if change else box.applied()
        reasons = risk.confirm_reasons(change.old, change.new) if change and rec.kind == "apply" else []
        _set_state(rec, ApplyRecord.RUNNING, started=timezone.now(),
                   previous=to_data(applied.settings) if applied else None,
                   needs_confirm=bool(reasons), confirm_reasons=reasons)
        if change is None:
            return _failed_before_any_change(rec, progress, error)
        try:
            result = box.apply(target, progress=progress, change=change)
        except Exception as e:  # noqa: BLE001 - whatever failed, the record must say so
            return _failed_before_any_change(rec, progress, e)
        rec.diff, rec.changes = result.diff, result.changes
        if not result.ok:
            _set_state(rec, ApplyRecord.FAILED, error=result.error or "", finished=timezone.now(),
                       outcome="old" if result.restored else "")
            return rec
        if rec.kind == "rollback":
            _sync_document(target, rec)  # before the state says so: readers see both at once
        if reasons:
            timeout = django_settings.APPLIANCE_CONFIRM_TIMEOUT
            decides = Deadline.after(timeout)
            progress(f"applied; confirm within {timeout:g} s or it is rolled back ({'; '.join(reasons)})")
            _set_state(rec, ApplyRecord.AWAITING, confirm_deadline=timezone.now() + dt.timedelta(seconds=timeout),
                       confirm_boot=decides.boot, confirm_at=decides.at, outcome="new")
            _schedule_deadline(rec, timeout)
        else:
            _set_state(rec, ApplyRecord.APPLIED, outcome="new", finished=timezone.now())
        return rec


def _failed_before_any_change(rec: ApplyRecord, progress, e: Exception) -> ApplyRecord:
    progress(f"failed before any change: {type(e).__name__}: {e}")
    _set_state(rec, ApplyRecord.FAILED, error=f"{type(e).__name__}: {e}", outcome="old", finished=timezone.now())
    return rec


def _schedule_deadline(rec: ApplyRecord, timeout: float) -> None:
    try:
        confirm_deadline_task.apply_async((rec.pk,), countdown=timeout)
    except Exception as e:  # noqa: BLE001 - the worker's startup check catches it then
        log.warning("deadline of %s not scheduled: %s", rec, e)


def _sync_document(settings: Settings, rec: ApplyRecord) -> None:
    """After a rollback the console's document is what the box runs again."""
    before = document.build_document()
    document.load_document(settings)
    after = document.build_document()
    if before != after:
        record(None, "rollback-document", f"apply #{rec.pk}", document_diff(before, after))


# ---------------------------------------------------------------- confirm and roll back

def confirm(rec: ApplyRecord, user) -> ApplyRecord:
    with transaction.atomic():
        rec = ApplyRecord.objects.select_for_update().get(pk=rec.pk)
        if rec.state != ApplyRecord.AWAITING:
            raise NotAllowed(f"apply #{rec.pk} is {rec.state}, not awaiting a confirm")
        _set_state(rec, ApplyRecord.CONFIRMED, finished=timezone.now())
    record(user, "confirm", f"apply #{rec.pk}")
    return rec


def rollback(rec: ApplyRecord, user, *, reason: str = "rolled back by hand") -> ApplyRecord:
    """Queue an apply of what the box ran before `rec`; returns the rollback's record."""
    rec.refresh_from_db()
    if rec.state not in (ApplyRecord.AWAITING, ApplyRecord.APPLIED, ApplyRecord.CONFIRMED):
        raise NotAllowed(f"apply #{rec.pk} is {rec.state}; only an applied change can be rolled back")
    if rec.previous is None:
        raise NotAllowed(f"apply #{rec.pk} was the first apply; there is nothing to go back to")
    rb = queue_apply(user, parse_settings(rec.previous), kind="rollback")
    rec.log += f"{reason}: rollback is apply #{rb.pk}\n"
    _set_state(rec, ApplyRecord.ROLLED_BACK, rolled_back_by=rb, outcome="old", finished=timezone.now())
    return rb


def rollback_if_unconfirmed(record_id: int) -> ApplyRecord | None:
    """The confirm deadline: roll back now (in this worker) if nobody confirmed."""
    rec = ApplyRecord.objects.filter(pk=record_id).first()
    if rec is None or rec.state != ApplyRecord.AWAITING:
        return None
    left = seconds_left(rec)
    if left > 0.5:
        # Early (a redelivery, or a wall clock that jumped before the task was sent): again when it is due.
        _schedule_deadline(rec, left)
        return None
    with transaction.atomic():
        rb = rollback(rec, None, reason="not confirmed in time")
    return run_apply(rb.pk)


# ---------------------------------------------------------------- recovery (worker start)

def recover() -> list[ApplyRecord]:
    """Mark applies a dead worker left running, and put the box in a whole state.

    `Box` saves what it applied only after every step succeeded, so if its
    settings equal the record's the apply finished (the box runs the new
    settings); otherwise the box may be between the two and the applied
    plan, as it was stored, is applied again over the partial new one (the
    box runs the old settings). Expired confirm deadlines are enforced as well.
    """
    cache.delete(LOCK_KEY)  # its holder died with the old worker
    done = []
    for rec in ApplyRecord.objects.filter(state=ApplyRecord.RUNNING).order_by("id"):
        box = boxes.get_box()
        target = parse_settings(rec.settings)
        applied = box.applied()
        progress = _progress(rec)
        progress("interrupted: the worker stopped during this apply")
        if applied is not None and applied.settings == target:
            progress("the box had finished it: it runs the new settings")
            outcome = "new"
        else:
            progress("restoring the previous settings over the partial apply")
            try:
                partial = box.plan(target, box.observe(target, applied))
                if applied is not None:
                    res = box.applier.apply(applied.plan, partial, progress)
                    if not res.ok:
                        raise RuntimeError(res.error)
                else:
                    box.applier.teardown(partial, progress)
                outcome = "old"
                progress("restored: the box runs the previous settings")
            except Exception as e:  # noqa: BLE001
                progress(f"restore failed: {type(e).__name__}: {e}")
                outcome = ""
        _set_state(rec, ApplyRecord.INTERRUPTED, outcome=outcome, finished=timezone.now(),
                   error="the worker stopped during the apply")
        done.append(rec)
    for rec in ApplyRecord.objects.filter(state=ApplyRecord.AWAITING):
        left = seconds_left(rec)
        if left <= 0:
            rollback_if_unconfirmed(rec.pk)
        else:
            _schedule_deadline(rec, left)
    return done


# ---------------------------------------------------------------- the worker's tasks
# Named as they were when they lived in `tasks`, so queued messages still find them.

@app.task(name="appliance.web.applies.tasks.apply_task", acks_late=True, reject_on_worker_lost=True,
          autoretry_for=(ApplyBusy,), retry_backoff=1, retry_backoff_max=5, max_retries=120)
def apply_task(record_id: int) -> str:
    rec = run_apply(record_id)
    return rec.state if rec else "gone"


@app.task(name="appliance.web.applies.tasks.confirm_deadline_task", acks_late=True,
          autoretry_for=(ApplyBusy,), retry_backoff=1, max_retries=120)
def confirm_deadline_task(record_id: int) -> str:
    rec = rollback_if_unconfirmed(record_id)
    return rec.state if rec else "nothing to do"
