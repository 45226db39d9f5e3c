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


def test_readahead_fetches_further_blocks_in_the_same_request():
    data = os.urandom(10_000)
    cache, calls = BlockCache(capacity=1 << 20, block_size=1000), []
    cache.read("v", len(data), 0, 10, fetcher(data, calls), readahead=3)
    assert calls == [(0, 4000)]
    cache.read("v", len(data), 8500, 1000, fetcher(data, calls), readahead=5)
    assert calls[-1] == (8000, 2000)                   # never past the end of the file


def test_memory_stays_within_capacity_and_versions_do_not_mix():
    data, other = os.urandom(50_000), os.urandom(50_000)
    cache = BlockCache(capacity=5000, block_size=1000)
    for off in range(0, 50_000, 700):
        assert cache.read("a", len(data), off, 700, fetcher(data, [])) == data[off:off + 700]
        assert cache.size <= 5000
    # A new version of the file (rewritten): its bytes, never the old version's cached blocks.
    assert cache.read("b", len(other), 49_000, 1000, fetcher(other, [])) == other[49_000:]
