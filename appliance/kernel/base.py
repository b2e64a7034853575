"""What the appliance asks of the kernel, as an interface.

Namespaces are named (`ip netns` names); `None` means the namespace the
process runs in. Link, address and route objects are plain data so plans can
be diffed against what `observe` returns.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


class KernelError(RuntimeError):
    """A kernel operation failed; the message names the object and the call."""


@dataclass(frozen=True)
class Link:
    name: str
    kind: str  # "veth", "bridge", "dummy", "device"
    mac: str
    up: bool
    master: str | None = None
    mtu: int = 1500
    ifindex: int = 0


@dataclass(frozen=True)
class Route:
    dst: str  # "default" (IPv4, or IPv6 with an IPv6 gateway) or a CIDR; the kernel reports IPv6's as ::/0
    via: str | None = None
    dev: str | None = None
    type: str = "unicast"  # or "local"
    table: str = "main"  # "main", "local" or a number

    @property
    def family(self) -> int:
        """4 or 6, from the addresses it names ("default" takes its gateway's)."""
        return 6 if ":" in self.dst or ":" in (self.via or "") else 4


@dataclass(frozen=True)
class Completed:
    """A program run to its end: its exit status (negative: the signal) and output."""

    args: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""


class Processes(Protocol):
    """Programs, signals and sockets: `LinuxProcesses` (`appliance.kernel.process`)
    and `FakeProcesses` (`appliance.kernel.fake_process`). A program started in
    a namespace runs there with that namespace's /etc/netns files, as under
    `ip netns exec`. A namespace or a program that is not there is a KernelError,
    never a process that dies at once."""

    def run(self, ns: str | None, argv: Sequence[str], *, input: str | None = None,
            timeout: float | None = None, env: dict[str, str] | None = None,
            cwd: str | None = None) -> Completed: ...
    def spawn(self, ns: str | None, argv: Sequence[str], *, log: str | None = None,
              env: dict[str, str] | None = None, cwd: str | None = None) -> int: ...
    def spawn_detached(self, ns: str | None, argv: Sequence[str], *, log: str | None = None,
                       env: dict[str, str] | None = None, cwd: str | None = None) -> None: ...
    def wait(self, pid: int, timeout: float | None = None) -> int | None: ...
    def alive(self, pid: int) -> bool: ...
    def signal(self, pid: int, sig: int, *, group: bool = False) -> bool: ...
    def stop(self, pid: int, timeout: float = 3.0, *, group: bool = False) -> None: ...
    def cmdline(self, pid: int) -> tuple[str, ...]: ...
    def netns_pids(self, ns: str) -> list[int]: ...
    def listening(self, ns: str | None, proto: str, port: int) -> bool: ...


class Kernel(Processes, Protocol):
    # namespaces
    def list_netns(self) -> list[str]: ...
    def add_netns(self, name: str) -> None: ...
    def del_netns(self, name: str) -> None: ...

    # links
    def links(self, ns: str | None) -> list[Link]: ...
    def add_veth(self, ns: str | None, name: str, peer_ns: str | None, peer: str,
                 mac: str | None = None, peer_mac: str | None = None) -> None: ...
    def add_bridge(self, ns: str | None, name: str, mac: str | None = None) -> None: ...
    def add_dummy(self, ns: str | None, name: str) -> None: ...
    def set_link(self, ns: str | None, name: str, *, up: bool | None = None,
                 master: str | None = None, nomaster: bool = False,
                 mac: str | None = None) -> None: ...
    def del_link(self, ns: str | None, name: str) -> None: ...

    # addresses and routes
    def addresses(self, ns: str | None, name: str, family: int = 4) -> list[str]: ...
    def add_address(self, ns: str | None, name: str, cidr: str) -> None: ...
    def del_address(self, ns: str | None, name: str, cidr: str) -> None: ...
    def routes(self, ns: str | None) -> list[Route]: ...
    def add_route(self, ns: str | None, route: Route) -> None: ...
    def del_route(self, ns: str | None, route: Route) -> None: ...

    # sysctl and nftables
    def get_sysctls(self, ns: str | None, keys: Sequence[str]) -> dict[str, str | None]: ...
    def set_sysctls(self, ns: str | None, values: dict[str, str]) -> None: ...
    def nft_tables(self, ns: str | None) -> list[tuple[str, str]]: ...
    def nft_table(self, ns: str | None, family: str, name: str) -> str | None: ...
    def nft_load(self, ns: str | None, ruleset: str) -> None: ...
    def nft_delete_table(self, ns: str | None, family: str, name: str) -> None: ...

    # neighbours
    def arp_probe(self, ns: str | None, ifname: str, ip: str, timeout: float = 1.5) -> str | None: ...
