"""The DNS section of the settings document, kept whole.

The DNS service's settings (`appliance.services.dns.settings.DnsSettings`)
are a document of their own, embedded as `dns`; the console keeps it as one
JSON value (null: the DNS service's defaults) and validates it with the rest.
"""
from django.db import models

from appliance.web import document


@document.register
class DnsService(document.Section):
    doc_path = "dns"
    doc_fields = {}
    config = models.JSONField(null=True, blank=True, help_text="the DNS service's settings; null: defaults")

    def to_doc(self):
        return self.config

    @classmethod
    def from_doc(cls, data, position=0):
        return cls(config=data or None)

    def clean(self):
        from django.core.exceptions import ValidationError

        from appliance.box.settings import settings_errors

        errors = settings_errors(document.build_document(replace=self))
        if errors:
            raise ValidationError({"config": [f"{p}: {m}" for p, ms in errors.items() for m in ms]})
