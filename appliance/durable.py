"""Files that survive a power cut: every state file the box keeps is written here.

`write_atomic` writes a temporary file beside the target, fsyncs it, renames
it over the target and fsyncs the directory. After a power cut at any
moment the target holds either the old content or the new one, whole: the
rename alone (without the file's fsync) can leave a renamed file of zero
length on ext4 with `data=writeback` or on xfs, and without the directory's
fsync the rename itself can be lost.

`check_writable` is asked before an apply touches anything: a state
directory that is full (ENOSPC) or mounted read-only refuses the apply up
front with an error that says so, instead of an apply that changed the
kernel and then cannot record what it did.
"""
from __future__ import annotations

import errno
import os
import tempfile

# What an apply writes at most besides the settings it is given (service
# configs, the applied state twice, the datapath's object); asked free up front.
APPLY_HEADROOM = 4 << 20


class StateDirError(OSError):
    """The state directory cannot take a write: full or read-only; the message says which."""


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, content: str | bytes, mode: int = 0o644,
                 owner: tuple[int, int] | None = None) -> None:
    """Replace `path` with `content`: old or new after a crash, never half of one.
    `owner`: the (uid, gid) it goes to (a service's own file; when run as root)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)
            if owner is not None and os.geteuid() == 0:
                os.fchown(fd, *owner)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(d)


def check_writable(directory: str, need: int = APPLY_HEADROOM) -> None:
    """Raise StateDirError unless `directory` takes `need` bytes: not read-only, not full.

    A small file is written and removed too (with fsync), as statvfs alone
    does not see every refusal (a quota, an overlay's upper layer).
    """
    existing = os.path.abspath(directory)
    while not os.path.isdir(existing):
        existing = os.path.dirname(existing)
    st = os.statvfs(existing)
    if st.f_flag & os.ST_RDONLY:
        raise StateDirError(errno.EROFS, f"the state directory {directory} is on a read-only file system")
    free = st.f_bavail * st.f_frsize
    if free < need:
        raise StateDirError(errno.ENOSPC, f"the state directory {directory} is full: {free // 1024} KiB free, "
                                          f"an apply needs {need // 1024} KiB")
    probe = os.path.join(directory, ".write-probe")
    try:
        os.makedirs(directory, exist_ok=True)
        write_atomic(probe, b"\0" * 4096)
        os.unlink(probe)
    except OSError as e:
        try:
            os.unlink(probe)
        except OSError:
            pass
        what = {errno.ENOSPC: "is full", errno.EDQUOT: "is over its quota",
                errno.EROFS: "is on a read-only file system", errno.EACCES: "is not writable",
                errno.EPERM: "is not writable"}.get(e.errno, f"cannot be written ({e.strerror})")
        raise StateDirError(e.errno, f"the state directory {directory} {what}") from None
