"""Celery tasks: thin wrappers around `service` (acks late: a killed worker's task is not lost)."""
from celery.signals import worker_ready

from appliance.web.applies import service
from appliance.web.celery import app


@app.task(acks_late=True, reject_on_worker_lost=True, autoretry_for=(service.ApplyBusy,),
             retry_backoff=1, retry_backoff_max=5, max_retries=120)
def apply_task(record_id: int) -> str:
    rec = service.run_apply(record_id)
    return rec.state if rec else "gone"


@app.task(acks_late=True, autoretry_for=(service.ApplyBusy,), retry_backoff=1, max_retries=120)
def confirm_deadline_task(record_id: int) -> str:
    rec = service.rollback_if_unconfirmed(record_id)
    return rec.state if rec else "nothing to do"


@worker_ready.connect
def _recover_on_start(**_):
    # The startup check: applies a killed worker left half done are marked and repaired.
    service.recover()
