"""Lint for flow tables: what Open vSwitch accepts without a word but is wrong.

``lint(flows, bridge=None)`` returns `Finding`s, most severe first:

- ``overlap`` (warning): two flows in one table with equal priority that
  some packet matches both, with different actions. OpenFlow leaves the
  winner undefined (OVS's choice depends on its internal order; ours is
  insertion order), so the table must not depend on it. Equal-priority
  overlaps with identical actions are reported as ``overlap-same`` (info):
  harmless today, fragile tomorrow.
- ``shadowed`` (warning): a flow that can never match because a single
  higher-priority flow matches every packet it would.
- ``normalised`` (info): text OVS silently rewrites (host bits outside a
  mask, zero masks, a field repeating a shorthand), from the parser's notes.
- ``no-such-port`` (error): in_port, output or resubmit naming a port
  number the bridge does not have (needs `bridge`).
- ``output-to-in-port`` (warning): `output:P` in a flow that only matches
  in_port=P, which OpenFlow always skips (use IN_PORT).
- ``empty-table`` (warning): resubmit/goto_table to a table with no flows.
- ``prerequisite`` (error): a match field without its prerequisite
  (`nd_target` without `icmp6,icmp_type=135` or `136`, ...), which OVS
  ignores ("prerequisites not met"). The parser refuses such text; this
  catches flows built as data (the box's plan).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from . import flows as FL
from .fields import FIELD_BY_NAME
from .flows import Flow

if TYPE_CHECKING:
    from .bridge import Bridge

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Finding:
    severity: str
    code: str
    flow: Flow
    message: str
    other: Flow | None = None

    def format(self, port_names=None) -> str:
        where = f"line {self.flow.line}: " if self.flow.line else ""
        text = f"{self.severity}: {where}[{self.code}] {self.message}\n    {self.flow.to_ofctl(port_names)}"
        if self.other is not None:
            ow = f"line {self.other.line}: " if self.other.line else ""
            text += f"\n    {ow}{self.other.to_ofctl(port_names)}"
        return text


def _ports_used(flow: Flow) -> Iterable[tuple[str, int]]:
    if "in_port" in flow.match:
        yield "in_port", flow.match.values["in_port"]
    for a in flow.actions:
        if isinstance(a, FL.Output):
            yield "output", a.port
        elif isinstance(a, FL.Resubmit) and a.port is not None:
            yield "resubmit", a.port


def lint(flows: Iterable[Flow], bridge: "Bridge | None" = None) -> list[Finding]:
    flows = list(flows)
    names = bridge.port_names if bridge else None
    out: list[Finding] = []
    by_table: dict[int, list[tuple[int, Flow]]] = {}
    for i, f in enumerate(flows):
        by_table.setdefault(f.table, []).append((i, f))
        for note in f.notes:
            out.append(Finding("info", "normalised", f, note))
    for table, entries in by_table.items():
        for a_pos, (ai, a) in enumerate(entries):
            for bi, b in entries[a_pos + 1:]:
                # a was added before b.
                if not a.match.overlaps(b.match):
                    continue
                if a.priority == b.priority:
                    if a.match.covers(b.match):
                        out.append(Finding("warning", "overlap", a,
                                           f"equal priority {a.priority}: the other flow only matches packets this "
                                           f"one matches too; OpenFlow leaves the winner undefined (here the first "
                                           f"added wins, so the other never matches)", b))
                    elif a.actions != b.actions:
                        out.append(Finding("warning", "overlap", a,
                                           f"equal priority {a.priority} overlaps with different actions: "
                                           f"the result for packets matching both depends on flow order", b))
                    else:
                        out.append(Finding("info", "overlap-same", a,
                                           f"equal priority {a.priority} overlaps (same actions, harmless today)", b))
                elif a.priority > b.priority and a.match.covers(b.match):
                    out.append(Finding("warning", "shadowed", b,
                                       f"never matches: priority {a.priority} flow matches every packet it would", a))
                elif b.priority > a.priority and b.match.covers(a.match):
                    out.append(Finding("warning", "shadowed", a,
                                       f"never matches: priority {b.priority} flow matches every packet it would", b))
    tables = set(by_table)
    for f in flows:
        for name in f.match.masks:
            pre = FIELD_BY_NAME[name].prereq
            if pre is not None and not pre.satisfied_by(f.match.values, f.match.masks):
                out.append(Finding("error", "prerequisite", f,
                                   f"{name} needs {pre.describe()}: {pre.hint} (Open vSwitch: "
                                   f"prerequisites not met, the field is ignored)"))
        for a in f.actions:
            t = a.table if isinstance(a, (FL.Resubmit, FL.GotoTable)) else None
            if t is not None and t not in tables:
                out.append(Finding("warning", "empty-table", f,
                                   f"{a.to_ofctl(names)} goes to table {t}, which has no flows (packets are dropped there)"))
        if "in_port" in f.match:
            pin = f.match.values["in_port"]
            for a in f.actions:
                if isinstance(a, FL.Output) and a.port == pin:
                    out.append(Finding("warning", "output-to-in-port", f,
                                       f"{a.to_ofctl(names)} is the flow's own in_port and is always skipped; use IN_PORT"))
        if bridge is not None:
            known = set(bridge.ports.values())
            for what, port in _ports_used(f):
                if port not in known and port not in FL.RESERVED_NAMES:
                    out.append(Finding("error", "no-such-port", f,
                                       f"{what} port {port} does not exist on bridge {bridge.name}"))
    out.sort(key=lambda x: SEVERITY_ORDER[x.severity])
    return out


def format_findings(findings: list[Finding], port_names=None) -> str:
    if not findings:
        return "no findings\n"
    counts = {s: sum(1 for f in findings if f.severity == s) for s in SEVERITY_ORDER}
    body = "\n".join(f.format(port_names) for f in findings)
    summary = ", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items() if n)
    return f"{body}\n{summary}\n"
