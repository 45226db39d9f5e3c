"""The block checksum format shared by writers, chunkservers and readers.

Data is checksummed per 64 KiB block with xxh3-64. A chunk's checksum is the xxh3-64 of its
block checksums (each as 8 bytes little endian), so a chunkserver can compute it while it
writes, a client can compute it while it streams, and neither has to hold a chunk in memory.
"""
from __future__ import annotations

import struct

import xxhash

BLOCK_SIZE = 64 * 1024
_U64 = struct.Struct("<Q")


def block_checksum(data: bytes | memoryview) -> int:
    return xxhash.xxh3_64_intdigest(data)


def chunk_checksum(block_sums: list[int]) -> int:
    return xxhash.xxh3_64_intdigest(b"".join(_U64.pack(s) for s in block_sums))


def inline_checksum(data: bytes) -> int:
    """The checksum of a file stored inline in the metadata: that of a chunk of the same bytes."""
    return chunk_checksum([block_checksum(data[i:i + BLOCK_SIZE])
                           for i in range(0, len(data), BLOCK_SIZE)])


class ChunkChecksummer:
    """Feed bytes in pieces of any size; get the per-block sums and the chunk checksum."""

    def __init__(self, block_size: int = BLOCK_SIZE):
        self.block_size = block_size
        self.blocks: list[int] = []
        self.length = 0
        self._partial = bytearray()

    def update(self, data: bytes | memoryview) -> None:
        self.length += len(data)
        view = memoryview(data)
        if self._partial:
            need = self.block_size - len(self._partial)
            self._partial += view[:need]
            view = view[need:]
            if len(self._partial) < self.block_size:
                return
            self.blocks.append(block_checksum(self._partial))
            self._partial.clear()
        full = len(view) - len(view) % self.block_size
        for off in range(0, full, self.block_size):
            self.blocks.append(block_checksum(view[off:off + self.block_size]))
        self._partial += view[full:]

    def add_blocks(self, sums: list[int] | tuple[int, ...], n: int) -> None:
        """Account for n bytes, starting at a block boundary, whose block sums the caller has
        already computed or verified (so they are not hashed again). A short last block ends
        the stream."""
        if self._partial or self.length % self.block_size:
            raise ValueError("blocks added after a partial block")
        if len(sums) != -(-n // self.block_size):
            raise ValueError(f"{len(sums)} block sums for {n} bytes")
        self.blocks.extend(sums)
        self.length += n

    def finish(self) -> int:
        """Close the last partial block; return the chunk checksum. Call once."""
        if self._partial:
            self.blocks.append(block_checksum(self._partial))
            self._partial.clear()
        return chunk_checksum(self.blocks)
