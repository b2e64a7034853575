"""State files are replaced whole and durably; a full or read-only state directory is said before an apply."""
import errno
import os
from types import SimpleNamespace

import pytest

from appliance import durable


def test_write_atomic_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "d" / "applied.json"
    durable.write_atomic(str(path), "one")
    durable.write_atomic(str(path), b"two", mode=0o600)
    assert path.read_text() == "two" and (path.stat().st_mode & 0o777) == 0o600
    assert os.listdir(path.parent) == ["applied.json"]


def test_a_write_that_fails_before_the_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "applied.json"
    durable.write_atomic(str(path), "old")

    def no_sync(fd):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", no_sync)
    with pytest.raises(OSError, match="I/O error"):
        durable.write_atomic(str(path), "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["applied.json"]


def test_the_file_and_its_directory_are_synced_before_the_write_returns(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd)))
    durable.write_atomic(str(tmp_path / "a"), "x")
    assert synced[0].startswith(str(tmp_path / ".tmp-")) and synced[-1] == str(tmp_path)


def statvfs(flag=0, free_blocks=10_000):
    return lambda path: SimpleNamespace(f_flag=flag, f_bavail=free_blocks, f_frsize=4096)


def test_a_read_only_state_directory_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "statvfs", statvfs(flag=os.ST_RDONLY))
    with pytest.raises(durable.StateDirError, match=f"{tmp_path} is on a read-only file system"):
        durable.check_writable(str(tmp_path))


def test_a_full_state_directory_says_how_much_is_free(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "statvfs", statvfs(free_blocks=100))
    with pytest.raises(durable.StateDirError, match=r"is full: 400 KiB free, an apply needs 4096 KiB") as e:
        durable.check_writable(str(tmp_path / "not-yet"))
    assert e.value.errno == errno.ENOSPC


def test_a_refused_write_probe_is_said_as_the_kernel_said_it(tmp_path, monkeypatch):
    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(durable, "write_atomic", full)
    with pytest.raises(durable.StateDirError, match="is full"):
        durable.check_writable(str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_a_writable_directory_passes_and_keeps_nothing(tmp_path):
    durable.check_writable(str(tmp_path / "state"))
    assert os.listdir(tmp_path / "state") == []
