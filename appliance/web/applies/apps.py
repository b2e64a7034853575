from django.apps import AppConfig


class AppliesConfig(AppConfig):
    name = "appliance.web.applies"
    label = "applies"
    verbose_name = "Apply history"
    nav = ("Applies", "applies:index", 60)
