"""Django settings for the appliance's console and API.

Secrets and paths come from the environment (the image's units set them);
the defaults suit development and the lab demo.
"""
import os
import secrets
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent.parent
STATE_DIR = Path(os.environ.get("APPLIANCE_STATE_DIR", BASE_DIR / "var"))


def _secret_key() -> str:
    # No secret in the repository: one is made on first start and kept with
    # the box's state, so sessions survive restarts and upgrades.
    env = os.environ.get("DJANGO_SECRET_KEY")
    if env:
        return env
    path = STATE_DIR / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(50)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key)
        return key


SECRET_KEY = _secret_key()
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
# Loopback and the names in DJANGO_ALLOWED_HOSTS (e.g. the demo's address), then whatever the box is
# reached by: its host name and its admin address (appliance.web.console.hosts).
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]",
                 *filter(None, os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(","))]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "appliance.web.core",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "appliance.web.console.auth.AuthenticationMiddleware",  # Django's, the user read with one plain query
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "appliance.web.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
WSGI_APPLICATION = "appliance.web.wsgi.application"
ASGI_APPLICATION = "appliance.web.asgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("APPLIANCE_DB", STATE_DIR / "appliance.sqlite3"),
        "CONN_MAX_AGE": 600,
        "CONN_HEALTH_CHECKS": True,
        # WAL: readers (every page) never wait for a writer (an apply's progress). synchronous=FULL:
        # a commit is on the disk when it returns (users, the settings document, the apply history
        # survive a power cut); WAL makes that one fsync of the log per commit. Writers from several
        # worker processes and threads at once: a transaction takes the write lock when it begins
        # (IMMEDIATE), so two never both read and then fail to upgrade with "database is locked";
        # a writer waits for the lock (timeout, seconds) instead of failing.
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 30,
                    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"},
    }
}

REDIS_URL = os.environ.get("APPLIANCE_REDIS_URL", "redis://127.0.0.1:6379/0")
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL]},
    }
}
# On the image Redis is a unix socket with a password: unix://:PASSWORD@/run/redis/...?db=0
# for redis-py (the cache, Channels); kombu and Celery spell the same redis+socket://.
_CELERY_REDIS_URL = ("redis+socket://" + REDIS_URL.removeprefix("unix://").replace("db=", "virtual_host=")
                     if REDIS_URL.startswith("unix://") else REDIS_URL)
CELERY_BROKER_URL = _CELERY_REDIS_URL
CELERY_RESULT_BACKEND = _CELERY_REDIS_URL
CELERY_TASK_ACKS_LATE = True

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
}
SPECTACULAR_SETTINGS = {"TITLE": "Appliance API", "VERSION": "0.1.0"}

SESSION_COOKIE_AGE = 8 * 3600
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Strict"
CSRF_COOKIE_SAMESITE = "Strict"
# Served over HTTPS (`appliance.web.serve --certfile`, which sets APPLIANCE_HTTPS=1, as on the image):
# the cookies are Secure and carry the __Host- prefix, so the browser only takes them from this
# origin over HTTPS, for the whole site and no other domain. Over plain HTTP (the demo on loopback)
# a browser would drop both, so they keep their plain names there.
HTTPS = os.environ.get("APPLIANCE_HTTPS", "") == "1"
if HTTPS:
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SESSION_COOKIE_NAME = "__Host-sessionid"
    CSRF_COOKIE_NAME = "__Host-csrftoken"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    # Not a rule: Django tells every validator when a password changes, and this one revokes the API token.
    {"NAME": "appliance.web.console.tokens.RevokeTokensOnPasswordChange"},
]
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = STATE_DIR / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ---------------------------------------------------------------- the console (issue 8)
INSTALLED_APPS += [
    "rest_framework.authtoken",
    "drf_spectacular_sidecar",
    "appliance.web.console",
    "appliance.web.audit",
    "appliance.web.network",
    "appliance.web.dhcp",
    "appliance.web.dns",
    "appliance.web.relay",
    "appliance.web.devices",
    "appliance.web.stats",
    "appliance.web.switch",
    "appliance.web.applies",
    "appliance.web.system",
]
MIDDLEWARE += [
    "appliance.web.console.middleware.SecurityHeadersMiddleware",
    "appliance.web.console.middleware.BackendDownMiddleware",
    "appliance.web.console.middleware.FirstRunMiddleware",
    "appliance.web.console.middleware.DocumentSeedMiddleware",
]
TEMPLATES[0]["OPTIONS"]["context_processors"].append("appliance.web.console.context.nav")
TEMPLATES[0]["OPTIONS"]["context_processors"].append("appliance.web.console.banners.context")
from appliance.web.console.hosts import BoxHosts  # noqa: E402

ALLOWED_HOSTS = BoxHosts(ALLOWED_HOSTS)
LOGIN_URL = "/login/"
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_SAVE_EVERY_REQUEST = False
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"] = [
    "rest_framework.authentication.SessionAuthentication",
    "appliance.web.console.auth.TokenAuthentication",  # DRF's, the token and user in one plain query
]
# The API speaks JSON only: the schema's types are JSON's (a form would make every value text).
REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"] = ["rest_framework.parsers.JSONParser"]
REST_FRAMEWORK["TEST_REQUEST_DEFAULT_FORMAT"] = "json"
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] = {"anon": "30/minute"}
REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] = "appliance.web.openapi.ApplianceAutoSchema"
SPECTACULAR_SETTINGS["SERVE_PERMISSIONS"] = ["rest_framework.permissions.IsAuthenticated"]
SPECTACULAR_SETTINGS["COMPONENT_SPLIT_REQUEST"] = True
# 3.1: the schema is JSON Schema 2020-12, the dialect the settings document's own schema is written in.
SPECTACULAR_SETTINGS["OAS_VERSION"] = "3.1.0"
SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"] = ["drf_spectacular.hooks.postprocess_schema_enums",
                                                "appliance.web.openapi.postprocess"]
SPECTACULAR_SETTINGS["SERVE_INCLUDE_SCHEMA"] = False
# The API docs' Swagger UI from a Python package, served by the box: no CDN.
SPECTACULAR_SETTINGS["SWAGGER_UI_DIST"] = "SIDECAR"
SPECTACULAR_SETTINGS["SWAGGER_UI_FAVICON_HREF"] = "SIDECAR"
SPECTACULAR_SETTINGS["REDOC_DIST"] = "SIDECAR"
# JSON, not pickle: whoever can write to Redis must not be able to run code in the console.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                      "OPTIONS": {"serializer": "appliance.web.console.cache.JsonSerializer"}}}
SESSION_ENGINE = "appliance.web.console.sessions"  # the database's, read with one plain query
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# The box the console manages is the one appliance.box.locate finds
# (APPLIANCE_HOST_NETNS, APPLIANCE_BOX_STATE, APPLIANCE_BOX_RUN, APPLIANCE_SERVICES).
APPLIANCE_BOX_FACTORY = os.environ.get("APPLIANCE_BOX_FACTORY", "")  # "module:function", tests only
APPLIANCE_SOURCES = os.environ.get("APPLIANCE_SOURCES", "")  # "module:function", tests only
APPLIANCE_AUTHORIZED_KEYS = os.environ.get("APPLIANCE_AUTHORIZED_KEYS", str(STATE_DIR / "authorized_keys"))
APPLIANCE_CONFIRM_TIMEOUT = float(os.environ.get("APPLIANCE_CONFIRM_TIMEOUT", "60"))
# Per (user name, client address): after MAX_FAILURES the pair is locked for LOCKOUT_SECONDS, each
# further failure doubling it up to LOCKOUT_MAX_SECONDS (appliance.web.console.lockout).
APPLIANCE_LOGIN_MAX_FAILURES = int(os.environ.get("APPLIANCE_LOGIN_MAX_FAILURES", "5"))
APPLIANCE_LOGIN_LOCKOUT_SECONDS = int(os.environ.get("APPLIANCE_LOGIN_LOCKOUT_SECONDS", "60"))
APPLIANCE_LOGIN_LOCKOUT_MAX_SECONDS = int(os.environ.get("APPLIANCE_LOGIN_LOCKOUT_MAX_SECONDS", "86400"))
# The first run's one-time code (appliance.web.console.setupcode): a root-only file with the console's
# state, and where the local console's login prompt shows it (an agetty issue file, on the image).
# Rewritten by every change a user makes to a device: the devices page's shared rows are kept under it.
APPLIANCE_DEVICES_GENERATION_FILE = os.environ.get("APPLIANCE_DEVICES_GENERATION_FILE",
                                                   str(STATE_DIR / "devices.generation"))
APPLIANCE_SETUP_CODE_FILE = os.environ.get("APPLIANCE_SETUP_CODE_FILE", str(STATE_DIR / "setup-code"))
APPLIANCE_SETUP_ISSUE = os.environ.get("APPLIANCE_SETUP_ISSUE", "")
# Request bodies: refused with 413 by the server past this, before a byte is read (appliance.web.wsgibridge);
# Django then keeps every body and upload in memory (no temporary files).
APPLIANCE_MAX_BODY_BYTES = int(os.environ.get("APPLIANCE_MAX_BODY_BYTES", str(2 << 20)))
DATA_UPLOAD_MAX_MEMORY_SIZE = FILE_UPLOAD_MAX_MEMORY_SIZE = APPLIANCE_MAX_BODY_BYTES
FILE_UPLOAD_HANDLERS = ["django.core.files.uploadhandler.MemoryFileUploadHandler"]
APPLIANCE_RESTORE_MAX_BYTES = int(os.environ.get("APPLIANCE_RESTORE_MAX_BYTES", str(1 << 20)))
# API tokens stop working this many days after they were made (and at once when the password changes).
APPLIANCE_API_TOKEN_DAYS = float(os.environ.get("APPLIANCE_API_TOKEN_DAYS", "30"))
# The audit log: failed logins aggregated per (what, who, source) for AUDIT_WINDOW_SECONDS, at most
# AUDIT_FAILURE_ROWS such rows per window; entries older than RETENTION_DAYS, or past MAX_ROWS, are dropped.
APPLIANCE_AUDIT_WINDOW_SECONDS = int(os.environ.get("APPLIANCE_AUDIT_WINDOW_SECONDS", "900"))
APPLIANCE_AUDIT_FAILURE_ROWS = int(os.environ.get("APPLIANCE_AUDIT_FAILURE_ROWS", "50"))
APPLIANCE_AUDIT_RETENTION_DAYS = int(os.environ.get("APPLIANCE_AUDIT_RETENTION_DAYS", "365"))
APPLIANCE_AUDIT_MAX_ROWS = int(os.environ.get("APPLIANCE_AUDIT_MAX_ROWS", "100000"))
# How old the box's live figures on the pages may be (one reading per worker process per period).
# Whether every page asks Redis and the Celery worker if they answer (appliance.web.console.banners).
APPLIANCE_CHECK_BACKENDS = os.environ.get("APPLIANCE_CHECK_BACKENDS", "1") == "1"
APPLIANCE_LIVE_SECONDS = float(os.environ.get("APPLIANCE_LIVE_SECONDS", "1"))
