"""The file-system port on the machine's own disk."""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path

from appliance.box.protocols import BoxBusy


class RealFileSystem:
    def read(self, path):
        try:
            return Path(path).read_text()
        except FileNotFoundError:
            return None

    def write(self, path, content, mode=0o644):
        # Write-then-rename: a daemon never reads half a config.
        d = os.path.dirname(path)
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(content)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def mkdir(self, path):
        os.makedirs(path, exist_ok=True)

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
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
