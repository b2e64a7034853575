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


def run_live(schema_url: str, token: str, max_examples: int = 10, seed: int | None = None) -> dict:
    """`schemathesis run SCHEMA_URL --checks all` with the token's header, through the Python API:
    the same phases (coverage, fuzzing, stateful) and checks as the command line, one worker.

    Returns {"operations": N, "failing": {operation: [failure, ...]}, "errors": [...]}.
    """
    import schemathesis
    from schemathesis.config import HealthCheck, SchemathesisConfig
    from schemathesis.engine import Status, events, from_schema

    config = SchemathesisConfig()  # schemathesis' own defaults: no file is read
    config.update(suppress_health_check=[HealthCheck.all], seed=seed, max_failures=None)
    project = config.projects.override
    project.update(headers={"Authorization": f"Token {token}"}, workers=1)
    project.checks.update(included_check_names=["all"])
    project.generation.update(max_examples=max_examples)
    schema = schemathesis.openapi.from_url(schema_url, config=config,
                                           headers={"Authorization": f"Token {token}"})
    operations = {op.ok().label for op in schema.get_all_operations()}
    failing: dict[str, list[str]] = {}
    errors: list[str] = []
    for event in from_schema(schema).execute():
        if isinstance(event, (events.ScenarioFinished, events.FuzzScenarioFinished)):
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        f = check.failure_info
                        text = f"{check.name}: {f.failure.title}\n{f.failure.message}\n{f.code_sample}"
                        where = getattr(f.failure, "operation", None) or event.recorder.label
                        if text not in failing.get(where, []):
                            failing.setdefault(where, []).append(text)
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            errors.append(str(getattr(event, "info", None) or getattr(event, "exception", event)))
    return {"operations": len(operations), "failing": failing, "errors": errors}
