"""The apply's Celery tasks (defined with their logic in `service`; acks late: a killed
worker's task is not lost), and the repair a worker makes when it starts."""
from celery.signals import worker_ready

from appliance.web.applies import service
from appliance.web.applies.service import apply_task, confirm_deadline_task  # noqa: F401 - what Celery finds here


@worker_ready.connect
def _recover_on_start(**_):
    # The startup check: applies a killed worker left half done are marked and repaired.
    service.recover()
