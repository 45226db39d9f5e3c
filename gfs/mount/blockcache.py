"""A bounded LRU cache of file data blocks, shared by every open file of a mount.

Blocks are keyed by (file version key, block index): a file's version key changes whenever the
file is replaced or rewritten (inode, mtime, chunk versions), so a stale block is never served —
it is only left to age out.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable


class BlockCache:
    def __init__(self, capacity: int, block_size: int):
        if block_size <= 0 or capacity < 0:
            raise ValueError("block_size must be > 0 and capacity >= 0")
        self.capacity, self.block_size = capacity, block_size
        self._blocks: OrderedDict[tuple[Hashable, int], bytes] = OrderedDict()
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

    def get(self, key: Hashable, index: int) -> bytes | None:
        with self._lock:
            block = self._blocks.get((key, index))
            if block is None:
                self.misses += 1
                return None
            self._blocks.move_to_end((key, index))
            self.hits += 1
            return block

    def put(self, key: Hashable, index: int, block: bytes) -> None:
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
        """Bytes [offset, offset+length) of a file of `size` bytes, from cached blocks; the
        missing ones are fetched in one range by `fetch(start, length)`."""
        end = min(size, offset + length)
        if offset >= end:
            return b""
        bs = self.block_size
        first, last = offset // bs, (end - 1) // bs
        blocks: dict[int, bytes] = {}
        missing = []
        for i in range(first, last + 1):
            block = self.get(key, i)
            if block is None:
                missing.append(i)
            else:
                blocks[i] = block
        if missing:
            lo = missing[0]
            hi = missing[-1]
            data = fetch(lo * bs, min(size, (hi + 1) * bs) - lo * bs)
            for i in range(lo, hi + 1):
                block = data[(i - lo) * bs:(i - lo + 1) * bs]
                self.put(key, i, block)
                blocks[i] = block
        out = b"".join(blocks[i] for i in range(first, last + 1))
        start = offset - first * bs
        return out[start:start + (end - offset)]
