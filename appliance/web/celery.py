"""The Celery application: applies run here, one at a time."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "appliance.web.settings")
app = Celery("appliance")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
