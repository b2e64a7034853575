"""CPU time of processes and kernel threads, from /proc (for the benches' cost rows)."""
from __future__ import annotations

import glob
import os
from pathlib import Path


def cpu_seconds(pid: int | str) -> float:
    """utime + stime of a process (its softirq work too: this kernel has no IRQ time accounting)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads_seconds(*prefixes: str) -> float:
    """CPU seconds of every process whose name starts with one of `prefixes` (kernel threads)."""
    total = 0.0
    for comm in glob.glob("/proc/[0-9]*/comm"):
        try:
            if Path(comm).read_text().startswith(prefixes):
                total += cpu_seconds(comm.split("/")[2])
        except (OSError, ValueError):
            pass  # gone meanwhile
    return total
