"""Talking to Kea DHCPv4: check a config with `kea-dhcp4 -t`, and the
control socket client (`lease4-get-all`, `config-get`, `status-get`,
`config-reload`) that returns typed leases.
"""
from __future__ import annotations

import json
import socket
import tempfile
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from appliance.kernel.base import Processes
from appliance.kernel.process import LinuxProcesses

KEA_DHCP4 = "kea-dhcp4"

# Kea's command results.
RESULT_SUCCESS, RESULT_ERROR, RESULT_UNSUPPORTED, RESULT_EMPTY = 0, 1, 2, 3


class KeaError(RuntimeError):
    """Kea refused a command or a config; the message is Kea's own."""


def check_config(config: dict | str, *, interface: str | None = None, netns: str | None = None,
                 timeout: float = 30, processes: Processes | None = None) -> list[str]:
    """Kea's verdict on a config (`kea-dhcp4 -t`): [] when valid, else its errors.

    Kea checks that the interface exists; `interface` replaces the one in the
    config for a check on a machine without it (run in the namespace that has
    it, `netns`, to check the real thing).
    """
    data = json.loads(config) if isinstance(config, str) else json.loads(json.dumps(config))
    if interface is not None:
        d4 = data["Dhcp4"]
        d4["interfaces-config"]["interfaces"] = [interface]
        for subnet in d4.get("subnet4", []):
            if "interface" in subnet:
                subnet["interface"] = interface
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="kea-check-") as f:
        json.dump(data, f)
        f.flush()
        p = (processes or LinuxProcesses()).run(netns or None, [KEA_DHCP4, "-t", f.name], timeout=timeout)
    if p.returncode == 0:
        return []
    lines = [ln for ln in (p.stdout + p.stderr).splitlines() if " ERROR " in ln or "Error" in ln]
    return lines or [f"kea-dhcp4 -t exited {p.returncode}: {(p.stdout + p.stderr).strip()[-500:]}"]


@dataclass(frozen=True)
class Lease:
    ip: IPv4Address
    mac: str
    hostname: str
    expires: int  # unix time: cltt + valid-lft
    valid_lifetime: int
    state: int  # 0 default, 1 declined, 2 expired-reclaimed
    subnet_id: int
    client_id: str = ""

    @classmethod
    def from_kea(cls, d: dict) -> "Lease":
        return cls(
            ip=IPv4Address(d["ip-address"]),
            mac=d.get("hw-address", "").lower(),
            hostname=d.get("hostname", ""),
            expires=int(d.get("cltt", 0)) + int(d.get("valid-lft", 0)),
            valid_lifetime=int(d.get("valid-lft", 0)),
            state=int(d.get("state", 0)),
            subnet_id=int(d.get("subnet-id", 0)),
            client_id=d.get("client-id", ""),
        )


class KeaControl:
    """A client for kea-dhcp4's unix control socket (one command per connection)."""

    def __init__(self, socket_path: str | Path, timeout: float = 5.0):
        self.path = str(socket_path)
        self.timeout = timeout

    def command(self, command: str, arguments: dict | None = None) -> dict:
        """Send a command; returns Kea's answer (`result`, `text`, `arguments`)."""
        request = {"command": command}
        if arguments is not None:
            request["arguments"] = arguments
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            try:
                s.connect(self.path)
            except OSError as e:
                raise KeaError(f"cannot reach Kea's control socket {self.path}: {e}") from e
            s.sendall(json.dumps(request).encode())
            raw = b""
            while True:
                try:
                    data = s.recv(65536)
                except socket.timeout as e:
                    raise KeaError(f"{command}: no answer from Kea within {self.timeout}s") from e
                raw += data
                # Kea closes the connection after its answer; stop early once
                # the answer is a whole JSON document anyway.
                try:
                    answer = json.loads(raw)
                    break
                except ValueError:
                    if not data:
                        raise KeaError(f"{command}: unreadable answer from Kea: {raw[:200]!r}") from None
        if isinstance(answer, list):  # the Control Agent wraps answers in a list
            answer = answer[0]
        return answer

    def _ok(self, command: str, arguments: dict | None = None, *, empty_ok: bool = False) -> dict:
        answer = self.command(command, arguments)
        result = answer.get("result")
        if result == RESULT_SUCCESS or (empty_ok and result == RESULT_EMPTY):
            return answer.get("arguments") or {}
        raise KeaError(f"{command}: {answer.get('text', 'failed')} (result {result})")

    def leases(self) -> list[Lease]:
        args = self._ok("lease4-get-all", empty_ok=True)
        return sorted((Lease.from_kea(d) for d in args.get("leases", [])), key=lambda lease: lease.ip)

    def config(self) -> dict:
        return self._ok("config-get")

    def status(self) -> dict:
        return self._ok("status-get")

    def reload(self) -> None:
        """Re-read the config file Kea was started with."""
        self._ok("config-reload")
