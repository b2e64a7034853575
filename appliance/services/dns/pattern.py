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

import re2

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
