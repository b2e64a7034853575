"""Schemathesis against the OpenAPI schema, in-process (WSGI) on the fake box: every check.

No 5xx; every answer documented (status, content type, body); bodies the
schema refuses are refused (400, the field named); bodies it allows are
accepted or refused by the settings' rules as a conflict (409), never 400;
no operation answers without the token.
Applies are queued but not run (no worker here), so generated input can
change the console's settings but never the box. The same run against the
served console: tests/e2e/test_api_schema.py.
"""
import hypothesis
import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from drf_spectacular.generators import SchemaGenerator
from rest_framework.authtoken.models import Token

from tests.support import apicheck

pytestmark = pytest.mark.django_db
TOKEN = {"key": "5c4e3a0d" * 5}


def _schema():
    import django
    django.setup()
    raw = SchemaGenerator().get_schema(request=None, public=True)
    schema = schemathesis.openapi.from_dict(raw)
    schema.app = get_wsgi_application()
    apicheck.token_auth(schema, TOKEN)
    return schema


schema = _schema()


@pytest.fixture
def token(admin, doc, settings, django_capture_on_commit_callbacks):
    settings.DEBUG_PROPAGATE_EXCEPTIONS = False
    Token.objects.create(user=admin, key=TOKEN["key"])
    return TOKEN["key"]


@schema.parametrize()
@hypothesis.settings(**{**apicheck.SETTINGS, "max_examples": 10})
def test_api_conforms_to_its_schema(case, token):
    apicheck.call(case, headers={"Host": "localhost"})
