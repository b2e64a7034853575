"""SSH keys allowed to log in to the box (not part of the settings document), and the alerts section."""
import base64
import binascii

from django.core.exceptions import ValidationError
from django.db import models

from appliance.web import document

KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")


class SshKey(models.Model):
    name = models.CharField(max_length=64, unique=True)
    key = models.TextField(help_text="one line of authorized_keys: type, base64, comment")
    added = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def clean(self):
        parts = (self.key or "").strip().split()
        if len(parts) < 2:
            raise ValidationError({"key": ["expected '<type> <base64> [comment]'"]})
        if parts[0] not in KEY_TYPES:
            raise ValidationError({"key": [f"{parts[0]!r} is not an SSH key type ({', '.join(KEY_TYPES[:3])}, ...)"]})
        try:
            blob = base64.b64decode(parts[1], validate=True)
        except (binascii.Error, ValueError):
            raise ValidationError({"key": ["the key's second word is not base64"]}) from None
        if parts[0].encode() not in blob[:40]:
            raise ValidationError({"key": [f"the key data is not a {parts[0]} key"]})
        if "\n" in self.key.strip():
            raise ValidationError({"key": ["one key per entry"]})


def _all_alert_events():
    from appliance.box.settings import ALERT_EVENTS
    return list(ALERT_EVENTS)


@document.register
class Alerts(document.Section):
    """The document's `alerts`: where the box sends what a home should hear about."""

    doc_path = "alerts"
    doc_fields = {"urls": "urls", "events": "events"}
    urls = models.JSONField(default=list, blank=True,
                            help_text="Apprise URLs: ntfy://host/topic, mailto://user:password@host, "
                                      "tgram://token/chat, json://host:port/path (a webhook)...")
    events = models.JSONField(default=_all_alert_events,
                              help_text="service, modem, new-device, data-budget")
