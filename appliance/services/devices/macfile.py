"""The {"macs": [...]} files the devices' pause is kept in (`paused.json`, the console's;
`scheduled.json`, the devices service's), read by the datapath's loader, the devices service
and the DNS server alike."""
from __future__ import annotations

import json


def read_macs(path) -> set[str]:
    """The MACs in the file, lower-cased; empty when it is absent or unreadable (nobody)."""
    try:
        with open(path) as f:
            return {str(m).lower() for m in json.load(f).get("macs", [])}
    except (OSError, ValueError, AttributeError, TypeError):
        return set()
