"""The console says what is wrong on every page instead of failing: the boot's fallback, Redis or the
Celery worker down, a DHCP pool nearly full or full."""
import pytest

from appliance.box.boot import BootNote
from appliance.web.console import banners
from tests.support import webfakes as fakes
from tests.support.stack import free_port


@pytest.fixture(autouse=True)
def _fresh():
    banners.forget()
    yield
    banners.forget()


@pytest.fixture
def applied():
    assert fakes.BOX.apply(fakes.settings(dhcp={"pools": [{"start": "192.168.1.100", "end": "192.168.1.103"}],
                                                "pool_warn_percent": 75})).ok


@pytest.mark.django_db
def test_the_boot_note_is_a_banner_on_every_page(client_admin, applied):
    note = BootNote("last-good", ("the applied settings (/s/applied.json) cannot be read: not JSON",), 1.0)
    fakes.BOX.fs.write(fakes.BOX.layout.boot_note, note.to_json())
    for url in ("/", "/dhcp/", "/applies/"):
        page = client_admin.get(url).content.decode()
        assert "runs the last good settings" in page and "cannot be read: not JSON" in page, url


@pytest.mark.django_db
def test_redis_down_is_a_banner_not_a_500(client_admin, settings, applied):
    settings.APPLIANCE_CHECK_BACKENDS = True
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    r = client_admin.get("/")
    assert r.status_code == 200
    assert 'data-banner="redis"' in r.content.decode() and "Redis does not answer" in r.content.decode()


@pytest.mark.django_db
def test_a_view_that_needs_redis_answers_503_saying_so(client, admin, settings):
    settings.APPLIANCE_CHECK_BACKENDS = True
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": settings.REDIS_URL}}
    r = client.post("/login/", {"username": "admin", "password": "wrong"})  # the lockout counts in Redis
    assert r.status_code == 503
    assert "Redis does not answer" in r.content.decode() and "Not available right now" in r.content.decode()


@pytest.mark.django_db
def test_a_worker_that_does_not_answer_is_a_banner(client_admin, settings, monkeypatch, applied):
    settings.APPLIANCE_CHECK_BACKENDS = True
    monkeypatch.setattr(banners, "redis_problem", lambda: None)
    monkeypatch.setattr(banners, "worker_problem", lambda: "no worker answered a ping within 1 s")
    page = client_admin.get("/applies/").content.decode()
    assert 'data-banner="worker"' in page and "applies wait in the queue" in page


@pytest.mark.django_db
def test_the_dhcp_pool_warns_at_its_threshold_and_says_when_it_is_full(client_admin, applied):
    fakes.STATE["leases"] = [{"ip": f"192.168.1.{100 + i}", "mac": f"02:00:00:00:00:{i:02x}", "state": 0}
                             for i in range(3)]
    page = client_admin.get("/").content.decode()
    assert "pool: 3 of 4 leased (75.0%)" in page
    assert 'data-banner="dhcp-pool"' in page and "nearly full: 3 of 4" in page
    fakes.STATE["leases"].append({"ip": "192.168.1.103", "mac": "02:00:00:00:00:09", "state": 0})
    assert "The DHCP pool is full: 4 of 4" in client_admin.get("/").content.decode()
