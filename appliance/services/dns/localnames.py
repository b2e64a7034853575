"""Local names: DHCP leases and static hosts as `hostname.lan`, both ways.

Leases come from callables returning (hostname, ip, mac) tuples, so the DHCP
service (Kea, issue of its own) only has to provide one such callable;
`kea_lease_file` reads Kea's memfile CSV for the server process.
"""

from __future__ import annotations

import csv
import ipaddress
import re
import time
from typing import Callable, Iterable

LeaseSource = Callable[[], Iterable[tuple[str, str, str | None]]]

_BAD = re.compile(r"[^a-z0-9-]+")


def clean_hostname(name: str, domain: str) -> str | None:
    """A DHCP client's hostname as one DNS label, or None if nothing is left."""
    name = name.strip().lower().rstrip(".")
    if name.endswith("." + domain):
        name = name[: -len(domain) - 1]
    name = name.split(".", 1)[0]
    name = _BAD.sub("-", name).strip("-")[:63]
    return name or None


class LocalNames:
    def __init__(self, domain: str = "lan", sources: list[LeaseSource] | None = None,
                 static: Iterable[tuple[str, str, str | None]] = ()):
        self.domain = domain
        self.sources = list(sources or [])
        self.static = list(static)
        self._forward: dict[str, list[str]] = {}
        self._reverse: dict[str, str] = {}
        self._macs: dict[str, str] = {}
        self.errors: list[str] = []
        self.refresh()

    def refresh(self) -> None:
        forward: dict[str, list[str]] = {}
        reverse: dict[str, str] = {}
        errors = []
        entries: list[tuple[str, str, str | None]] = list(self.static)
        for source in self.sources:
            try:
                entries.extend(source())
            except Exception as exc:  # a broken lease source must not take DNS down
                errors.append(f"lease source: {exc}")
        # Static entries come first, so they win over a lease with the same name.
        macs: dict[str, str] = {}
        static_count = len(self.static)
        for index, (hostname, ip, mac) in enumerate(entries):
            if mac and ip:
                macs.setdefault(str(ip), mac.lower())
            label = clean_hostname(hostname or "", self.domain)
            try:
                address = str(ipaddress.ip_address(ip))
            except ValueError:
                continue
            if label is None:
                continue
            fqdn = f"{label}.{self.domain}"
            if fqdn not in forward:
                forward[fqdn] = [address]
            elif index < static_count and address not in forward[fqdn]:
                forward[fqdn].append(address)  # several static addresses for one name
            reverse.setdefault(ipaddress.ip_address(address).reverse_pointer, fqdn)
        self._forward, self._reverse, self._macs, self.errors = forward, reverse, macs, errors

    def mac_of(self, ip: str) -> str | None:
        """The MAC a lease gives for `ip` (the box is the DHCP server, so it knows)."""
        return self._macs.get(ip)

    def in_domain(self, qname: str) -> bool:
        return qname == self.domain or qname.endswith("." + self.domain)

    def forward(self, qname: str) -> list[str] | None:
        """Addresses of a local name; [] for an unknown name in the local domain."""
        if not self.in_domain(qname):
            return None
        return self._forward.get(qname, [])

    def reverse(self, qname: str) -> str | None:
        return self._reverse.get(qname)

    def table(self) -> list[dict]:
        return [{"name": n, "addresses": a} for n, a in sorted(self._forward.items())]


def kea_lease_file(path: str, clock: Callable[[], float] = time.time) -> LeaseSource:
    """Leases from Kea's memfile CSV (append-only: the last row of an address wins)."""

    def read() -> list[tuple[str, str, str | None]]:
        try:
            # Hostnames in it are what LAN clients sent: a byte that is not
            # UTF-8 must cost that row its name, not every lease its name.
            with open(path, newline="", encoding="utf-8", errors="replace") as fh:
                return kea_lease_rows(fh, clock())
        except FileNotFoundError:
            return []

    return read


def kea_lease_rows(lines: Iterable[str], now: float) -> list[tuple[str, str, str | None]]:
    """(hostname, address, MAC) of the live leases in Kea's memfile CSV lines."""
    latest: dict[str, dict] = {}
    for row in csv.DictReader(lines):
        if row.get("address"):
            latest[row["address"]] = row
    out = []
    for address, row in latest.items():
        try:
            expired = int(row.get("expire") or 0) < now
            state = int(row.get("state") or 0)
        except ValueError:
            continue
        if expired or state != 0 or not row.get("hostname"):
            continue
        out.append((row["hostname"], address, row.get("hwaddr") or None))
    return out
