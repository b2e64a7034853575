"""The apply layer's ports: what the box asks of the switch, of its service runner and of files.

Each has an implementation on the machine and a fake in `appliance.box.fake`
(as the kernel has `LinuxKernel` and `FakeKernel`); `Box` and `Applier` are
given them, so the box's logic runs the same on both.

| port          | on the machine                                         | fake          |
| ------------- | ------------------------------------------------------ | ------------- |
| SwitchLoader  | `appliance.box.switchload.DatapathLoader`              | `FakeSwitch`  |
| ServiceRunner | `Supervisor`, or `SystemdUnits` on the image           | `FakeServices`|
| FileSystem    | `appliance.box.files.RealFileSystem`                   | `MemFs`       |
"""
from __future__ import annotations

from typing import ContextManager, Protocol


class BoxBusy(Exception):
    """Another apply or teardown of this box holds its lock."""


class SwitchLoader(Protocol):
    """Puts a plan's switch (ports + flow table) into the datapath."""

    def load(self, switch) -> list[str]:
        """Compile and swap in; on failure raise and leave the running datapath as it was.

        Returns what changed ([] when the same switch is already loaded).
        """

    def unload(self, switch) -> list[str]:
        """Detach the switch's datapath; [] when none runs."""


class ServiceRunner(Protocol):
    """Runs a plan's `ServiceSpec`s and says how they are."""

    def start(self, spec) -> str:
        """"unchanged", "started" or "restarted"; returns once the service is ready."""

    def stop(self, name: str) -> bool: ...

    def remove(self, name: str) -> None:
        """Stop it and forget it."""

    def status(self, name: str):
        """A `ServiceState` (its `.state`: running, stopped, failed ...)."""


class FileSystem(Protocol):
    """Where the box keeps its files: config files, its applied state, runtime files."""

    def read(self, path: str) -> str | None:
        """The file's text, or None when there is no such file."""

    def write(self, path: str, content: str, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
        """Replace the file whole (a reader never sees half of it, nor a power cut); make its directory.
        `owner`: (uid, gid) it belongs to (a service's own file), else whoever writes it."""

    def check_writable(self, directory: str) -> None:
        """Raise `appliance.durable.StateDirError` when `directory` is full or read-only."""

    def mkdir(self, path: str) -> None: ...

    def own(self, path: str, uid: int, gid: int, mode: int) -> None:
        """Give a path to a user and group with this mode (a service's own directory)."""

    def access(self, path: str) -> tuple[int, int, int] | None:
        """(mode, uid, gid) of a path, or None when absent."""

    def remove(self, path: str) -> None:
        """A file, or a directory with everything in it; nothing when absent."""

    def rmdir(self, path: str) -> bool:
        """Remove an empty directory; False (and nothing done) when absent or not empty."""

    def lock(self, path: str, timeout: float) -> ContextManager[None]:
        """Hold the lock file `path` exclusively (across processes); `BoxBusy` after `timeout` s."""
