from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "appliance.web.console"
    label = "console"
    verbose_name = "Console"
    nav = ("Dashboard", "console:dashboard", 10)
