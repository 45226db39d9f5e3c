"""The space policy shared by masters and chunkservers: the repair reserve.

A chunkserver keeps the last REPAIR_RESERVE of its capacity (rounded down to whole checksum
blocks) for repair and balancing copies (`CopyChunk`): new chunk writes are refused once only the
reserve is left, so a cluster that new writes have filled can still restore redundancy. Both
sides compute the reserve from the capacity with `repair_reserve`, so the master's placement
(which leaves the reserve out for new chunks, counts it for repair copies) and the chunkserver's
check always agree; nothing about it travels over the wire.
"""
from __future__ import annotations

from gfs.checksum import BLOCK_SIZE

REPAIR_RESERVE = 0.02          # of each chunkserver's capacity


def repair_reserve(capacity_bytes: int) -> int:
    """Bytes of a chunkserver's capacity that only repair copies may use."""
    reserve = int(capacity_bytes * REPAIR_RESERVE)
    return reserve - reserve % BLOCK_SIZE
