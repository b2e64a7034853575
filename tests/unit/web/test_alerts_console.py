"""The console's alerts: set on the system page, shown by kind of channel (never a URL's secret)."""
import pytest

from appliance.web import document

pytestmark = pytest.mark.django_db


def test_alerts_are_edited_on_the_system_page_and_shown_without_their_secrets(client_admin, doc):
    page = client_admin.get("/system/").content.decode()
    assert 'id="alerts"' in page and "No channel" in page
    r = client_admin.post("/system/alerts/", {"urls": "mailto://me:hunter2@mail.example ntfy://ntfy.example/box",
                                              "events": "service, modem"}, follow=True)
    assert r.status_code == 200
    assert document.current_settings().alerts.urls == ("mailto://me:hunter2@mail.example", "ntfy://ntfy.example/box")
    page = client_admin.get("/system/").content.decode()
    assert "Sent to 2 channels (mailto, ntfy)" in page and "hunter2" not in page


def test_a_url_apprise_does_not_know_is_refused_on_the_form(client_admin, doc):
    r = client_admin.post("/system/alerts/", {"urls": "gopher://x", "events": "service"})
    assert "not a notification URL Apprise knows" in r.content.decode()
    assert document.current_settings().alerts.urls == ()
