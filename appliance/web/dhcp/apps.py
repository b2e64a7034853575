from django.apps import AppConfig


class DhcpConfig(AppConfig):
    name = "appliance.web.dhcp"
    label = "dhcp"
    verbose_name = "DHCP"
    nav = ("DHCP", "dhcp:index", 30)
