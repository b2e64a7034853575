"""Fetching rule lists from files or URLs, and remembering what loaded.

`ListStore` keeps, per list name, the last text that parsed, its counts and
the last error. A failed fetch or a list with a bad line records the error
and keeps the previous version, so the running policy never loses a list.
Fetching is blocking I/O; the server calls it from a worker thread.
"""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass

from .rules import ListError, ParsedList, parse_list
from .settings import RuleListSettings

MAX_LIST_BYTES = 64 * 1024 * 1024


def fetch(source: str, timeout: float = 30) -> str:
    if source.startswith(("http://", "https://")):
        request = urllib.request.Request(source, headers={"User-Agent": "appliance-dns"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read(MAX_LIST_BYTES + 1)
    else:
        path = source.removeprefix("file://")
        with open(path, "rb") as fh:
            data = fh.read(MAX_LIST_BYTES + 1)
    if len(data) > MAX_LIST_BYTES:
        raise ValueError(f"larger than {MAX_LIST_BYTES} bytes")
    return data.decode("utf-8", "replace")


@dataclass
class ListStatus:
    name: str
    source: str
    entries: int = 0
    skipped: int = 0
    loaded_at: float | None = None
    error: str | None = None
    error_at: float | None = None


class ListStore:
    def __init__(self) -> None:
        self.parsed: dict[str, ParsedList] = {}
        self.status: dict[str, ListStatus] = {}
        self._source: dict[str, tuple[str, str, str]] = {}

    def load(self, item: RuleListSettings, now: float | None = None) -> bool:
        """Fetch and parse one list. True if it changed the stored version."""
        now = time.time() if now is None else now
        status = self.status.setdefault(item.name, ListStatus(item.name, item.source))
        status.source = item.source
        try:
            text = fetch(item.source)
            parsed = parse_list(text, item.format, item.plain_match, source=item.name)
        except ListError as exc:
            status.error, status.error_at = str(exc), now
            return False
        except (OSError, ValueError) as exc:
            status.error, status.error_at = f"{item.name}: cannot load {item.source}: {exc}", now
            return False
        self.parsed[item.name] = parsed
        self._source[item.name] = (item.source, item.format, item.plain_match)
        status.entries, status.skipped = parsed.count, parsed.skipped
        status.loaded_at, status.error, status.error_at = now, None, None
        return True

    def needs_load(self, item: RuleListSettings) -> bool:
        """A list never loaded, or whose source/format changed on reload."""
        return self._source.get(item.name) != (item.source, item.format, item.plain_match)

    def forget_except(self, names: set[str]) -> None:
        for name in list(self.parsed):
            if name not in names:
                self.parsed.pop(name, None)
                self._source.pop(name, None)
        for name in list(self.status):
            if name not in names:
                del self.status[name]

    def counts(self) -> list[dict]:
        return [vars(s).copy() for s in self.status.values()]


def read_lists(store: ListStore, items: list[RuleListSettings], only_new: bool = False) -> list[str]:
    """Load lists; return the errors (the store keeps the previous versions)."""
    errors = []
    for item in items:
        if not item.enabled or (only_new and not store.needs_load(item)):
            continue
        if not store.load(item):
            errors.append(store.status[item.name].error or item.name)
    return errors
