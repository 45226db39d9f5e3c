"""A bounded LRU cache of file data blocks, shared by every open file of a mount.

Blocks are keyed by (file version key, block index): a file's version key changes whenever the
file is replaced or rewritten (inode, mtime, chunk versions), so a stale block is never served —
it is only left to age out.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable, Union

# A cached block: bytes, or a read-only view of a buffer nothing writes to again (a block kept
# as downloaded, see readahead.BlockWriter).
Block = Union[bytes, memoryview]


class BlockCache:
    def __init__(self, capacity: int, block_size: int):
        if block_size <= 0 or capacity < 0:
            raise ValueError("block_size must be > 0 and capacity >= 0")
        self.capacity, self.block_size = capacity, block_size
        self._blocks: OrderedDict[tuple[Hashable, int], Block] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @property
    def size(self) -> int:
        """Bytes held now (never more than `capacity`)."""
        return self._bytes

    def has(self, key: Hashable, index: int) -> bool:
        """Is the block cached (without counting a hit or a miss, nor refreshing it)?"""
        with self._lock:
            return (key, index) in self._blocks

    def get(self, key: Hashable, index: int) -> Block | None:
        with self._lock:
            block = self._blocks.get((key, index))
            if block is None:
                self.misses += 1
                return None
            self._blocks.move_to_end((key, index))
            self.hits += 1
            return block

    def put(self, key: Hashable, index: int, block: Block) -> None:
        if len(block) > self.capacity:
            return
        with self._lock:
            old = self._blocks.pop((key, index), None)
            if old is not None:
                self._bytes -= len(old)
            self._blocks[(key, index)] = block
            self._bytes += len(block)
            while self._bytes > self.capacity:
                _, evicted = self._blocks.popitem(last=False)
                self._bytes -= len(evicted)

    def read(self, key: Hashable, size: int, offset: int, length: int,
             fetch: Callable[[int, int], bytes]) -> bytes:
        """Bytes [offset, offset+length) of a file of `size` bytes (see `read_into`)."""
        out = bytearray(max(0, min(size, offset + length) - offset))
        n = self.read_into(key, size, offset, memoryview(out), fetch)
        return bytes(out[:n])

    def read_into(self, key: Hashable, size: int, offset: int, out: memoryview,
                  fetch: Callable[[int, int], bytes]) -> int:
        """Copy bytes [offset, offset+len(out)) of a file of `size` bytes into `out` from cached
        blocks (one copy each, straight from the block); the missing ones are fetched in one
        range by `fetch(start, length)` and cached. Returns the bytes copied (fewer at the
        end of the file)."""
        end = min(size, offset + len(out))
        if offset >= end:
            return 0
        bs = self.block_size
        first, last = offset // bs, (end - 1) // bs
        blocks = [self.get(key, i) for i in range(first, last + 1)]
        missing = [first + j for j, block in enumerate(blocks) if block is None]
        if missing:
            lo, hi = missing[0], missing[-1]
            data = fetch(lo * bs, min(size, (hi + 1) * bs) - lo * bs)
            for i in range(lo, hi + 1):
                block = data[(i - lo) * bs:(i - lo + 1) * bs]
                self.put(key, i, block)
                blocks[i - first] = block
        pos = offset
        for i, block in enumerate(blocks, first):
            stop = min(end, (i + 1) * bs)
            piece = memoryview(block)[pos - i * bs:stop - i * bs]
            out[pos - offset:pos - offset + len(piece)] = piece
            pos += len(piece)
            if pos < stop:
                break               # a block shorter than the file says: the read ends there
        return pos - offset
