"""The console's own state: a user's TOTP second factor."""
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
