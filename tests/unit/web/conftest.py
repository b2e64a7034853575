"""Console tests: SQLite, in-memory cache and channel layer, Celery eager, the Box on fakes."""
import pytest

from tests.support import webfakes as fakes


@pytest.fixture(autouse=True)
def _console_settings(settings, tmp_path):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.APPLIANCE_BOX_FACTORY = "tests.support.webfakes:make_box"
    settings.APPLIANCE_SOURCES = "tests.support.webfakes:make_sources"
    settings.APPLIANCE_AUTHORIZED_KEYS = str(tmp_path / "authorized_keys")
    settings.APPLIANCE_SETUP_CODE_FILE = str(tmp_path / "setup-code")
    settings.APPLIANCE_DEVICES_GENERATION_FILE = str(tmp_path / "devices.generation")
    settings.APPLIANCE_SETUP_ISSUE = ""
    settings.APPLIANCE_CONFIRM_TIMEOUT = 30
    settings.APPLIANCE_LIVE_SECONDS = 0  # the tests change the fakes and look at once
    settings.APPLIANCE_CHECK_BACKENDS = False  # no Redis nor worker here; test_banners gives them
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    from appliance.web.celery import app
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    from django.core.cache import cache
    cache.clear()
    from appliance.web import document, sources
    document._DATA.clear()  # the database is rolled back between tests; the revision starts again
    sources._CACHE.clear()
    fakes.BOX = fakes.new_box(str(tmp_path))
    fakes.STATE["leases"] = []
    fakes.STATE["macs"] = None
    yield
    fakes.BOX = None


@pytest.fixture
def doc(db):
    """The console holds the seed's settings (nothing applied yet)."""
    from appliance.web import document
    document.load_document(fakes.settings())
    return fakes.settings()


@pytest.fixture
def admin(db):
    from django.contrib.auth import get_user_model
    return get_user_model().objects.create_superuser("admin", "", "correct horse battery")


@pytest.fixture
def client_admin(client, admin, doc):
    client.force_login(admin)
    return client


@pytest.fixture
def api(admin, doc):
    from rest_framework.test import APIClient
    c = APIClient()
    c.force_authenticate(admin)
    return c
