"""The console's own state: a user's TOTP second factor, and the first run's guard."""
from django.conf import settings
from django.db import models


class TotpDevice(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="totp")
    secret = models.CharField(max_length=64)
    confirmed = models.BooleanField(default=False)  # only a confirmed device is asked for at login
    last_counter = models.BigIntegerField(default=0)  # a code is accepted once

    def __str__(self):
        return f"TOTP of {self.user}"

    def verify(self, code: str) -> bool:
        import time

        import pyotp

        totp = pyotp.TOTP(self.secret)
        code = (code or "").strip().replace(" ", "")
        now = int(time.time())
        for drift in (-1, 0, 1):
            counter = now // 30 + drift
            if counter > self.last_counter and totp.at(counter * 30) == code:
                self.last_counter = counter
                self.save(update_fields=["last_counter"])
                return True
        return False


class FirstAdmin(models.Model):
    """The one row that says the first admin was made: creating it is what makes first run atomic.

    /setup/ inserts this row in the transaction that creates the admin, and
    its primary key can only be 1, so of two first visitors at once the
    database refuses the second (SQLite ignores `select_for_update`, which
    was the guard before).
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    user = models.OneToOneField(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="console_firstadmin_only_one")]

    def __str__(self):
        return f"first admin {self.user}"
