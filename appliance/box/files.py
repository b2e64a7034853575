"""The file-system port on the machine's own disk: every write durable (`appliance.durable`)."""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from pathlib import Path

from appliance import durable
from appliance.box.protocols import BoxBusy


class RealFileSystem:
    def read(self, path):
        try:
            return Path(path).read_text()
        except FileNotFoundError:
            return None

    def write(self, path, content, mode=0o644, owner=None):
        # A daemon never reads half a config; a power cut leaves the old file or the new one.
        durable.write_atomic(path, content, mode, owner)

    def check_writable(self, directory):
        durable.check_writable(directory)

    def mkdir(self, path):
        os.makedirs(path, exist_ok=True)

    def own(self, path, uid, gid, mode):
        if os.geteuid() == 0:  # an apply as another user (tests) keeps its own files
            os.chown(path, uid, gid)
        os.chmod(path, mode)

    def access(self, path):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return (st.st_mode & 0o7777, st.st_uid, st.st_gid)

    def remove(self, path):
        p = Path(path)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)

    def rmdir(self, path):
        try:
            os.rmdir(path)
        except (FileNotFoundError, OSError):
            return False
        return True

    @contextlib.contextmanager
    def lock(self, path, timeout):
        # flock: released by the kernel when the holder dies, so a killed apply never leaves it held.
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # Read-only is enough for flock, and opens on a read-only state directory once the file exists.
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise BoxBusy(f"another apply of this box holds {path}") from None
                    time.sleep(0.1)
            yield
        finally:
            os.close(fd)
