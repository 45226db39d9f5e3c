"""master/snapshot_format.py: the snapshot file carries a checksum of its store image, computed
while the image is written, and a damaged file is told from a whole one; files in the format
before the checksum are still read."""
from __future__ import annotations

import logging
import os
import struct

import lmdb
import pysyncobj.pickle as sopickle
import pytest
from pysyncobj.transport import TCPNode

from gfs.errors import DataLoss
from master import snapshot_format
from master.snapshot_format import MAGIC, MAGIC_V1, ImageHash
from master.state import MetadataState

ADDR = "127.0.0.1:9"
HEADER = sopickle.dumps(((b"x", 7, 2), (b"y", 6, 2), {TCPNode(ADDR)}, {ADDR: "127.0.0.1:10"}))


def mkdir(path: str) -> dict:
    return {"op": "mkdir", "path": path, "parents": False, "mode": 0o755, "owner": "",
            "now": 1}


@pytest.fixture
def store(tmp_path):
    with MetadataState(str(tmp_path / "src"), map_size=1 << 26) as s:
        s.apply_batch(7, [mkdir(f"/a-directory-{i:05d}") for i in range(3000)])
        yield s


def plain_copy(state, path) -> bytes:
    with open(path, "wb") as f:
        state.copy_to_fd(f.fileno())
    return open(path, "rb").read()


def to_old_format(data: bytes) -> bytes:
    """The same snapshot as a GFSSNAP1 file (no image length, no checksum)."""
    assert data.startswith(MAGIC)
    (length,) = struct.unpack_from("<Q", data, 8)
    return MAGIC_V1 + struct.pack("<Q", length) + data[40:]


def test_round_trip(store, tmp_path):
    path = str(tmp_path / "snapshot.bin")
    written = snapshot_format.write(path, HEADER, store.copy_to_fd)
    header = snapshot_format.read_header(path)
    assert header.last_entry == (b"x", 7, 2) and header.prev_entry == (b"y", 6, 2)
    assert header.members == {ADDR: "127.0.0.1:10"}
    data = open(path, "rb").read()
    image = data[header.offset:]
    assert image == plain_copy(store, tmp_path / "copy.mdb")   # the copy itself, unchanged
    hashed = ImageHash()
    hashed.update(image)
    assert header.image == written == hashed.result() and written.length == len(image)
    assert snapshot_format.check_file(path) == header
    assert snapshot_format.image_needs(image[:8192]) == len(image)


def test_the_image_is_hashed_on_its_way_not_read_back(store, tmp_path, monkeypatch):
    """The writer never opens the file it wrote for reading."""
    opened = []
    real_open = open

    def watch(file, mode="r", *args, **kwargs):
        opened.append((file, mode))
        return real_open(file, mode, *args, **kwargs)
    monkeypatch.setattr("builtins.open", watch)
    snapshot_format.write(str(tmp_path / "s.bin"), HEADER, store.copy_to_fd)
    assert [m for f, m in opened if f == str(tmp_path / "s.bin")] == ["wb"]


def test_image_needs_agrees_with_lmdb(store, tmp_path):
    image = plain_copy(store, tmp_path / "data.mdb")
    env = lmdb.open(str(tmp_path), readonly=True, lock=False, max_dbs=64)
    try:
        assert snapshot_format.image_needs(image[:8192]) == \
            (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    finally:
        env.close()
    with pytest.raises(DataLoss):
        snapshot_format.image_needs(image[:100])
    with pytest.raises(DataLoss):
        snapshot_format.image_needs(b"\0" * 8192)


def test_old_format_files_are_still_read_and_checked_by_size(store, tmp_path):
    path = str(tmp_path / "snapshot.bin")
    snapshot_format.write(path, HEADER, store.copy_to_fd)
    new = open(path, "rb").read()
    old = tmp_path / "old.bin"
    old.write_bytes(to_old_format(new))
    header = snapshot_format.read_header(str(old))
    assert header.image is None and header.last_entry == (b"x", 7, 2)
    assert old.read_bytes()[header.offset:] == new[snapshot_format.read_header(path).offset:]
    assert snapshot_format.check_file(str(old)) == header
    cut = tmp_path / "cut.bin"
    cut.write_bytes(old.read_bytes()[:-5000])
    with pytest.raises(DataLoss, match="cut off"):
        snapshot_format.check_file(str(cut))


@pytest.mark.parametrize("damage", ["flip", "cut", "pad", "header", "inside-header", "magic"])
def test_a_damaged_file_is_refused(store, tmp_path, damage):
    path = tmp_path / "snapshot.bin"
    snapshot_format.write(str(path), HEADER, store.copy_to_fd)
    data = bytearray(path.read_bytes())
    offset = snapshot_format.read_header(str(path)).offset
    if damage == "flip":
        data[offset + (len(data) - offset) // 2] ^= 0x10
    elif damage == "cut":
        del data[-4096:]
    elif damage == "pad":
        data += b"\0" * 4096
    elif damage == "header":
        data[offset - 5] ^= 0xFF
    elif damage == "inside-header":
        del data[offset - 5:]
    else:
        data[:8] = b"NOTASNAP"
    path.write_bytes(bytes(data))
    with pytest.raises((DataLoss, ValueError)):
        snapshot_format.check_file(str(path))


def test_check_image(caplog):
    hashed = ImageHash()
    hashed.update(b"image")
    good = hashed.result()
    header = snapshot_format.Header((), (), {}, 40, good)
    snapshot_format.check_image(header, good, "it")
    with pytest.raises(DataLoss, match="checksum"):
        snapshot_format.check_image(header, good._replace(digest=bytes(16)), "it")
    with pytest.raises(DataLoss, match="cut off"):
        snapshot_format.check_image(header, good._replace(length=4), "it")
    with caplog.at_level(logging.WARNING):
        snapshot_format.check_image(header._replace(image=None), good, "old one")
    assert "old one is a snapshot in the old format" in caplog.text


def test_a_failed_copy_or_write_raises_and_never_hangs(tmp_path):
    def copy_fails(fd):
        os.write(fd, b"x" * 100_000)
        raise lmdb.Error("copy failed")
    with pytest.raises(lmdb.Error, match="copy failed"):
        snapshot_format.write(str(tmp_path / "a.bin"), HEADER, copy_fails)

    def copy_much(fd):                # more than a pipe holds: the copy must be drained
        for _ in range(16):
            os.write(fd, b"y" * (1 << 20))
    full = "/dev/full" if os.path.exists("/dev/full") else None
    if full is None:
        pytest.skip("no /dev/full")
    with pytest.raises(OSError):
        snapshot_format.write(full, HEADER, copy_much)
