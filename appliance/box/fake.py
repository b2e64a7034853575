"""In-memory fakes of the apply layer's ports (`appliance.box.protocols`), shipped for tests.

A `Box` given `FakeKernel`, `FakeSwitch`, `FakeServices` and `MemFs` runs
its whole logic (observe, plan, apply, restore, teardown, its applied state)
without root and without touching the machine. The fakes are plain objects,
so they pickle (the browser tests keep one box across processes that way).
"""
from __future__ import annotations

import contextlib
import errno
import threading

from appliance.box.protocols import BoxBusy
from appliance.durable import StateDirError
from appliance.services.supervisor import RUNNING, STOPPED, ServiceNotReady, ServiceState


class FakeSwitch:
    """Remembers the loaded switch; `fail = True` makes the next different load fail, as a verifier would."""

    def __init__(self):
        self.loaded = None
        self.fail = False

    def load(self, switch):
        if self.fail and switch != self.loaded:
            raise RuntimeError("verifier rejected flow 3")
        if switch == self.loaded:
            return []
        self.loaded = switch
        return [f"~ datapath: {len(switch.flows)} flows"]

    def unload(self, switch):
        self.loaded = None
        return ["- datapath"]


class FakeServices:
    """The services as specs in a dict: `running[name]` is the spec that runs.

    A service named in `never_ready` starts but, with any definition but the
    last one that answered, never answers its probe: `start` raises
    `ServiceNotReady` with `never_ready[name]` as its log line.
    """

    def __init__(self):
        self.running = {}
        self.never_ready: dict[str, str] = {}
        self._answered = {}

    def start(self, spec):
        if spec.name in self.never_ready and spec != self._answered.get(spec.name):
            self.running[spec.name] = spec
            raise ServiceNotReady(spec.name, "it does not answer its probe", self.never_ready[spec.name])
        self._answered[spec.name] = spec
        old = self.running.get(spec.name)
        self.running[spec.name] = spec
        return "unchanged" if old == spec else ("restarted" if old else "started")

    def stop(self, name):
        return self.running.pop(name, None) is not None

    def remove(self, name):
        self.running.pop(name, None)

    def status(self, name):
        return ServiceState(name, RUNNING if name in self.running else STOPPED)


class MemFs:
    """Files as a dict of path -> text, directories as a set of paths."""

    def __init__(self):
        self.files: dict[str, str] = {}
        self.dirs: set[str] = set()
        self.refuse: str | None = None  # "full" or "read-only": every write and check fails so
        self.access_of: dict[str, tuple[int, int, int]] = {}  # path -> (mode, uid, gid)
        self.locks: dict[str, threading.Lock] = {}

    def check_writable(self, directory):
        if self.refuse:
            raise StateDirError(errno.ENOSPC if self.refuse == "full" else errno.EROFS,
                                f"the state directory {directory} is {self.refuse}")

    def _parents(self, path: str) -> None:
        d = path.rsplit("/", 1)[0]
        while d and d not in self.dirs:
            self.dirs.add(d)
            d = d.rsplit("/", 1)[0]

    def read(self, path):
        return self.files.get(path)

    def write(self, path, content, mode=0o644, owner=None):
        if self.refuse:
            raise StateDirError(errno.ENOSPC if self.refuse == "full" else errno.EROFS, path)
        self._parents(path)
        self.files[path] = content
        self.access_of[path] = (mode, *(owner or (0, 0)))

    def own(self, path, uid, gid, mode):
        self.access_of[path] = (mode, uid, gid)

    def access(self, path):
        if not self.exists(path):
            return None
        return self.access_of.get(path, (0o755 if path in self.dirs else 0o644, 0, 0))

    def mkdir(self, path):
        self.dirs.add(path)
        self._parents(path)

    def _under(self, path: str) -> list[str]:
        return [p for p in (*self.files, *self.dirs) if p.startswith(path + "/")]

    def remove(self, path):
        for p in self._under(path):
            self.files.pop(p, None)
            self.dirs.discard(p)
        self.files.pop(path, None)
        self.dirs.discard(path)

    def rmdir(self, path):
        if path not in self.dirs or self._under(path):
            return False
        self.dirs.discard(path)
        return True

    def __getstate__(self):
        # Locks do not pickle (the browser tests pickle the box); none is held between processes.
        return {**self.__dict__, "locks": {}}

    @contextlib.contextmanager
    def lock(self, path, timeout):
        held = self.locks.setdefault(path, threading.Lock())
        if not held.acquire(timeout=timeout):
            raise BoxBusy(f"another apply of this box holds {path}")
        try:
            yield
        finally:
            held.release()

    def exists(self, path: str) -> bool:
        return path in self.files or path in self.dirs
