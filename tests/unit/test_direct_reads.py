"""Bulk reads of hot chunks through a connection's SpanRing (chunkserver/direct_reads.py): the
same bytes and sums as any read, the first read of a region around the page cache and a second
one through it, bad blocks and short files still DataLoss, a read abandoned midway leaves the
ring whole for the next, and a file system refusing O_DIRECT is read through the cache."""
from __future__ import annotations

import os
import random
import shutil

import pytest

from chunkserver import direct_reads
from chunkserver.direct_reads import REGION, DirectReads, SpanRing
from chunkserver.store import SPAN_BYTES, ChunkStore
from gfs.checksum import BLOCK_SIZE
from gfs.errors import DataLoss
from tests.page_cache import cached_pages, needs_o_direct, refuse_o_direct


@pytest.fixture
def store(tmp_path):
    needs_o_direct(tmp_path)
    return ChunkStore(str(tmp_path / "cs"))


@pytest.fixture
def ring():
    r = SpanRing(SPAN_BYTES)
    yield r
    r.close()


def put(store: ChunkStore, handle: int, data: bytes):
    w = store.begin_write(handle, 1)
    w.write(data)
    return w.commit(expected_length=len(data))


def spans(store, handle, ring, offset=0, length=-1):
    return [(at, bytes(view), sums) for at, view, sums in
            store.read_spans(handle, offset, length, into=ring)[1]]


@pytest.mark.parametrize("length", [1, BLOCK_SIZE, SPAN_BYTES + 1, 7 * SPAN_BYTES + 4097])
def test_the_same_spans_and_sums_as_a_plain_read(store, ring, length):
    data = random.Random(length).randbytes(length)
    put(store, 7, data)
    plain = [(at, bytes(v), s) for at, v, s in store.read_spans(7)[1]]
    assert spans(store, 7, ring) == plain
    assert b"".join(v for _, v, _ in plain) == data
    if length > BLOCK_SIZE:
        middle = spans(store, 7, ring, offset=BLOCK_SIZE)          # from block 1 on
        assert b"".join(v for _, v, _ in middle) == data[BLOCK_SIZE:]


@pytest.mark.skipif(shutil.which("fincore") is None, reason="util-linux fincore not installed")
def test_a_first_read_leaves_the_cache_alone_and_a_second_fills_it(store, ring):
    meta = put(store, 8, os.urandom(2 * REGION))
    path = store.data_path(meta)
    spans(store, 8, ring, 0, REGION)
    assert cached_pages(path) == 0
    spans(store, 8, ring, REGION, REGION)          # another region: still its first read
    assert cached_pages(path) == 0
    spans(store, 8, ring, 0, REGION)               # read again: wanted, so cached
    assert cached_pages(path) >= REGION // 4096
    spans(store, 8, ring, 0, REGION)
    assert cached_pages(path) >= REGION // 4096


def test_a_bad_block_ends_the_read_after_the_intact_blocks_before_it(store, ring):
    data = os.urandom(5 * SPAN_BYTES)
    meta = put(store, 9, data)
    bad = 3 * SPAN_BYTES + 5 * BLOCK_SIZE + 10
    with open(store.data_path(meta), "r+b") as f:
        f.seek(bad)
        byte = f.read(1)
        f.seek(bad)
        f.write(bytes([byte[0] ^ 1]))
    received = []
    with pytest.raises(DataLoss, match="block 53"):
        for _, view, _ in store.read_spans(9, into=ring)[1]:
            received.append(bytes(view))
    assert b"".join(received) == data[:bad - bad % BLOCK_SIZE]


def test_a_read_abandoned_midway_leaves_the_ring_whole_for_the_next(store, ring):
    a, b = os.urandom(6 * SPAN_BYTES), os.urandom(6 * SPAN_BYTES)
    put(store, 10, a)
    put(store, 11, b)
    _, first = store.read_spans(10, into=ring)
    assert bytes(next(first)[1]) == a[:SPAN_BYTES]
    first.close()                                   # reads ahead still running: waited for
    assert b"".join(v for _, v, _ in spans(store, 11, ring)) == b


def test_a_refused_o_direct_reads_through_the_cache(store, ring, monkeypatch):
    refuse_o_direct(monkeypatch, direct_reads)
    data = os.urandom(3 * SPAN_BYTES + 123)
    put(store, 12, data)
    assert b"".join(v for _, v, _ in spans(store, 12, ring)) == data
    assert store._direct_reads._refused
    assert b"".join(v for _, v, _ in spans(store, 12, ring)) == data


def test_bytes_read_are_remembered_within_the_window_only(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(direct_reads.time, "monotonic", lambda: now[0])
    reads = DirectReads(readers=1, window_s=60)
    mib = 1 << 20
    try:
        at = [(0, SPAN_BYTES), (REGION, SPAN_BYTES)]
        assert reads.around_cache(1, 1, at) == [True, True]
        assert reads.around_cache(1, 1, at[:1]) == [False]       # read again: cache it
        assert reads.around_cache(1, 2, at[:1]) == [True]        # another version
        # A sequential reader in small, unaligned ranges is no re-reader: each range has a
        # MiB nobody read yet, though it shares one with the range before.
        assert reads.around_cache(2, 1, [(0, mib + mib // 2)]) == [True]
        assert reads.around_cache(2, 1, [(mib + mib // 2, mib + mib // 2)]) == [True]
        assert reads.around_cache(2, 1, [(mib // 2, 2 * mib)]) == [False]   # all read before
        # Spans of one read do not count each other's bytes as read before.
        assert reads.around_cache(3, 1, [(0, mib + 4096), (mib, mib)]) == [True, True]
        now[0] += 61
        assert reads.around_cache(1, 1, at) == [True, True]
    finally:
        reads.close()
