"""FaultFS's undo log on a plain directory (no FUSE): what each power-loss mode takes back."""
from __future__ import annotations

import os

import pytest

from bench.chaos.faultfs.undo import PAGE, UndoLog


@pytest.fixture
def fs(tmp_path):
    backing = tmp_path / "backing"
    backing.mkdir()
    return UndoLog(str(backing), str(tmp_path / "state")), str(backing)


def create(log: UndoLog, path: str, data: bytes = b"") -> int:
    """Create `path` through the log and write `data` to it; returns the open fd."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
    ino = os.fstat(fd).st_ino
    log.created(os.stat(os.path.dirname(path)).st_ino, os.path.basename(path), ino, False)
    if data:
        log.write(fd, ino, data, 0)
    return fd


def sync_file(log: UndoLog, fd: int) -> None:
    log.file_synced(os.fstat(fd).st_ino, log.seq)


def sync_dir(log: UndoLog, path: str) -> None:
    log.dir_synced(os.stat(path).st_ino, log.seq)


def test_all_mode_restores_the_durable_state(fs):
    log, root = fs
    fd = create(log, f"{root}/a", b"A" * 10000)
    sync_file(log, fd)
    sync_dir(log, root)
    log.write(fd, os.fstat(fd).st_ino, b"B" * 5000, 8000)       # overwrite + extend
    log.truncate(fd, os.fstat(fd).st_ino, 3000)
    create(log, f"{root}/b", b"bbb")
    log.rename(f"{root}/a", f"{root}/c")
    result = log.power_loss("all")
    assert sorted(os.listdir(root)) == ["a"]
    assert open(f"{root}/a", "rb").read() == b"A" * 10000
    assert result["writes_lost"] == 3 and result["dir_ops_lost"] == 2 and not result["errors"]


def test_a_synced_write_survives_an_unsynced_one_after_it(fs):
    log, root = fs
    fd = create(log, f"{root}/a", b"1" * PAGE)
    sync_file(log, fd)
    sync_dir(log, root)
    ino = os.fstat(fd).st_ino
    log.write(fd, ino, b"2" * PAGE, 0)
    sync_file(log, fd)
    log.write(fd, ino, b"3" * PAGE, 0)
    log.power_loss("all")
    assert open(f"{root}/a", "rb").read() == b"2" * PAGE


def test_prefix_mode_keeps_the_changes_before_a_cut(fs):
    log, root = fs
    fd = create(log, f"{root}/a")
    sync_dir(log, root)
    sync_file(log, fd)
    ino = os.fstat(fd).st_ino
    for i in range(10):
        log.write(fd, ino, bytes([65 + i]) * 100, i * 100)
    log.power_loss("prefix", seed=7)
    data = open(f"{root}/a", "rb").read()
    assert len(data) % 100 == 0
    assert data == b"".join(bytes([65 + i]) * 100 for i in range(len(data) // 100))


def test_torn_mode_mixes_pages_of_old_and_new(fs):
    log, root = fs
    fd = create(log, f"{root}/a", b"o" * 64 * PAGE)
    sync_file(log, fd)
    sync_dir(log, root)
    log.write(fd, os.fstat(fd).st_ino, b"n" * 64 * PAGE, 0)
    result = log.power_loss("torn", seed=1)
    data = open(f"{root}/a", "rb").read()
    pages = {data[i:i + PAGE] for i in range(0, len(data), PAGE)}
    assert pages == {b"o" * PAGE, b"n" * PAGE}          # some of each, at page granularity
    assert 0 < result["pages_lost"] < 64


def test_unlink_and_replace_are_undone_until_the_directory_is_synced(fs):
    log, root = fs
    for name in ("x", "y"):
        sync_file(log, create(log, f"{root}/{name}", name.encode()))
    sync_dir(log, root)
    log.remove(f"{root}/x", is_dir=False)
    log.rename(f"{root}/y", f"{root}/z")
    fd = create(log, f"{root}/y", b"new y")
    sync_file(log, fd)
    log.power_loss("all")
    assert sorted(os.listdir(root)) == ["x", "y"]
    assert open(f"{root}/y", "rb").read() == b"y"


def test_a_removal_made_durable_frees_the_trash(fs):
    log, root = fs
    sync_file(log, create(log, f"{root}/x", b"x" * 100))
    sync_dir(log, root)
    log.remove(f"{root}/x", is_dir=False)
    assert os.listdir(log.trash)
    sync_dir(log, root)
    assert os.listdir(log.trash) == []
    log.power_loss("all")
    assert os.listdir(root) == []


def test_spill_segments_are_freed_when_synced(fs):
    log, root = fs
    fd = create(log, f"{root}/a", b"a" * (1 << 20))
    sync_file(log, fd)
    log.write(fd, os.fstat(fd).st_ino, b"b" * (1 << 20), 0)
    assert log.stats()["spill_bytes"] == 1 << 20
    sync_file(log, fd)
    assert log.stats()["spill_bytes"] == 0


def test_an_unknown_mode_is_refused(fs):
    log, _ = fs
    with pytest.raises(ValueError, match="all, prefix, torn"):
        log.power_loss("sideways")
