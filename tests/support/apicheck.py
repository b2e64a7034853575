"""Schemathesis on the console's API with every check, as the unit and the live tests run it.

The one exclusion is the schema's own: an operation that lists
`x-cross-field-rules` (rules between fields a JSON schema cannot say) may
refuse a body the schema allows with 400. Every other check runs as
schemathesis ships it, `positive_data_acceptance` included for every other
operation and status.
"""
import hypothesis
from schemathesis.checks import positive_data_acceptance

# Random draws (not derandomized: each run tries new bodies), bounded so the run stays short.
SETTINGS = dict(max_examples=25, deadline=None, derandomize=False, database=None,
                suppress_health_check=list(hypothesis.HealthCheck))


def positive_data_acceptance_but_cross_field_rules(ctx, response, case):
    """schemathesis' positive_data_acceptance, except a 400 from an operation's listed cross-field rules."""
    rules = case.operation.definition.raw.get("x-cross-field-rules")
    if rules and response.status_code == 400:
        return None
    return positive_data_acceptance(ctx, response, case)


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
    return case.call_and_validate(excluded_checks=[positive_data_acceptance],
                                  additional_checks=[positive_data_acceptance_but_cross_field_rules], **kw)
