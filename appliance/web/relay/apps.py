from django.apps import AppConfig


class RelayConfig(AppConfig):
    name = "appliance.web.relay"
    label = "relay"
    verbose_name = "Relay"
    nav = ("Relay", "relay:index", 37)
