"""Probes: does a service answer what its clients ask, within a deadline?

A `Probe` is data carried by a `ServiceSpec` (so a plan holds it, and
`place` puts its namespace where the service runs). `check(probe)` runs
it once and returns a `ProbeResult`; it never raises for a service that is
down, hung or answering nonsense: that is a failed probe with the reason.

| kind       | what it asks                                                              |
| ---------- | ------------------------------------------------------------------------- |
| `dns`      | a real DNS query over UDP from inside the service's namespace, to the     |
|            | address the clients' queries are redirected to; a name in the local       |
|            | domain, which the server answers itself (NOERROR or NXDOMAIN), so a dead  |
|            | modem upstream never makes the box's DNS look unhealthy                   |
| `kea`      | Kea's control socket: `lease4-get` of one address (a lease lookup: found  |
|            | or "0 leases" both prove the lease backend answers)                       |
| `dhcp6`    | a real DHCPv6 Information-request from inside the service's namespace to  |
|            | the server's listener on `target` ([::1]:547), answered by a Reply: the   |
|            | packet went through dhcpkit's worker processes, as a client's does; then  |
|            | the server's status file (`name`): `aside` when it lets the modem serve   |
| `relay`    | the relay's control socket: `stats`                                       |
| `watchdog` | the watchdog's status file was written within `timeout`*10 seconds       |
|            | (CLOCK_MONOTONIC, as the datapath's heartbeat)                            |

Readiness is the same probe: an apply is done when the services answer it
(`Supervisor.start`, `SystemdUnits.start`).
"""
from __future__ import annotations

import errno
import json
import os
import socket
import struct
import time
from dataclasses import asdict, dataclass

from appliance.kernel.setns import socket_in
from appliance.services.dns import steer

KINDS = ("dns", "kea", "dhcp6", "relay", "watchdog")
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


@dataclass(frozen=True)
class Probe:
    """How to ask one service whether it answers, and how the watchdog judges the answers.

    `fall` failed probes in a row and the service is unhealthy (the datapath
    falls open around it); `rise` good ones and it is healthy again;
    `restart_after` failed ones in a row and the watchdog kills it (a hung
    process too: SIGCONT, SIGTERM, then SIGKILL) for its runner to start anew.
    `bit` is the service's bit in the datapath's health register (reg15).
    """

    kind: str
    target: str  # dns: "ADDRESS:PORT"; kea, relay: control socket; watchdog: status file
    netns: str | None = None  # where a network probe runs: the service's namespace
    name: str = ""  # dns: the question; kea: the address whose lease is looked up
    timeout: float = 0.5
    fall: int = 1
    rise: int = 2
    restart_after: int = 6
    bit: int | None = None
    # dns: processes answering on the address, each for the names that hash
    # to it (`dns/steer.py`); every one is asked, so one hung process is
    # found. None: as many as the server starts by default.
    processes: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"probe kind {self.kind!r}: one of {', '.join(KINDS)}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict | None) -> "Probe | None":
        return cls(**data) if data else None

    def describe(self) -> str:
        return {"dns": f"DNS query {self.name} to {self.target}", "kea": f"Kea lease4-get on {self.target}",
                "dhcp6": f"DHCPv6 Information-request to {self.target}",
                "relay": f"relay stats on {self.target}", "watchdog": f"watchdog status {self.target}"}[self.kind]


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str  # what answered, or why nothing did
    seconds: float = 0.0
    # The service answered, and says the modem should serve its clients
    # (DHCPv6 when the modem's RA asks for addresses the box does not give):
    # its health bit goes off at once, and it is ready, not restarted.
    aside: bool = False


def check(probe: Probe) -> ProbeResult:
    """Run the probe once; a failure is a result, never an exception."""
    started = time.monotonic()
    aside = False
    try:
        ok, detail = _CHECKS[probe.kind](probe)
    except (OSError, ValueError, KeyError) as e:
        ok, detail = False, _why(e, probe)
    except StandingAside as e:
        ok, detail, aside = False, str(e), True
    return ProbeResult(ok, detail, time.monotonic() - started, aside)


class StandingAside(Exception):
    """The service answered that it lets the modem serve (`ProbeResult.aside`); why."""


def _why(e: Exception, probe: Probe) -> str:
    if isinstance(e, socket.timeout) or isinstance(e, TimeoutError):
        return f"no answer within {probe.timeout:g}s"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused (not listening)"
    if isinstance(e, FileNotFoundError):
        return f"{e.filename or probe.target}: no such file (not running)"
    return f"{type(e).__name__}: {e}"


# ---------------------------------------------------------------- DNS

def dns_query(qid: int, name: str, qtype: int = 1) -> bytes:
    """A standard query with RD for `name` (a DNS message built by hand: the probe stays light)."""
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split(".") if p)
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\x00" + struct.pack("!HH", qtype, 1)


def _dns(probe: Probe) -> tuple[bool, str]:
    host, _, port = probe.target.rpartition(":")
    processes = probe.processes or steer.default_processes()
    names = [probe.name] if processes == 1 else \
        steer.names_for_each(probe.name, processes, lambda name: dns_query(0, name))
    answers = []
    for name in names:
        ok, detail = _ask(probe, (host, int(port)), name)
        if not ok:
            return False, detail if processes == 1 else f"{name}: {detail}"
        answers.append(detail)
    return True, answers[0] if processes == 1 else f"{answers[0]} ({processes} processes)"


def _ask(probe: Probe, address: tuple[str, int], name: str) -> tuple[bool, str]:
    sock = socket_in(probe.netns, socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(probe.timeout)
        sock.connect(address)
        qid = int.from_bytes(os.urandom(2), "big")
        sock.send(dns_query(qid, name))
        deadline = time.monotonic() + probe.timeout
        while True:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            reply = sock.recv(4096)
            if len(reply) >= 12 and struct.unpack_from("!H", reply)[0] == qid:
                break
        flags = struct.unpack_from("!H", reply, 2)[0]
        rcode = flags & 0xF
        if not flags & 0x8000:
            return False, "the reply is not a DNS answer"
        if rcode not in (0, 3):
            return False, f"answered {RCODES.get(rcode, rcode)}"
        return True, f"answered {RCODES[rcode]}"


# ---------------------------------------------------------------- DHCPv6

DHCP6_CLIENT_PORT = 546
INFORMATION_REQUEST, REPLY = 11, 7
# DUID-EN (type 2) under enterprise number 0: no client's DUID looks like it.
PROBE_DUID = struct.pack("!HI", 2, 0) + b"appliance-probe"


def information_request(xid: bytes) -> bytes:
    """An Information-request asking for DNS servers (RFC 8415 18.2.6), built by hand: the probe stays light."""
    options = (struct.pack("!HH", 1, len(PROBE_DUID)) + PROBE_DUID  # client identifier
               + struct.pack("!HHH", 8, 2, 0)  # elapsed time
               + struct.pack("!HHH", 6, 2, 23))  # option request: DNS recursive name servers
    return bytes([INFORMATION_REQUEST]) + xid + options


def _dhcp6(probe: Probe) -> tuple[bool, str]:
    host, _, port = probe.target.rpartition(":")
    host = host.strip("[]")
    deadline = time.monotonic() + probe.timeout
    sock = socket_in(probe.netns, socket.AF_INET6, socket.SOCK_DGRAM)
    with sock:
        # The server answers on the client port; another probe (the watchdog's
        # and an apply's readiness check) may hold it for a moment.
        while True:
            try:
                sock.bind((host, DHCP6_CLIENT_PORT))
                break
            except OSError as e:
                if e.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)
        xid = os.urandom(3)
        sock.sendto(information_request(xid), (host, int(port)))
        while True:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            reply = sock.recv(4096)
            if len(reply) >= 4 and reply[1:4] == xid:
                break
        if reply[0] != REPLY:
            return False, f"answered with message type {reply[0]}, not a Reply"
        if probe.name:  # the server's own word on whether it serves or lets the modem serve
            try:
                with open(probe.name) as f:
                    aside = json.load(f).get("aside")
            except FileNotFoundError:
                aside = None
            if aside:
                raise StandingAside(aside)
        return True, "Reply"


# ---------------------------------------------------------------- control sockets

def _unix_request(path: str, request: bytes, timeout: float) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        deadline = time.monotonic() + timeout
        s.connect(path)
        s.sendall(request)
        raw = b""
        while True:
            s.settimeout(max(0.001, deadline - time.monotonic()))
            data = s.recv(65536)
            raw += data
            try:
                json.loads(raw)
                return raw
            except ValueError:
                if not data:
                    raise ValueError(f"unreadable answer: {raw[:100]!r}") from None


def _kea(probe: Probe) -> tuple[bool, str]:
    request = {"command": "lease4-get", "arguments": {"ip-address": probe.name}}
    answer = json.loads(_unix_request(probe.target, json.dumps(request).encode(), probe.timeout))
    if isinstance(answer, list):
        answer = answer[0]
    result = answer.get("result")
    if result in (0, 3):  # found, or no such lease: the lookup itself worked
        return True, f"lease4-get: {answer.get('text', 'ok')}"
    return False, f"lease4-get: {answer.get('text', 'failed')} (result {result})"


def _relay(probe: Probe) -> tuple[bool, str]:
    answer = json.loads(_unix_request(probe.target, b'{"query": "stats"}\n', probe.timeout))
    if isinstance(answer, dict) and "error" in answer:
        return False, f"stats: {answer['error']}"
    return True, "stats answered"


def _watchdog(probe: Probe) -> tuple[bool, str]:
    with open(probe.target) as f:
        status = json.load(f)
    age = time.monotonic() - float(status["monotonic"])
    if age > max(3.0, probe.timeout * 10):
        return False, f"status not written for {age:.1f}s"
    return True, f"status written {age:.1f}s ago"


_CHECKS = {"dns": _dns, "kea": _kea, "dhcp6": _dhcp6, "relay": _relay, "watchdog": _watchdog}
