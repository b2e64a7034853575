"""What a console worker loads at start instead of on its first requests.

A fresh worker's first dashboard took 190 ms on the lab box against 1.4 ms
for the next: it imported about a hundred modules (redis, Celery's control
and kombu's Redis transport for the banners' checks, Django's template
loaders, context processors, message storage and SQL compiler), compiled the
templates and populated the URL resolver, all while every other request of
that worker waited behind it. After a restart that is the first page a user
opens; under load it set the first second's p95 (124 ms against 35 ms the
second after). `warm()` does that work before the worker accepts a
connection, and asgi.py freezes the result out of the garbage collector's
sight with the rest. It reads nothing of the box and asks Redis nothing:
a worker whose Redis or box is down starts as fast as before.
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.template import TemplateSyntaxError, engines
from django.utils.module_loading import import_string

log = logging.getLogger(__name__)

# Imported inside the functions that need them (so a command that never needs them does not pay).
LAZY_MODULES = (
    "redis",  # banners.redis_problem, the login lockout
    "celery.app.control", "kombu.pidbox", "kombu.transport.redis",  # banners.worker_problem's ping
    "django.db.models.sql.compiler",  # the first query
    "django.contrib.sessions.serializers",
    "appliance.box.boot",  # the boot note's banner
    "appliance.services.dns.querylog", "appliance.services.dns.querydisk",  # the query log page
    "appliance.web.audit.health",
    "pyotp",  # the account page (two-factor set-up)
)


def warm() -> None:
    """Import, compile and resolve what the pages need."""
    for name in LAZY_MODULES:
        importlib.import_module(name)
    for engine in settings.TEMPLATES:
        for path in engine.get("OPTIONS", {}).get("context_processors", []):
            import_string(path)
    import_string(settings.MESSAGE_STORAGE)
    from django.utils import formats

    formats.get_format("DATETIME_FORMAT")  # imports the locale's formats module (the first date on a page)
    _compile_templates()
    from appliance.web.celery import app

    app.control  # noqa: B018 - a cached property: builds the broadcast mailbox once
    from appliance.web.console import context

    context.nav(None)  # the navigation's URLs reversed (which populates the resolver) and assets resolved


def _compile_templates() -> None:
    """Every template of the appliance's apps, through the cached loader: compiled once per process."""
    engine = engines["django"]
    for cfg in apps.get_app_configs():
        if not cfg.name.startswith("appliance."):
            continue
        root = Path(cfg.path) / "templates"
        for path in sorted(root.rglob("*.html")) if root.is_dir() else ():
            try:
                engine.get_template(path.relative_to(root).as_posix())
            except TemplateSyntaxError as e:  # that page fails as it would have; the worker still starts
                log.error("template %s: %s", path, e)
