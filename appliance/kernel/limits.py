"""Resource limits of the running process (setrlimit)."""
from __future__ import annotations

import resource


def raise_open_files(wanted: int) -> int:
    """Raise this process's descriptor limit towards `wanted` (at most its hard limit; raised
    too when privileged); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard)))
        return wanted
    except (ValueError, OSError):
        pass  # not allowed past the hard limit: go as far as it
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target
