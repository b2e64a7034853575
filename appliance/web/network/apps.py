from django.apps import AppConfig


class NetworkConfig(AppConfig):
    name = "appliance.web.network"
    label = "network"
    verbose_name = "Network"
    nav = ("Network", "network:index", 20)
