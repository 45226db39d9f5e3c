"""DirectAppender: bytes appended around the page cache (O_DIRECT) land exactly, padded tails
cut off; where O_DIRECT is refused (at open, or at a write) the page cache takes over from
where the direct writes stopped, nothing lost or doubled."""
from __future__ import annotations

import errno
import os
import random
import shutil

import pytest

from gfs import direct_io
from gfs.direct_io import ALIGN, STAGE_BYTES, DirectAppender
from chunkserver.store import ChunkStore
from tests.page_cache import cached_pages, needs_o_direct, refuse_o_direct

PIECES = [1, 4095, 4097, 65536, STAGE_BYTES - 3, STAGE_BYTES, 100_003, 7]


def append_all(path: str, data: bytes, pieces=PIECES, direct=True) -> DirectAppender:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    out = DirectAppender(fd, path, direct=direct)
    pos, i = 0, 0
    try:
        while pos < len(data):
            n = pieces[i % len(pieces)]
            out.write(memoryview(data)[pos:pos + n])
            pos, i = pos + n, i + 1
        out.finish()
        os.fsync(fd)
    finally:
        out.close()
        os.close(fd)
    return out


@pytest.mark.parametrize("length", [0, 1, 4096, 4097, STAGE_BYTES, STAGE_BYTES + 1,
                                    3 * STAGE_BYTES + 12_345])
def test_bytes_land_exactly_and_the_padded_tail_is_cut_off(tmp_path, length):
    needs_o_direct(tmp_path)
    data = random.Random(length).randbytes(length)
    path = str(tmp_path / "chunk")
    out = append_all(path, data)
    assert out.direct
    assert os.path.getsize(path) == length
    with open(path, "rb") as f:
        assert f.read() == data


@pytest.mark.skipif(shutil.which("fincore") is None, reason="util-linux fincore not installed")
def test_direct_bytes_leave_the_page_cache_alone(tmp_path):
    needs_o_direct(tmp_path)
    path = str(tmp_path / "chunk")
    append_all(path, os.urandom(8 * STAGE_BYTES), pieces=[STAGE_BYTES])
    assert cached_pages(path) == 0
    buffered = str(tmp_path / "buffered")
    append_all(buffered, os.urandom(8 * STAGE_BYTES), pieces=[STAGE_BYTES], direct=False)
    assert cached_pages(buffered) > 0         # the contrast: the same bytes, cached


def test_a_refused_open_writes_through_the_page_cache(tmp_path, monkeypatch):
    refuse_o_direct(monkeypatch, direct_io)
    data = random.Random(1).randbytes(2 * STAGE_BYTES + 999)
    path = str(tmp_path / "chunk")
    out = append_all(path, data)
    assert not out.direct
    with open(path, "rb") as f:
        assert f.read() == data


@pytest.mark.parametrize("refuse_after", [0, 1, 2])
def test_a_refused_write_goes_on_through_the_page_cache_from_where_it_stopped(
        tmp_path, monkeypatch, refuse_after):
    """The file system refuses the n-th direct write (EINVAL): what was staged, and every byte
    after, is written through the page cache; the file is byte for byte what was appended."""
    real_pwrite, direct_writes = os.pwrite, []

    def pwrite(fd, data, pos):
        if os.get_blocking(fd) and fd in direct_fds:
            direct_writes.append(pos)
            if len(direct_writes) > refuse_after:
                raise OSError(errno.EINVAL, "refused")
        return real_pwrite(fd, data, pos)

    real_open, direct_fds = os.open, set()

    def track(path, flags, *args):
        fd = real_open(path, flags, *args)
        if flags & os.O_DIRECT:
            direct_fds.add(fd)
        return fd

    monkeypatch.setattr(direct_io.os, "open", track)
    monkeypatch.setattr(direct_io.os, "pwrite", pwrite)
    data = random.Random(refuse_after).randbytes(4 * STAGE_BYTES + 5)
    path = str(tmp_path / "chunk")
    out = append_all(path, data)
    assert not out.direct
    assert len(direct_writes) == refuse_after + 1
    with open(path, "rb") as f:
        assert f.read() == data


def test_other_write_errors_are_not_swallowed(tmp_path, monkeypatch):
    def full(fd, data, pos):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(direct_io.os, "pwrite", full)
    path = str(tmp_path / "chunk")
    with pytest.raises(OSError) as err:
        append_all(path, bytes(STAGE_BYTES))
    assert err.value.errno == errno.ENOSPC


def test_a_stored_chunk_is_read_back_whole_after_direct_writes(tmp_path):
    store = ChunkStore(str(tmp_path / "cs"))
    data = random.Random(5).randbytes(5 * STAGE_BYTES + 777)
    w = store.begin_write(9, 1)
    for pos in range(0, len(data), 300_000):
        w.write(data[pos:pos + 300_000])
    meta = w.commit(expected_length=len(data))
    assert meta.length == len(data)
    assert os.path.getsize(store.data_path(meta)) == len(data)
    assert b"".join(store.read(9)) == data
    assert b"".join(ChunkStore(str(tmp_path / "cs")).read(9)) == data      # and after a restart


@pytest.mark.parametrize("start,length", [(0, 3 * STAGE_BYTES + 12_345), (4096, STAGE_BYTES),
                                          (1, 2 * STAGE_BYTES), (ALIGN - 1, 5),
                                          (12_345, STAGE_BYTES + ALIGN + 1), (8192, 0)])
def test_a_range_in_the_middle_of_a_file_lands_exactly_and_touches_nothing_around_it(
        tmp_path, start, length):
    """A download writes its ranges into a file others' bytes surround: the head before the
    first aligned offset and the tail after the last go through the page cache, nothing is
    padded and the file is not cut."""
    needs_o_direct(tmp_path)
    path = str(tmp_path / "download")
    around = random.Random(start).randbytes(start + length + 3 * ALIGN + 17)
    with open(path, "wb") as f:
        f.write(around)
    data = random.Random(length).randbytes(length)
    fd = os.open(path, os.O_RDWR)
    out = DirectAppender(fd, f"/proc/self/fd/{fd}", start=start, pad_tail=False)
    try:
        for at in range(0, length, 300_001):
            out.write(memoryview(data)[at:at + 300_001])
        assert out.end == start + length
        out.finish()
        assert out.direct
    finally:
        out.close()
        os.close(fd)
    with open(path, "rb") as f:
        assert f.read() == around[:start] + data + around[start + length:]


@pytest.mark.skipif(shutil.which("fincore") is None, reason="util-linux fincore not installed")
def test_a_range_leaves_at_most_its_head_and_tail_pages_in_the_page_cache(tmp_path):
    needs_o_direct(tmp_path)
    path = str(tmp_path / "download")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    out = DirectAppender(fd, f"/proc/self/fd/{fd}", start=100, pad_tail=False)
    try:
        out.write(memoryview(os.urandom(8 * STAGE_BYTES)))
        out.finish()
    finally:
        out.close()
        os.close(fd)
    assert os.path.getsize(path) == 100 + 8 * STAGE_BYTES
    assert cached_pages(path) <= 2
