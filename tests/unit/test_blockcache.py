"""The mount's block cache without servers: bounded, keyed by version, fetches only what is
missing (plus readahead)."""
import os

from gfs.mount.blockcache import BlockCache


def fetcher(data: bytes, calls: list):
    def fetch(start: int, n: int) -> bytes:
        calls.append((start, n))
        return data[start:start + n]
    return fetch


def test_reads_are_exact_and_fetch_missing_blocks_once():
    data = os.urandom(10_000)
    cache, calls = BlockCache(capacity=1 << 20, block_size=1000), []
    fetch = fetcher(data, calls)
    assert cache.read("v1", len(data), 1500, 2000, fetch) == data[1500:3500]
    assert calls == [(1000, 3000)]                     # blocks 1..3 in one request
    assert cache.read("v1", len(data), 1000, 3000, fetch) == data[1000:4000]
    assert len(calls) == 1                             # all cached
    assert cache.read("v1", len(data), 9990, 100, fetch) == data[9990:]   # clipped at the end
    assert cache.read("v1", len(data), 10_000, 5, fetch) == b""


def test_a_sequential_reader_gets_blocks_fetched_ahead_once(tmp_path):
    """ReadHandle: after two sequential reads the next blocks arrive in the background, in
    pieces; reading on is served from the cache; no byte range is fetched twice."""
    from concurrent.futures import ThreadPoolExecutor, wait

    from gfs.client import FileInfo
    from gfs.mount.handles import ReadHandle

    bs = 1000
    data = os.urandom(40 * bs + 123)
    calls = []

    class Client:
        def read_at(self, info, start, n):
            calls.append((start, n))
            return data[start:start + n]

        def download(self, info, sink, offset, length, parallel):
            calls.append((offset, length))
            for at in range(offset, offset + length, 700):      # pieces across block edges
                sink.write(memoryview(data)[at:min(at + 700, offset + length)])

    info = FileInfo(path="/f", inode=7, type="file", size=len(data), mode=0o644, owner="",
                    ctime_ms=0, mtime_ms=1, replication=3, storage_class="hot", chunk_size=0)
    with ThreadPoolExecutor(2) as pool:
        handle = ReadHandle(Client(), info, BlockCache(capacity=1 << 20, block_size=bs), pool)
        got, pos = b"", 0
        while pos < len(data):
            got += handle.read(300, pos)
            pos += 300
            wait(list(handle._inflight.values()))
    assert got == data
    fetched = sorted(calls)
    assert all(a + n <= b for (a, n), (b, _) in zip(fetched, fetched[1:]))   # never twice
    assert sum(n for _, n in fetched) == len(data)
    assert any(n == ReadHandle.PIECE * bs for _, n in fetched)              # pieces ahead


def test_a_reader_gets_its_block_before_the_piece_bringing_it_has_ended():
    """Blocks fetched ahead are cached as they arrive: a reader waiting for block 1 is served
    while the rest of the piece is still on its way."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from gfs.client import FileInfo
    from gfs.mount.handles import ReadHandle

    bs = 1000
    data = os.urandom(40 * bs)
    release = threading.Event()

    class Client:
        def read_at(self, info, start, n):
            return data[start:start + n]

        def download(self, info, sink, offset, length, parallel):
            sink.write(memoryview(data)[offset:offset + 2 * bs])       # two blocks, then a stall
            release.wait(10)
            sink.write(memoryview(data)[offset + 2 * bs:offset + length])

    info = FileInfo(path="/f", inode=7, type="file", size=len(data), mode=0o644, owner="",
                    ctime_ms=0, mtime_ms=1, replication=3, storage_class="hot", chunk_size=0)
    with ThreadPoolExecutor(2) as pool:
        handle = ReadHandle(Client(), info, BlockCache(capacity=1 << 20, block_size=bs), pool)
        assert handle.read(300, 0) == data[:300]
        assert handle.read(700, 300) == data[300:1000]          # sequential: pieces ahead
        started = time.monotonic()
        assert handle.read(bs, bs) == data[bs:2 * bs]            # block 1 of a stalled piece
        assert time.monotonic() - started < 5
        assert handle._inflight                                 # its piece is still running
        release.set()
        assert handle.read(bs, 5 * bs) == data[5 * bs:6 * bs]


def test_a_failed_background_fetch_caches_only_whole_blocks():
    """The blocks of a piece are cached as they complete; what a download that fails half-way
    through a block leaves behind is dropped, never cached as if it were the block."""
    from gfs.mount.handles import _BlockWriter

    bs, data = 1000, os.urandom(3500)
    cache = BlockCache(capacity=1 << 20, block_size=bs)
    writer = _BlockWriter(cache, "v", 1, file_size=len(data))
    writer.write(data[1000:2300])
    writer.flush()                                         # the download's end, or its failure
    assert cache.get("v", 1) == data[1000:2000]
    assert not cache.has("v", 2)                           # 300 bytes of 1000: not a block
    writer = _BlockWriter(cache, "v", 2, file_size=len(data))
    writer.write(data[2000:3500])
    assert cache.get("v", 3) == data[3000:3500]            # the file's short last block
    try:
        writer.write(b"x")
        raise AssertionError("a byte past the end of the file was taken")
    except ValueError:
        pass


def test_memory_stays_within_capacity_and_versions_do_not_mix():
    data, other = os.urandom(50_000), os.urandom(50_000)
    cache = BlockCache(capacity=5000, block_size=1000)
    for off in range(0, 50_000, 700):
        assert cache.read("a", len(data), off, 700, fetcher(data, [])) == data[off:off + 700]
        assert cache.size <= 5000
    # A new version of the file (rewritten): its bytes, never the old version's cached blocks.
    assert cache.read("b", len(other), 49_000, 1000, fetcher(other, [])) == other[49_000:]
