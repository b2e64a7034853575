from django.apps import AppConfig


class DnsConfig(AppConfig):
    name = "appliance.web.dns"
    label = "dns"
    verbose_name = "DNS"
    nav = ("DNS", "dns:index", 35)
