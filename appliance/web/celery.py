"""The Celery application: applies run here, one at a time."""
import os

import pyroute2.config
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "appliance.web.settings")
# pyroute2 forks a helper for each netns operation and ends it with SIGTERM.
# The helper is a copy of this worker: with Celery's SIGTERM handler it logged
# "Warm shutdown" and unwound the copied task (finally blocks included, such
# as releasing the apply lock) before it died, and the apply waited for it.
# With the default handler it just dies.
pyroute2.config.disable_mp_signal = True
app = Celery("appliance")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
