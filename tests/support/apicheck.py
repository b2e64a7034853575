"""Schemathesis on the console's API with every check, as schemathesis ships them.

A body the schema allows is never refused with 400: the settings' rules the
schema cannot hold answer 409, which `positive_data_acceptance` takes as
the state's refusal. So no check is excluded or bent here.
"""
import hypothesis

# Random draws (not derandomized: each run tries new bodies), bounded so the run stays short.
SETTINGS = dict(max_examples=25, deadline=None, derandomize=False, database=None,
                suppress_health_check=list(hypothesis.HealthCheck))


def token_auth(schema, token: dict):
    """Send `token["key"]` as DRF's token header, declared as auth so `ignored_auth` probes without it.

    Schemathesis may ask for it before the test's fixtures run: the key is
    fixed in advance, and the fixture makes the token with it."""

    @schema.auth(refresh_interval=None)
    class TokenAuth:
        def get(self, case, ctx):
            return token["key"]

        def set(self, case, data, ctx):
            case.headers = {**(case.headers or {}), "Authorization": f"Token {data}"}

    return TokenAuth


def call(case, **kw):
    return case.call_and_validate(**kw)
