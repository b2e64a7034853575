from django.apps import AppConfig


class DevicesConfig(AppConfig):
    name = "appliance.web.devices"
    label = "devices"
    verbose_name = "Devices"
    nav = ("Devices", "devices:index", 15)
