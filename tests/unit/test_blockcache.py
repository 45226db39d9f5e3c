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


def test_a_failed_background_fetch_caches_only_whole_blocks():
    """The blocks of a piece are cached as they complete; what a download that fails half-way
    through a block leaves behind is dropped, never cached as if it were the block."""
    from gfs.mount.readahead import BlockWriter

    bs, data = 1000, os.urandom(3500)
    cache = BlockCache(capacity=1 << 20, block_size=bs)
    writer = BlockWriter(cache, "v", 1, file_size=len(data))
    writer.write(data[1000:2300])
    writer.flush()                                         # the download's end, or its failure
    assert cache.get("v", 1) == data[1000:2000]
    assert not cache.has("v", 2)                           # 300 bytes of 1000: not a block
    writer = BlockWriter(cache, "v", 2, file_size=len(data))
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
