"""The Celery application: applies run here, one at a time."""
import os

from celery import Celery

from appliance.kernel.process import default_signals_in_netns_helpers

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "appliance.web.settings")
# The worker's SIGTERM handler must not run in pyroute2's netns helpers (see there).
default_signals_in_netns_helpers()
app = Celery("appliance")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
