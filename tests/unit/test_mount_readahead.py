"""The mount's read-ahead without servers: a sequential reader's blocks stream into the cache
(several bulk reads in parallel, bounded by a window), random readers fetch only what they
touch, and seeking away or closing ends the streams."""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from gfs.client import FileInfo
from gfs.mount.blockcache import BlockCache
from gfs.mount.handles import ReadHandle
from gfs.mount.readahead import Prefetcher

BS = 1000


def file_info(size: int) -> FileInfo:
    return FileInfo(path="/f", inode=7, type="file", size=size, mode=0o644, owner="",
                    ctime_ms=0, mtime_ms=1, replication=3, storage_class="hot", chunk_size=0)


class FakeClient:
    """read_at and download of `data`, recording every range; `gate` (if set) is waited for
    after each piece a download hands over, so a test can hold streams mid-way."""

    def __init__(self, data: bytes, piece: int = 700):
        self.data, self.piece = data, piece
        self.calls: list[tuple[str, int, int]] = []
        self.gate: threading.Event | None = None
        self.active = self.most_active = 0
        self.ended: list[str] = []            # how each download ended: "done" or an error
        self._lock = threading.Lock()

    def read_at(self, info, start, n):
        with self._lock:
            self.calls.append(("sync", start, n))
        return self.data[start:start + n]

    def download(self, info, sink, offset, length, parallel):
        with self._lock:
            self.calls.append(("ahead", offset, length))
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            for at in range(offset, offset + length, self.piece):
                sink.write(memoryview(self.data)[at:min(at + self.piece, offset + length)])
                if self.gate is not None:
                    self.gate.wait(10)
            self.ended.append("done")
        except Exception as err:
            self.ended.append(type(err).__name__)
            raise
        finally:
            with self._lock:
                self.active -= 1


def read_all(handle: ReadHandle, size: int, step: int) -> bytes:
    got, pos = b"", 0
    while pos < size:
        got += handle.read(step, pos)
        pos += step
    return got


def settle(prefetcher: Prefetcher, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while prefetcher.running:
        assert time.monotonic() < deadline, "read-ahead streams did not end"
        time.sleep(0.005)


def test_a_sequential_reader_gets_every_byte_fetched_once_in_parallel_segments():
    data = os.urandom(200 * BS + 123)
    client = FakeClient(data)
    with ThreadPoolExecutor(4) as pool:
        handle = ReadHandle(client, file_info(len(data)),
                            BlockCache(capacity=1 << 20, block_size=BS), pool)
        assert read_all(handle, len(data), 300) == data
        settle(handle.prefetcher)
    ranges = sorted((a, a + n) for _, a, n in client.calls)
    assert all(hi <= lo for (_, hi), (lo, _) in zip(ranges, ranges[1:]))     # never twice
    assert sum(hi - lo for lo, hi in ranges) == len(data)
    ahead = [n for kind, _, n in client.calls if kind == "ahead"]
    assert sum(ahead) > len(data) - 2 * BS          # all but the first block(s): read ahead
    assert max(ahead) == Prefetcher.SEGMENT * BS
    assert client.ended.count("done") == len(ahead)


def test_streams_run_side_by_side_up_to_the_limit():
    data = os.urandom(100 * BS)
    client = FakeClient(data, piece=BS)          # each stream stalls after its first block
    client.gate = threading.Event()
    with ThreadPoolExecutor(8) as pool:
        handle = ReadHandle(client, file_info(len(data)),
                            BlockCache(capacity=1 << 20, block_size=BS), pool)
        handle.read(BS, 0)
        handle.read(BS, BS)                      # sequential: streams start
        deadline = time.monotonic() + 5
        while client.active < Prefetcher.STREAMS and time.monotonic() < deadline:
            time.sleep(0.005)
        assert client.active == Prefetcher.STREAMS
        client.gate.set()
        assert read_all(handle, len(data), BS) == data
        settle(handle.prefetcher)
    assert client.most_active == Prefetcher.STREAMS


def test_random_reads_fetch_only_the_blocks_they_touch():
    data = os.urandom(100 * BS)
    client = FakeClient(data)
    with ThreadPoolExecutor(4) as pool:
        handle = ReadHandle(client, file_info(len(data)),
                            BlockCache(capacity=1 << 20, block_size=BS), pool)
        for block in (50, 3, 90, 20, 70, 0, 33):
            assert handle.read(100, block * BS + 10) == data[block * BS + 10:block * BS + 110]
        assert handle.prefetcher.running == 0
    assert client.calls == [("sync", b * BS, BS) for b in (50, 3, 90, 20, 70, 0, 33)]


def test_out_of_order_requests_of_the_kernel_are_still_sequential():
    """The kernel's read-ahead requests, answered by several threads, arrive a few blocks out
    of order: the read-ahead goes on (it is not a seek)."""
    data = os.urandom(100 * BS)
    client = FakeClient(data)
    with ThreadPoolExecutor(4) as pool:
        handle = ReadHandle(client, file_info(len(data)),
                            BlockCache(capacity=1 << 20, block_size=BS), pool, reorder=4)
        for block in (0, 2, 1, 4, 3, 6, 5, 7):
            assert handle.read(BS, block * BS) == data[block * BS:(block + 1) * BS]
        assert handle.prefetcher.ahead                  # not taken for a seek: still streaming
        settle(handle.prefetcher)
        assert read_all_from(handle, 8 * BS, len(data)) == data[8 * BS:]
    ranges = sorted((a, a + n) for _, a, n in client.calls)
    assert all(hi <= lo for (_, hi), (lo, _) in zip(ranges, ranges[1:]))     # never twice
    # The first block, and one that came after the one following it: fetched by their readers.
    assert [c for c in client.calls if c[0] == "sync"] == [("sync", 0, BS), ("sync", BS, BS)]


def test_the_read_ahead_stays_within_its_window():
    """A reader that stops reading leaves at most the window fetched ahead of it, and no stream
    running: memory is bounded whatever the file's size."""
    data = os.urandom(500 * BS)
    client = FakeClient(data)
    cache = BlockCache(capacity=100 * BS, block_size=BS)         # window: a quarter, 25 blocks
    with ThreadPoolExecutor(4) as pool:
        handle = ReadHandle(client, file_info(len(data)), cache, pool)
        window = handle.prefetcher.window
        assert window == 25
        assert read_all(handle, 10 * BS, BS) == data[:10 * BS]
        settle(handle.prefetcher)
        cached = [i for i in range(500) if cache.has(handle.key, i)]
        assert max(cached) < 9 + window
        assert cache.size <= cache.capacity
        # Reading on opens the window again: the file is read whole, the cache stays bounded.
        got = data[:10 * BS]
        for pos in range(10 * BS, len(data), BS):
            got += handle.read(BS, pos)
            assert cache.size <= cache.capacity
        assert got == data
        settle(handle.prefetcher)


def test_seeking_away_ends_the_streams_at_their_next_block():
    data = os.urandom(200 * BS)
    client = FakeClient(data, piece=BS)
    client.gate = threading.Event()
    cache = BlockCache(capacity=1 << 20, block_size=BS)
    with ThreadPoolExecutor(4) as pool:
        handle = ReadHandle(client, file_info(len(data)), cache, pool)
        handle.read(BS, 0)
        handle.read(BS, BS)
        deadline = time.monotonic() + 5
        while client.active < Prefetcher.STREAMS and time.monotonic() < deadline:
            time.sleep(0.005)
        assert handle.read(100, 150 * BS) == data[150 * BS:150 * BS + 100]     # a seek
        assert handle.prefetcher.ahead == 0
        client.gate.set()
        settle(handle.prefetcher)
        assert client.ended and set(client.ended) == {"Cancelled"}
        # Nothing arrived after the seek but the block each stream was receiving.
        fetched_ahead = [i for i in range(2, 150) if cache.has(handle.key, i)]
        assert len(fetched_ahead) <= 2 * Prefetcher.STREAMS
        # Reading on from the new place streams again.
        assert read_all_from(handle, 150 * BS + 100, len(data)) == data[150 * BS + 100:]
        settle(handle.prefetcher)
    assert client.ended.count("done") >= 1


def read_all_from(handle: ReadHandle, start: int, end: int) -> bytes:
    got, pos = b"", start
    while pos < end:
        got += handle.read(BS, pos)
        pos += BS
    return got


def test_closing_the_file_ends_its_streams():
    data = os.urandom(200 * BS)
    client = FakeClient(data, piece=BS)
    client.gate = threading.Event()
    with ThreadPoolExecutor(4) as pool:
        handle = ReadHandle(client, file_info(len(data)),
                            BlockCache(capacity=1 << 20, block_size=BS), pool)
        handle.read(BS, 0)
        handle.read(BS, BS)
        handle.close()
        client.gate.set()
        settle(handle.prefetcher)
    assert client.ended and set(client.ended) == {"Cancelled"}
    assert len([c for c in client.calls if c[0] == "ahead"]) <= Prefetcher.STREAMS


def test_a_reader_gets_its_block_before_the_segment_bringing_it_has_ended():
    data = os.urandom(40 * BS)
    client = FakeClient(data, piece=BS)
    release = threading.Event()

    def slow(info, sink, offset, length, parallel):
        sink.write(memoryview(data)[offset:offset + 2 * BS])       # two blocks, then a stall
        release.wait(10)
        sink.write(memoryview(data)[offset + 2 * BS:offset + length])

    client.download = slow
    with ThreadPoolExecutor(4) as pool:
        handle = ReadHandle(client, file_info(len(data)),
                            BlockCache(capacity=1 << 20, block_size=BS), pool)
        assert handle.read(300, 0) == data[:300]
        started = time.monotonic()
        assert handle.read(BS, BS) == data[BS:2 * BS]              # sequential: streamed
        assert handle.read(BS, 2 * BS) == data[2 * BS:3 * BS]      # block 2 of a stalled one
        assert time.monotonic() - started < 5
        assert handle.prefetcher.fetching(3, 3)
        release.set()
        assert read_all_from(handle, 3 * BS, len(data)) == data[3 * BS:]
        settle(handle.prefetcher)
    assert [c for c in client.calls if c[0] == "sync"] == [("sync", 0, BS)]


def test_a_failed_stream_leaves_the_reader_to_fetch_and_report_itself():
    data = os.urandom(60 * BS)
    client = FakeClient(data)

    def broken(info, sink, offset, length, parallel):
        raise ConnectionError("replica gone")

    client.download = broken
    with ThreadPoolExecutor(4) as pool:
        handle = ReadHandle(client, file_info(len(data)),
                            BlockCache(capacity=1 << 20, block_size=BS), pool)
        assert read_all(handle, len(data), BS) == data
        settle(handle.prefetcher)


@pytest.mark.parametrize("size", [0, 1, BS, 3 * BS + 1])
def test_small_files_and_the_last_short_block(size):
    data = os.urandom(size)
    client = FakeClient(data)
    with ThreadPoolExecutor(2) as pool:
        handle = ReadHandle(client, file_info(size),
                            BlockCache(capacity=1 << 20, block_size=BS), pool)
        assert read_all(handle, size, 400) == data
        settle(handle.prefetcher)
