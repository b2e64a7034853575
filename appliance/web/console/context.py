"""Template context: the navigation, built from every app's `nav` (adding an app adds its tab)."""
from django.apps import apps


def nav(request):
    items = []
    for cfg in apps.get_app_configs():
        entry = getattr(cfg, "nav", None)
        if entry:
            items.append(entry)
    return {"nav": [(label, url) for label, url, _ in sorted(items, key=lambda e: e[2])]}
