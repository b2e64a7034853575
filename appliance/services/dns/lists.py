"""Fetching rule lists from files or URLs, and remembering what loaded.

`ListStore` keeps, per list name, the last text that parsed, its counts and
the last error. A failed fetch or a list with a bad line records the error
and keeps the previous version, so the running policy never loses a list.
Fetching is blocking I/O; the server calls it from a worker thread.

What a list says decides what the home can reach, so where it comes from is
checked when it is fetched (a stored setting from before these checks still
loads; its list shows the error): over https, certificate verified, and
never redirected to plain http; over http only when pinned by `sha256` (any
content but the pinned one is refused, whatever the transport); a file only
from the lists directory (`lists_dir`), symbolic links resolved first.
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.request
from dataclasses import dataclass

from .rules import ListError, ParsedList, parse_list
from .settings import RuleListSettings

MAX_LIST_BYTES = 64 * 1024 * 1024
DEFAULT_LISTS_DIR = "/var/lib/appliance/dns-lists"


class SourceRefused(ValueError):
    """A list source this server will not read from; says why and what to do."""


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not newurl.startswith("https://"):
            raise SourceRefused(f"redirected to {newurl}: only https is followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _open_https(request: urllib.request.Request, timeout: float):
    opener = urllib.request.build_opener(_HttpsOnlyRedirects())
    return opener.open(request, timeout=timeout)


def list_file(source: str, lists_dir: str) -> str:
    """The path of a file source: a name in `lists_dir`, or an absolute path inside it."""
    path = source.removeprefix("file://")
    base = os.path.realpath(lists_dir)
    real = os.path.realpath(os.path.join(base, path))
    if os.path.commonpath([base, real]) != base:
        raise SourceRefused(f"{source} is outside the lists directory {lists_dir}")
    return real


def fetch(source: str, timeout: float = 30, sha256: str | None = None,
          lists_dir: str = DEFAULT_LISTS_DIR) -> str:
    if source.startswith("http://") and sha256 is None:
        raise SourceRefused("plain http can be altered on the way: use https, or pin the list"
                            " with sha256")
    if source.startswith(("http://", "https://")):
        request = urllib.request.Request(source, headers={"User-Agent": "appliance-dns"})
        opener = _open_https if source.startswith("https://") and sha256 is None else \
            lambda r, timeout: urllib.request.urlopen(r, timeout=timeout)
        with opener(request, timeout=timeout) as response:
            data = response.read(MAX_LIST_BYTES + 1)
    else:
        with open(list_file(source, lists_dir), "rb") as fh:
            data = fh.read(MAX_LIST_BYTES + 1)
    if len(data) > MAX_LIST_BYTES:
        raise ValueError(f"larger than {MAX_LIST_BYTES} bytes")
    if sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise SourceRefused(f"content has sha256 {digest}, not the pinned {sha256}")
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
    def __init__(self, lists_dir: str = DEFAULT_LISTS_DIR) -> None:
        self.lists_dir = lists_dir
        self.parsed: dict[str, ParsedList] = {}
        self.status: dict[str, ListStatus] = {}
        self._source: dict[str, tuple] = {}

    def load(self, item: RuleListSettings, now: float | None = None) -> bool:
        """Fetch and parse one list. True if it changed the stored version."""
        now = time.time() if now is None else now
        status = self.status.setdefault(item.name, ListStatus(item.name, item.source))
        status.source = item.source
        try:
            text = fetch(item.source, sha256=item.sha256, lists_dir=self.lists_dir)
            parsed = parse_list(text, item.format, item.plain_match, source=item.name)
        except ListError as exc:
            status.error, status.error_at = str(exc), now
            return False
        except (OSError, ValueError) as exc:
            status.error, status.error_at = f"{item.name}: cannot load {item.source}: {exc}", now
            return False
        self.parsed[item.name] = parsed
        self._source[item.name] = self._key(item)
        status.entries, status.skipped = parsed.count, parsed.skipped
        status.loaded_at, status.error, status.error_at = now, None, None
        return True

    def _key(self, item: RuleListSettings) -> tuple:
        return (item.source, item.format, item.plain_match, item.sha256, self.lists_dir)

    def needs_load(self, item: RuleListSettings) -> bool:
        """A list never loaded, or whose source/format/pin changed on reload."""
        return self._source.get(item.name) != self._key(item)

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
