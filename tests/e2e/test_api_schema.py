"""Schemathesis against the served console with every check, as `schemathesis run --checks all` would.

The console as deployed (uvicorn, the Celery worker, Redis; the box on
fakes), an admin's API token, and the seed's settings with a static lease
(so the item operations have one to read). Every operation of the served
schema goes through schemathesis' coverage, fuzzing and stateful phases,
a few examples each: no 5xx, every answer as documented, bodies the schema
refuses refused, bodies it allows never refused as malformed (the settings'
rules answer 409), no operation answering without the token. The same
checks in-process, per operation: tests/unit/web/test_schema.py.
"""
import os
import secrets
import shutil

import pytest

from tests.support import apicheck
from tests.support.stack import Stack

# Per operation and phase; the whole run stays within a few minutes on two cores. A long run by
# hand, as the held-out check does: SCHEMA_EXAMPLES=100 .venv/bin/pytest -s tests/e2e/test_api_schema.py
MAX_EXAMPLES = int(os.environ.get("SCHEMA_EXAMPLES", "5"))


@pytest.fixture(scope="module")
def console():
    if not shutil.which("redis-server"):
        pytest.skip("needs redis-server (image/packages.txt)")
    s = Stack(workers=1).start()
    try:
        yield s
    finally:
        s.cleanup()


@pytest.fixture(scope="module")
def token(console) -> str:
    key = secrets.token_hex(20)
    console.manage("shell", "-c", f"""
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from appliance.web import document
from tests.support import webfakes
admin = get_user_model().objects.create_superuser("admin", "", "a long passphrase for e2e")
Token.objects.create(user=admin, key="{key}")
document.load_document(webfakes.settings(dhcp={{
    "pools": [{{"start": "192.168.1.65", "end": "192.168.1.199"}}],
    "static_leases": [{{"mac": "02:00:00:00:00:42", "ip": "192.168.1.42", "hostname": "printer"}}]}}))
""")
    return key


def test_every_operation_passes_every_check(console, token):
    result = apicheck.run_live(f"{console.url}/api/schema/", token, max_examples=MAX_EXAMPLES)
    assert result["errors"] == []
    # The served schema, whole: a schema that failed to load or lost its operations passes nothing.
    assert result["operations"] >= 70
    report = "\n\n".join(f"{op}:\n" + "\n".join(f) for op, f in sorted(result["failing"].items()))
    assert not result["failing"], f"{len(result['failing'])} of {result['operations']} operations fail:\n{report}"
    # Every process of the console lived through it.
    assert all(p.poll() is None for p in console.procs.values())
