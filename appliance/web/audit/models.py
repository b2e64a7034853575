"""Who changed what, when, with the settings document's diff."""
from django.conf import settings
from django.db import models


class AuditEntry(models.Model):
    time = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    username = models.CharField(max_length=150, blank=True)  # kept when the user is deleted
    action = models.CharField(max_length=32)  # create, update, delete, apply, restore, login ...
    target = models.CharField(max_length=200, blank=True)  # a document path, "apply #3" ...
    diff = models.TextField(blank=True)
    # Failures (wrong password, setup code) are one row per what, who and source address per window
    # (appliance.web.audit.log.record_failure): how many, and when the last one came.
    source = models.CharField(max_length=45, blank=True)
    count = models.PositiveIntegerField(default=1)
    last = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-time", "-id"]

    def __str__(self):
        times = f" x{self.count}" if self.count > 1 else ""
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.username or '-'} {self.action} {self.target}{times}"
