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


SET_MEMORY = 16 << 20  # bytes RE2 may use for all of a matcher's regexes at once (program and DFA)


class PatternSet:
    """Many regexes searched in one pass: which of them match a name.

    A list with a hundred regex lines (AdBlock `/.../` rules) searched one
    pattern after the other cost 190 us for each name the server had not
    decided before, a quarter of a millisecond of the event loop per new name.
    RE2::Set runs them as one automaton (about 1 us, whatever their number).
    Its search says nothing when its DFA runs out of memory: it just finds no
    match. So the last pattern is the empty one, which matches every name: an
    answer without it is that failure, and those names are searched one
    pattern at a time, as they are if the set does not compile at all.
    """

    def __init__(self, patterns: list[str], compiled: list):
        """`compiled`: the same patterns from `compile_pattern` (the one-by-one search)."""
        self._single = compiled
        self._sentinel = len(patterns)
        self._set = None
        self.failures = 0  # searches the set could not answer
        if not patterns:
            return
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
            log.warning("%d regex rules are too many for one RE2 set; each name is searched one rule "
                        "at a time", len(patterns))
            return
        self._set = built._set  # the C++ set: its wrapper's Python costs as much as the search

    @property
    def combined(self) -> bool:
        return self._set is not None

    def first(self, name: str, below: int) -> int | None:
        """The lowest index of a pattern below `below` that `name` matches."""
        if self._set is not None:
            found = self._set.Match(name.encode())
            if found:
                best = min(found)
                return best if best < below and best != self._sentinel else None
            if not self.failures:
                log.warning("regex rules: RE2's set found no answer for %r (out of memory?); "
                            "such names are searched one rule at a time", name)
            self.failures += 1
        for index, pattern in enumerate(self._single[:below]):
            if pattern.search(name):
                return index
        return None
