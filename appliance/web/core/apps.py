from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "appliance.web.core"
    label = "core"
    verbose_name = "Appliance core"
