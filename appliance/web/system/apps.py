from django.apps import AppConfig


class SystemConfig(AppConfig):
    name = "appliance.web.system"
    label = "system"
    verbose_name = "System"
    nav = ("System", "system:index", 80)
