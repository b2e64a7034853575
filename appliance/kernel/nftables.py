"""nftables for a service that keeps its own table up to date while it runs.

The reconciler replaces whole tables through `Kernel.nft_load`; a running
service (the relay's fast path) changes elements of its table many times a
minute and reads the counters of its sets, from its event loop: these calls
are asynchronous. A script is one `nft -f` transaction, all or nothing; a
failure raises `KernelError` with nft's own words.

`LinuxNftables` runs `nft` in `netns` (None: the namespace the process runs
in); `FakeNftables` (`appliance.kernel.fake_nftables`) keeps tables, maps
and sets in memory.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Protocol

from appliance.kernel.base import KernelError


@dataclass(frozen=True)
class Counter:
    packets: int
    bytes: int


class Nftables(Protocol):
    async def run(self, script: str) -> None:
        """Run an `nft -f` script as one transaction."""
    async def map_elements(self, family: str, table: str, name: str) -> dict[str, str]:
        """A map's elements, key -> value."""
    async def set_counters(self, family: str, table: str,
                           names: tuple[str, ...]) -> dict[str, dict[tuple[str, ...], Counter]]:
        """The counters of the elements of sets `names` (keys split at '.'), per set."""


class LinuxNftables:
    def __init__(self, netns: str | None = None):
        self.netns = netns

    async def _nft(self, *args: str, script: str = "") -> str:
        argv = ["nft", *args]
        if self.netns:
            argv = ["nsenter", f"--net=/run/netns/{self.netns}", *argv]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
        except OSError as e:
            raise KernelError(f"{argv[0]}: {e}") from e
        out, err = await proc.communicate(script.encode())
        if proc.returncode != 0:
            raise KernelError(f"nft {' '.join(args)}: {err.decode().strip()}")
        return out.decode()

    async def run(self, script: str) -> None:
        await self._nft("-f", "-", script=script)

    async def _table(self, family: str, table: str) -> list[dict]:
        return json.loads(await self._nft("-j", "list", "table", family, table)).get("nftables", [])

    async def map_elements(self, family, table, name) -> dict[str, str]:
        for item in await self._table(family, table):
            named = item.get("map", {})
            if named.get("name") == name:
                return {_key(k): _key(v) for k, v in named.get("elem", [])}
        raise KernelError(f"nft: no map {name} in table {family} {table}")

    async def set_counters(self, family, table, names):
        out: dict[str, dict[tuple[str, ...], Counter]] = {name: {} for name in names}
        for item in await self._table(family, table):
            named = item.get("set", {})
            if named.get("name") not in out:
                continue
            for elem in named.get("elem", []):
                elem = elem.get("elem", elem) if isinstance(elem, dict) else {"val": elem}
                counter = elem.get("counter") or {"packets": 0, "bytes": 0}
                out[named["name"]][_parts(elem["val"])] = Counter(counter["packets"], counter["bytes"])
        return out


def _key(value) -> str:
    """A map key or value as nft writes it ("a . b" for a concatenation)."""
    if isinstance(value, dict) and "elem" in value:
        value = value["elem"]["val"]
    return " . ".join(_parts(value))


def _parts(value) -> tuple[str, ...]:
    if isinstance(value, dict) and "concat" in value:
        return tuple(str(v) for v in value["concat"])
    return (str(value),)
