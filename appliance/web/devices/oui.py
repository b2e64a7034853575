"""A MAC's vendor from the IEEE registry (Debian's `ieee-data`: MA-L, MA-M and MA-S assignments).

Read once per process; without the files every vendor is "" (the console
still lists the device). A locally administered MAC (the "private" random
addresses phones use) has no vendor.
"""
from __future__ import annotations

import csv
import functools
import os
from pathlib import Path

REGISTRY_DIR = Path(os.environ.get("APPLIANCE_OUI_DIR", "/usr/share/ieee-data"))
# The longest assignment first: a MA-S block lies inside a MA-L one.
FILES = (("oui36.csv", 9), ("mam.csv", 7), ("oui.csv", 6))


@functools.lru_cache(maxsize=4)
def registry(directory: Path = REGISTRY_DIR) -> dict[int, dict[str, str]]:
    """Prefix length in hex digits -> {prefix: organization}."""
    out: dict[int, dict[str, str]] = {}
    for name, digits in FILES:
        try:
            with open(directory / name, newline="", encoding="utf-8", errors="replace") as fh:
                table = {row["Assignment"].upper(): row["Organization Name"].strip()
                         for row in csv.DictReader(fh) if len(row.get("Assignment") or "") == digits}
        except (OSError, KeyError, csv.Error):
            continue
        out[digits] = table
    return out


def is_private(mac: str) -> bool:
    """Locally administered (bit 1 of the first octet): not from a vendor's block."""
    return bool(int(mac[:2], 16) & 0x02)


def vendor(mac: str) -> str:
    if is_private(mac):
        return ""
    digits = mac.replace(":", "").upper()
    tables = registry(REGISTRY_DIR)
    for _, n in FILES:
        found = tables.get(n, {}).get(digits[:n])
        if found:
            return found
    return ""
