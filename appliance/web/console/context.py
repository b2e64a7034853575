"""Template context: the navigation, built from every app's `nav` (adding an app adds its tab).

What every page's frame shows is the same for every request of a process
except the active tab, so it is worked out once: the URLs reversed, the static
asset URLs resolved, and the navigation's HTML kept per active tab (rendering
the frame's dozen links, five `{% static %}` and two `{% url %}` tags took
half of a small page's template time).
"""
from django.apps import apps
from django.templatetags.static import static
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

_NAV: list = []
_FRAME: dict = {}
_NAV_HTML: dict = {}

ASSETS = {"css": "console/console.css", "uplot_css": "console/vendor/uplot/uPlot.min.css",
          "htmx": "console/vendor/htmx/htmx.min.js", "uplot": "console/vendor/uplot/uPlot.iife.min.js",
          "js": "console/console.js"}


def _nav_html(active: str) -> str:
    html = _NAV_HTML.get(active)
    if html is None:
        html = _NAV_HTML[active] = format_html(
            "<nav>{}</nav>", format_html_join("", '<a href="{}" {}>{}</a>', (
                (href, mark_safe('class="active"') if app == active else "", label) for label, href, app in _NAV)))
    return html


def nav(request):
    # Reversing a dozen URL names took a sixth of a page's time; they never change in a process.
    if not _NAV:
        items = sorted((cfg.nav for cfg in apps.get_app_configs() if getattr(cfg, "nav", None)), key=lambda e: e[2])
        _NAV.extend((label, reverse(url), url.split(":")[0]) for label, url, _ in items)
    if not _FRAME:
        _FRAME.update({"account": reverse("console:account"), "logout": reverse("console:logout"),
                       **{name: static(path) for name, path in ASSETS.items()}})
    match = getattr(request, "resolver_match", None)
    return {"nav": _NAV, "frame": _FRAME, "nav_html": _nav_html(match.app_name if match else "")}
