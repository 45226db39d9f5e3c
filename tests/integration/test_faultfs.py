"""FaultFS on real FUSE mounts: what a power loss keeps and loses, and the injected disk faults."""
from __future__ import annotations

import errno
import mmap
import os
import subprocess
import sys
import time

import pytest

from faultfs_fixtures import faultfs, needs_fuse  # noqa: F401  (fixture)

pytestmark = needs_fuse


def fsync_dir(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path, data: bytes, sync: bool) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        if sync:
            os.fsync(f.fileno())


def run_and_kill(code: str) -> None:
    """Run `code` in a program that writes, then signals that it is done and waits to be killed
    with SIGKILL (as a daemon is before a power loss)."""
    proc = subprocess.Popen([sys.executable, "-c", code + "\nprint('done', flush=True)\n"
                             "import time\ntime.sleep(60)"], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"done"
    proc.kill()
    proc.wait()


def test_unsynced_bytes_of_a_killed_program_are_lost(faultfs):
    fs = faultfs()
    m = fs.mountpoint
    write_file(f"{m}/old", b"durable", sync=True)
    fsync_dir(m)
    run_and_kill(f"f = open({m + '/new'!r}, 'wb'); f.write(b'x' * 100000); f.flush()\n"
                 f"g = open({m + '/old'!r}, 'r+b'); g.write(b'OVERWRITTEN'); g.flush()")
    assert os.path.getsize(f"{m}/new") == 100000          # the latest view, before the power loss
    result = fs.power_loss("all")
    assert result["writes_lost"] == 2 and result["dir_ops_lost"] == 1, result
    assert os.listdir(m) == ["old"]
    assert open(f"{m}/old", "rb").read() == b"durable"


def test_fsynced_file_and_directory_survive(faultfs):
    fs = faultfs()
    m = fs.mountpoint
    os.mkdir(f"{m}/d")
    fsync_dir(m)
    write_file(f"{m}/d/chunk", os.urandom(300_000), sync=True)
    data = open(f"{m}/d/chunk", "rb").read()
    fsync_dir(f"{m}/d")
    assert fs.status()["pending_writes"] == 0
    fs.power_loss("all")
    assert open(f"{m}/d/chunk", "rb").read() == data


def test_fsynced_file_in_an_unsynced_directory_is_lost(faultfs):
    fs = faultfs()
    m = fs.mountpoint
    write_file(f"{m}/f", b"data", sync=True)
    fs.power_loss("all")
    assert not os.path.exists(f"{m}/f")


def test_rename_without_a_directory_fsync_is_lost(faultfs):
    fs = faultfs()
    m = fs.mountpoint
    write_file(f"{m}/target", b"old version", sync=True)
    fsync_dir(m)
    write_file(f"{m}/target.tmp", b"new version", sync=True)
    os.rename(f"{m}/target.tmp", f"{m}/target")
    assert open(f"{m}/target", "rb").read() == b"new version"
    fs.power_loss("all")
    assert open(f"{m}/target", "rb").read() == b"old version"
    assert not os.path.exists(f"{m}/target.tmp")

    write_file(f"{m}/target.tmp", b"new version", sync=True)
    os.rename(f"{m}/target.tmp", f"{m}/target")
    fsync_dir(m)
    fs.power_loss("all")
    assert sorted(os.listdir(m)) == ["target"]
    assert open(f"{m}/target", "rb").read() == b"new version"


def test_unlink_comes_back_until_the_directory_is_fsynced(faultfs):
    fs = faultfs()
    m = fs.mountpoint
    for name in ("a", "b"):
        write_file(f"{m}/{name}", name.encode() * 5000, sync=True)
    fsync_dir(m)
    os.unlink(f"{m}/a")
    os.unlink(f"{m}/b")
    assert os.listdir(m) == []
    fs.power_loss("all")
    assert sorted(os.listdir(m)) == ["a", "b"]
    assert open(f"{m}/a", "rb").read() == b"a" * 5000
    os.unlink(f"{m}/a")
    fsync_dir(m)
    fs.power_loss("all")
    assert os.listdir(m) == ["b"]
    assert os.listdir(fs.state_dir + "/trash") == []


def test_prefix_and_torn_keep_something_between_durable_and_latest(faultfs):
    fs = faultfs()
    m = fs.mountpoint
    page = 4096
    for seed in range(2):
        write_file(f"{m}/f", b"A" * 16 * page, sync=True)
        fsync_dir(m)
        with open(f"{m}/f", "r+b") as f:       # 16 page writes, newest last
            for i in range(16):
                f.seek(i * page)
                f.write(b"B" * page)
                f.flush()
        fs.power_loss("prefix", seed=seed)
        data = open(f"{m}/f", "rb").read()
        kept = data.count(b"B" * page)
        assert data == b"B" * page * kept + b"A" * page * (16 - kept), seed
        with open(f"{m}/f", "r+b") as f:
            f.write(b"C" * 16 * page)
        fs.power_loss("torn", seed=seed)
        data = open(f"{m}/f", "rb").read()
        pages = [data[i:i + page] for i in range(0, len(data), page)]
        assert all(p in (b"B" * page, b"A" * page, b"C" * page) for p in pages), seed
        assert len(pages) == 16


def test_reads_and_mmap_see_the_latest_writes(faultfs):
    """LMDB writes with pwrite and reads through a shared mmap of the same file."""
    fs = faultfs()
    path = f"{fs.mountpoint}/data.mdb"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        os.pwrite(fd, b"\0" * 65536, 0)
        mm = mmap.mmap(fd, 65536, mmap.MAP_SHARED, mmap.PROT_READ)
        for i in range(20):
            os.pwrite(fd, f"v{i:04d}".encode(), 8192)
            os.fdatasync(fd)
            assert mm[8192:8197] == f"v{i:04d}".encode()
        mm.close()
    finally:
        os.close(fd)


def test_large_unsynced_overwrites_spill_to_disk(faultfs):
    fs = faultfs()
    path = f"{fs.mountpoint}/big"
    write_file(path, b"\1" * (8 << 20), sync=True)
    fsync_dir(fs.mountpoint)
    with open(path, "r+b") as f:
        f.write(b"\2" * (8 << 20))
    st = fs.status()
    assert st["unsynced_bytes"] == 8 << 20 and st["spill_bytes"] >= 8 << 20, st
    with open(path, "r+b") as f:
        os.fsync(f.fileno())
    assert fs.status()["spill_bytes"] == 0
    fs.power_loss("all")
    assert open(path, "rb").read() == b"\2" * (8 << 20)


def test_enospc_reaches_the_writer_and_space_comes_back(faultfs):
    fs = faultfs()
    m = fs.mountpoint
    write_file(f"{m}/f", b"x" * 8192, sync=True)
    fs.enospc(True)
    assert os.statvfs(m).f_bavail == 0
    with pytest.raises(OSError) as e:
        write_file(f"{m}/new", b"y", sync=False)
    assert e.value.errno == errno.ENOSPC
    fd = os.open(f"{m}/f", os.O_RDWR)
    try:
        assert os.pwrite(fd, b"z" * 4096, 0) == 4096     # overwriting allocated space works
        with pytest.raises(OSError) as e:
            os.pwrite(fd, b"grow", 8192)
        assert e.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    fs.enospc(False)
    write_file(f"{m}/new", b"y", sync=True)


def test_eio_reaches_the_writer_on_matching_paths_only(faultfs):
    fs = faultfs()
    m = fs.mountpoint
    os.mkdir(f"{m}/raft")
    fs.eio("raft/*", ["fsync"])
    write_file(f"{m}/other", b"ok", sync=True)
    with pytest.raises(OSError) as e:
        write_file(f"{m}/raft/journal", b"entry", sync=True)
    assert e.value.errno == errno.EIO
    fs.eio("raft/*", ["read"])
    with pytest.raises(OSError) as e:
        open(f"{m}/raft/journal", "rb").read()
    assert e.value.errno == errno.EIO
    fs.eio(None)
    assert open(f"{m}/raft/journal", "rb").read() == b"entry"
    assert fs.status()["faults"]["injected"]["eio"] >= 2     # the kernel may retry a read


def test_fsync_delay_is_observable(faultfs):
    fs = faultfs()
    path = f"{fs.mountpoint}/f"
    fs.fsync_delay(0.2, 0.3)
    with open(path, "wb") as f:
        f.write(b"x")
        t = time.monotonic()
        os.fsync(f.fileno())
        slow = time.monotonic() - t
        fs.fsync_delay(0)
        t = time.monotonic()
        os.fsync(f.fileno())
        fast = time.monotonic() - t
    assert 0.2 <= slow < 2 and fast < 0.1, (slow, fast)


def test_unmount_leaves_everything_and_bad_requests_are_refused(faultfs):
    fs = faultfs()
    write_file(f"{fs.mountpoint}/kept", b"not synced, but unmounted cleanly", sync=False)
    from bench.chaos.faultfs import FaultFSError, is_mounted
    with pytest.raises(FaultFSError, match="mode"):
        fs.power_loss("sideways")
    with pytest.raises(FaultFSError, match="unknown operations"):
        fs.eio("*", ["explode"])
    fs.unmount()
    assert not is_mounted(fs.mountpoint) and fs.pid is None
    assert open(f"{fs.backing}/kept", "rb").read() == b"not synced, but unmounted cleanly"
    fs.start()
    assert open(f"{fs.mountpoint}/kept", "rb").read() == b"not synced, but unmounted cleanly"
