from django.apps import AppConfig


class SwitchConfig(AppConfig):
    name = "appliance.web.switch"
    label = "switch"
    verbose_name = "Switch"
    nav = ("Switch", "switch:index", 40)
