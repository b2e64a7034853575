"""Regular expressions of DNS rules and lists, in linear time.

Rules run per query on the server's event loop, and their text comes from
the console and from lists downloaded off the internet. Python's `re`
backtracks: `^(a+)+$` against 30 letters takes minutes, and one client
asking such a name would freeze DNS for the whole home. RE2 (google-re2)
matches in time linear in the name, whatever the pattern, and refuses what
only a backtracking engine can do (back-references, look-around) when the
rule is read, with an error naming the problem.
"""

from __future__ import annotations

import logging

import re2

log = logging.getLogger(__name__)

MAX_PATTERN = 1000  # characters of one regex rule
MAX_PROGRAM_MEMORY = 1 << 20  # bytes RE2 may use for one compiled rule (its default: 8 MiB)

_OPTIONS = re2.Options()
_OPTIONS.case_sensitive = False
_OPTIONS.log_errors = False  # the error goes to the user, not to stderr
_OPTIONS.max_mem = MAX_PROGRAM_MEMORY


def compile_pattern(text: str):
    """A compiled, case-insensitive rule regex; ValueError names what is wrong with it."""
    if len(text) > MAX_PATTERN:
        raise ValueError(f"invalid regex: longer than {MAX_PATTERN} characters")
    try:
        return re2.compile(text, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "not accepted"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(f"invalid regex: {reason} (rules use RE2 syntax: no back-references"
                         " or look-around)") from None


SET_MEMORY = 16 << 20  # bytes RE2 may use for one set of a matcher's regexes (program and DFA)
CHUNK = 2000  # regexes in one set: a list's 5,000 AdBlock wildcard lines did not fit in one
MIN_CHUNK = 16  # a set that does not compile is split down to this, then searched rule by rule


class PatternSet:
    """Many regexes searched in a few passes: the first of them a name matches.

    A list with a hundred regex lines (AdBlock `/.../` rules) searched one
    pattern after the other cost 190 us for each name the server had not
    decided before, a quarter of a millisecond of the event loop per new name.
    RE2::Set runs many as one automaton (about 1 us, whatever their number).
    One set holds at most CHUNK patterns: 5,000 AdBlock wildcard lines did
    not compile as one set in SET_MEMORY, and searched one by one they took
    15 ms a name; in sets of two thousand, 2.7 us (20,000: 7.7 us, 42 MB).
    A set that still does not compile is split in halves, down to MIN_CHUNK
    patterns searched one at a time. A set's search says nothing when its
    DFA runs out of memory: it just finds no match. So each set's last
    pattern is the empty one, which matches every name: an answer without it
    is that failure, and that set's patterns are searched one at a time for
    that name.
    """

    def __init__(self, patterns: list[str]):
        """`patterns`: checked by `compile_pattern` when their rules were read."""
        self._patterns = patterns
        self._single: dict[int, object] = {}  # compiled alone, for the one-by-one search, when needed
        self._sets: list[tuple[int, int, object | None]] = []  # (first index, end, C++ set or None)
        self.failures = 0  # searches a set could not answer
        for start in range(0, len(patterns), CHUNK):
            self._add(patterns, start, min(start + CHUNK, len(patterns)))
        alone = sum(end - start for start, end, built in self._sets if built is None)
        if alone:
            log.warning("%d of %d regex rules do not fit in RE2 sets; they are searched one rule at "
                        "a time", alone, len(patterns))

    def _add(self, patterns: list[str], start: int, end: int) -> None:
        built = _compile_set(patterns[start:end])
        if built is None and end - start > MIN_CHUNK:
            middle = (start + end) // 2
            self._add(patterns, start, middle)
            self._add(patterns, middle, end)
        else:
            self._sets.append((start, end, built))

    @property
    def combined(self) -> bool:
        return all(built is not None for _, _, built in self._sets)

    def first(self, name: str, below: int) -> int | None:
        """The lowest index of a pattern below `below` that `name` matches."""
        encoded = None
        for start, end, built in self._sets:
            if start >= below:
                return None
            if built is not None:
                if encoded is None:
                    encoded = name.encode()
                found = built.Match(encoded)
                if found:
                    best = min(found)
                    if best == end - start:  # only the empty pattern: none of this set's
                        continue
                    return start + best if start + best < below else None
                if not self.failures:
                    log.warning("regex rules: RE2's set found no answer for %r (out of memory?); "
                                "such names are searched one rule at a time", name)
                self.failures += 1
            for index in range(start, min(end, below)):
                if self._alone(index).search(name):
                    return index
        return None

    def _alone(self, index: int):
        # Compiled on first need: kept for every pattern, they doubled a big list's memory
        # (20,000 wildcard lines: 56 MB in sets, 56 MB more alone).
        single = self._single.get(index)
        if single is None:
            single = self._single[index] = compile_pattern(self._patterns[index])
        return single


def _compile_set(patterns: list[str]):
    """The C++ RE2 set of `patterns` and a last, empty one; None if RE2 refuses it."""
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False
    options.max_mem = SET_MEMORY
    built = re2.Set.SearchSet(options)
    try:
        for p in patterns:
            built.Add(p)
        built.Add("")
        built.Compile()
    except re2.error:
        return None
    return built._set  # the C++ set: its wrapper's Python costs as much as the search
