"""The apply history: every apply, what it changed, how it ended, and the box's state after it."""
from django.conf import settings
from django.db import models


class ApplyRecord(models.Model):
    QUEUED, RUNNING, AWAITING = "queued", "running", "awaiting_confirm"
    APPLIED, CONFIRMED, FAILED = "applied", "confirmed", "failed"
    ROLLED_BACK, INTERRUPTED = "rolled_back", "interrupted"
    STATES = [(s, s.replace("_", " ")) for s in
              (QUEUED, RUNNING, AWAITING, APPLIED, CONFIRMED, FAILED, ROLLED_BACK, INTERRUPTED)]
    ACTIVE = (QUEUED, RUNNING)
    KINDS = [(k, k) for k in ("apply", "rollback", "restore", "recovery")]

    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    username = models.CharField(max_length=150, blank=True)
    kind = models.CharField(max_length=16, choices=KINDS, default="apply")
    state = models.CharField(max_length=20, choices=STATES, default=QUEUED, db_index=True)
    task_id = models.CharField(max_length=64, blank=True)
    settings = models.JSONField(help_text="the settings document this apply puts on the box")
    previous = models.JSONField(null=True, blank=True, help_text="what the box ran before")
    needs_confirm = models.BooleanField(default=False)
    confirm_reasons = models.JSONField(default=list, blank=True)
    confirm_deadline = models.DateTimeField(null=True, blank=True)  # as the wall clock said it then: shown only
    # What decides (`deadline.Deadline`): CLOCK_BOOTTIME seconds of this boot; the wall clock jumps.
    confirm_boot = models.CharField(max_length=40, blank=True)
    confirm_at = models.FloatField(null=True, blank=True,
                                   help_text="the confirm deadline in CLOCK_BOOTTIME seconds of confirm_boot")
    diff = models.TextField(blank=True)
    changes = models.JSONField(default=list, blank=True)
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    # Which settings the box runs after this apply: "new", "old" (restored) or "" (not known yet).
    outcome = models.CharField(max_length=8, blank=True)
    rolled_back_by = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL,
                                       related_name="+")

    class Meta:
        ordering = ["-id"]

    def deadline(self):
        """The confirm deadline (`deadline.Deadline`), None when there is none."""
        from appliance.web.applies.deadline import Deadline

        if self.confirm_at is not None:
            return Deadline(self.confirm_boot, self.confirm_at)
        return None

    def __str__(self):
        return f"apply #{self.pk} ({self.state})"
