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


def test_read_into_copies_straight_into_the_buffer_across_blocks():
    data = os.urandom(10_500)
    cache, calls = BlockCache(capacity=1 << 20, block_size=1000), []
    out = bytearray(3000)
    assert cache.read_into("v", len(data), 2500, memoryview(out), fetcher(data, calls)) == 3000
    assert out == data[2500:5500] and calls == [(2000, 4000)]
    out = bytearray(b"-" * 700)
    assert cache.read_into("v", len(data), 10_000, memoryview(out), fetcher(data, calls)) == 500
    assert out[:500] == data[10_000:] and out[500:] == b"-" * 200    # the rest untouched


def test_a_whole_read_only_block_is_kept_without_a_copy_and_others_are_copied():
    """A downloaded span that is exactly one block of a read-only buffer of its own is cached as
    it is; a writable piece is copied (its owner may reuse it), and so is a view of part of a
    larger buffer (keeping it would keep the whole buffer)."""
    from gfs.mount.readahead import BlockWriter

    bs = 1000
    data = os.urandom(4 * bs)
    cache = BlockCache(capacity=1 << 20, block_size=bs)
    writer = BlockWriter(cache, "v", 0, file_size=len(data))
    own = memoryview(bytearray(data[:bs])).toreadonly()
    writer.write(own)
    assert writer.kept == 1 and cache.get("v", 0).obj is own.obj and cache.get("v", 0) == data[:bs]
    reused = bytearray(data[bs:2 * bs])
    writer.write(memoryview(reused))
    reused[:] = bytes(bs)                                  # its owner reuses the buffer
    assert writer.kept == 1 and cache.get("v", 1) == data[bs:2 * bs]
    writer.write(memoryview(data).toreadonly()[2 * bs:])   # two blocks of a larger buffer
    assert writer.kept == 1
    assert cache.get("v", 2) == data[2 * bs:3 * bs] and cache.get("v", 3) == data[3 * bs:]
