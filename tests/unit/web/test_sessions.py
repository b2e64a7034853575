"""The console's session store (appliance.web.console.sessions): Django's database sessions, read by one query."""
from datetime import timedelta

import pytest
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from appliance.web.console.sessions import SessionStore

pytestmark = pytest.mark.django_db


def test_a_saved_session_reads_back_and_an_expired_or_unknown_one_is_empty():
    s = SessionStore()
    s["x"] = 1
    s.save()
    assert SessionStore(s.session_key)["x"] == 1
    Session.objects.filter(session_key=s.session_key).update(expire_date=timezone.now() - timedelta(seconds=1))
    gone = SessionStore(s.session_key)
    assert dict(gone.items()) == {} and gone.session_key is None
    unknown = SessionStore("x" * 32)
    assert dict(unknown.items()) == {} and unknown.session_key is None


def test_pages_need_a_live_session(admin, doc):
    c = Client()
    c.force_login(admin)
    assert c.get("/").status_code == 200
    Session.objects.update(expire_date=timezone.now() - timedelta(seconds=1))
    assert c.get("/").status_code == 302
    c.force_login(admin)
    c.post("/logout/")
    assert c.get("/").status_code == 302
