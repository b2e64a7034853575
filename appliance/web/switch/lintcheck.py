"""Lint feedback for custom flows as they are typed: syntax errors, then overlaps and shadowing.

The custom flows are linted together with the box's applied flow table, so
a custom flow hidden by one of the box's own is reported; only findings
about the custom flows are returned.
"""
from __future__ import annotations

from appliance.box.plan import PORT_NUMBERS
from appliance.box.settings import custom_flow_errors


def lint_custom(text: str, base_flows=()) -> list[dict]:
    errors = custom_flow_errors(text)
    if errors:
        return [{"severity": "error", "message": m} for m in errors]
    if not text.strip():
        return []
    from appliance.switch.lint import lint
    from appliance.switch.parser import parse_flows

    custom = parse_flows(text, PORT_NUMBERS)
    names = {n: name for name, n in PORT_NUMBERS.items()}
    ids = {id(f) for f in custom}
    out = []
    for finding in lint([*base_flows, *custom]):
        if id(finding.flow) in ids or (finding.other is not None and id(finding.other) in ids):
            out.append({"severity": finding.severity, "message": finding.format(names)})
    return out
