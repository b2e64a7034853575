from django.apps import AppConfig


class StatsConfig(AppConfig):
    name = "appliance.web.stats"
    label = "stats"
    verbose_name = "Charts"
    nav = ("Charts", "stats:index", 12)
