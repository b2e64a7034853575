"""In-memory `Nftables`: tables, maps and sets, for unit tests.

It runs the statements a service writes (`add table`, `delete table`,
`table F T { map ... set ... chain ... }`, `add element`, `delete element`)
with nft's rules: a script is one transaction, deleting what is not there
fails, and a map key cannot be added again with another value. Chains are
accepted and kept as text (the fake has no packets to run them on); element
timeouts never run out (the fake has no clock). Any other statement raises,
so a caller that needs more notices in its unit tests.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

from appliance.kernel.base import KernelError
from appliance.kernel.nftables import Counter


@dataclass
class FakeTable:
    maps: dict[str, dict[str, str]] = field(default_factory=dict)
    sets: dict[str, dict[tuple[str, ...], Counter]] = field(default_factory=dict)
    chains: dict[str, str] = field(default_factory=dict)


_TABLE = re.compile(r"^(add |delete |)table (\w+) (\S+)( \{)?$")
_ELEMENT = re.compile(r"^(add|delete) element (\w+) (\S+) (\S+) \{ (.*) \}$")
_MEMBER = re.compile(r"^(map|set|chain) (\S+) \{(.*)$")
_ELEM = re.compile(r"^(?P<key>.+?)(?: timeout \d+\w*)?(?: counter packets (?P<p>\d+) bytes (?P<b>\d+))?"
                   r"(?: : (?P<value>.+))?$")


class FakeNftables:
    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], FakeTable] = {}
        self.scripts: list[str] = []
        self.fail_on: set[str] = set()  # "run": the next scripts fail

    async def run(self, script: str) -> None:
        if "run" in self.fail_on:
            raise KernelError("nft -f -: injected failure")
        tables = copy.deepcopy(self.tables)
        lines = [ln.strip() for ln in script.splitlines()]
        i = 0
        while i < len(lines):
            line = lines[i]
            i += 1
            if not line or line.startswith("#"):
                continue
            if m := _TABLE.match(line):
                verb, key = m.group(1).strip(), (m.group(2), m.group(3))
                if verb == "delete":
                    if tables.pop(key, None) is None:
                        raise _error("No such file or directory", line)
                    continue
                table = tables.setdefault(key, FakeTable())
                if m.group(4):
                    i = _body(table, lines, i, line)
                continue
            if m := _ELEMENT.match(line):
                table = tables.get((m.group(2), m.group(3)))
                if table is None:
                    raise _error("No such file or directory", line)
                _elements(table, m.group(1), m.group(4), m.group(5), line)
                continue
            raise KernelError(f"nft -f -: the fake does not run this statement: {line}")
        self.tables = tables
        self.scripts.append(script)

    def _table(self, family: str, table: str) -> FakeTable:
        try:
            return self.tables[(family, table)]
        except KeyError:
            raise _error("No such file or directory", f"list table {family} {table}") from None

    async def map_elements(self, family, table, name):
        maps = self._table(family, table).maps
        if name not in maps:
            raise KernelError(f"nft: no map {name} in table {family} {table}")
        return dict(maps[name])

    async def set_counters(self, family, table, names):
        sets = self._table(family, table).sets
        return {name: dict(sets.get(name, {})) for name in names}


def _error(reason: str, line: str) -> KernelError:
    return KernelError(f"nft -f -: Error: Could not process rule: {reason}\n{line}")


def _body(table: FakeTable, lines: list[str], i: int, head: str) -> int:
    """Read a table's body from line `i` to its closing brace; the line after it."""
    while i < len(lines):
        line = lines[i]
        i += 1
        if line == "}":
            return i
        m = _MEMBER.match(line)
        if m is None:
            raise KernelError(f"nft -f -: the fake does not run this statement: {line}")
        kind, name, rest = m.groups()
        text = [rest]
        depth = 1 + rest.count("{") - rest.count("}")
        while depth > 0:
            if i >= len(lines):
                raise _error("syntax error, unexpected end of file", head)
            text.append(lines[i])
            depth += lines[i].count("{") - lines[i].count("}")
            i += 1
        if kind == "map":
            table.maps.setdefault(name, {})
        elif kind == "set":
            table.sets.setdefault(name, {})
        else:
            table.chains[name] = "\n".join(text)
    raise _error("syntax error, unexpected end of file", head)


def _elements(table: FakeTable, verb: str, name: str, body: str, line: str) -> None:
    is_map = name in table.maps
    if not is_map and name not in table.sets:
        raise _error("No such file or directory", line)
    for part in (p.strip() for p in body.split(",")):
        m = _ELEM.match(part)
        key = m.group("key").strip()
        if is_map:
            elems = table.maps[name]
            if verb == "delete":
                if elems.pop(key, None) is None:
                    raise _error("No such file or directory", line)
            elif key in elems and elems[key] != m.group("value"):
                raise _error("File exists", line)
            else:
                elems[key] = m.group("value")
            continue
        elems = table.sets[name]
        # an IPv4 address has dots too: a concatenation is "a . b", with spaces
        parts = tuple(p.strip() for p in key.split(" . "))
        if verb == "delete":
            if elems.pop(parts, None) is None:
                raise _error("No such file or directory", line)
        elif parts not in elems:
            elems[parts] = Counter(int(m.group("p") or 0), int(m.group("b") or 0))
