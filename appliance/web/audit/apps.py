from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "appliance.web.audit"
    label = "audit"
    verbose_name = "Audit log"
    nav = ("Audit", "audit:index", 70)
