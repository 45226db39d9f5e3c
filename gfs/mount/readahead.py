"""Read-ahead of one open file: the blocks ahead of a sequential reader stream into the mount's
block cache, the way `gfs get` streams a file (several bulk reads in parallel), but bounded.

A `Prefetcher` keeps a window of blocks ahead of the reader in flight or cached: up to
`streams` bulk reads at once, each of `segment` blocks. A stream that finishes its segment
takes the next one at once (it does not wait for the program's next read), as long as the
segment starts inside the window; so a fast network fills the window and then idles, and the
reader's progress (`advance`) opens the window again. Memory: at most the window (plus the
segment being received) is fetched ahead of the reader, and the window is a fraction of the
cache. `stop` (the reader seeked away, or closed the file) ends every stream at its next block:
the bulk connection is closed mid-chunk, nothing more arrives.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Executor
from typing import BinaryIO, Callable

from gfs.mount.blockcache import BlockCache

log = logging.getLogger("gfs.mount")

# Fetches bytes [start, start+length) of the file into a file-like sink, in order.
RangeFetch = Callable[[int, int, BinaryIO], None]


class Cancelled(Exception):
    """The read-ahead this stream belonged to was stopped: abandon the download."""


class Prefetcher:
    # Measured on 2 cores (1 GiB, cold, 3 chunkservers): 2 streams of 32 MiB deliver
    # 1.5-1.6 GB/s to a plain client, 4 of 8 MiB 1.0-1.2 (each bulk read opens the chunk
    # anew, and more streams only contend for the same cores).
    SEGMENT = 32               # blocks per bulk read
    STREAMS = 2                # bulk reads of one reader in flight at once

    def __init__(self, cache: BlockCache, key: tuple, file_size: int, fetch: RangeFetch,
                 pool: Executor, window: int, *, segment: int = SEGMENT,
                 streams: int = STREAMS):
        self.cache, self.key, self.size = cache, key, file_size
        self._fetch, self._pool = fetch, pool
        self.window, self.segment, self.streams = window, max(1, segment), max(1, streams)
        self._last = (file_size - 1) // cache.block_size if file_size else -1
        self._cond = threading.Condition()
        self._reader = 0              # the block the reader is at
        self._next = 0                # the first block not yet handed to a stream
        self._gen = 0                 # bumped by stop(): streams of an older one end
        self._running = 0             # streams (pool tasks) of this reader
        self._flight: dict[int, int] = {}     # first block -> end block of segments in flight
        self.requests = 0             # bulk reads started (for tests and traces)

    # --- the reader's side ------------------------------------------------------------------

    def advance(self, block: int) -> None:
        """The reader reads sequentially at `block`: keep the window from there streaming."""
        with self._cond:
            self._reader = max(self._reader, block)
            self._next = max(self._next, self._reader)
            while self._running < self.streams and self._segment_ahead():
                self._running += 1
                # Handed out here, not by the stream once it runs: a reader of the segment's
                # blocks waits for it from now on instead of fetching them itself.
                self._pool.submit(self._stream, self._gen, self._hand_out())

    def stop(self) -> None:
        """Forget the read-ahead: segments not started are dropped, running ones end at their
        next block (their connection closed). A later `advance` starts again."""
        with self._cond:
            self._gen += 1
            self._next = self._reader = 0
            self._flight.clear()
            self._cond.notify_all()

    def covers(self, block: int) -> bool:
        """Is `block` between the reader and the end of what is streaming in? A read there goes
        on with the sequential read (the kernel's requests arrive out of order)."""
        with self._cond:
            return self._reader <= block < self._next

    def fetching(self, first: int, last: int) -> bool:
        """Is any of blocks first..last in a segment on its way?"""
        with self._cond:
            return any(a <= last and first < b for a, b in self._flight.items())

    def wait(self, first: int, last: int, timeout: float = 60.0) -> None:
        """Until blocks first..last are cached, or no segment on its way brings them."""
        with self._cond:
            self._cond.wait_for(lambda: self._arrived_or_idle(first, last), timeout)

    @property
    def ahead(self) -> int:
        """Blocks handed to streams beyond the reader's block (the read-ahead's reach)."""
        with self._cond:
            return max(0, self._next - self._reader)

    @property
    def running(self) -> int:
        with self._cond:
            return self._running

    # --- the streams' side ------------------------------------------------------------------

    def _arrived_or_idle(self, first: int, last: int) -> bool:
        if not any(a <= last and first < b for a, b in self._flight.items()):
            return True
        return all(self.cache.has(self.key, i) for i in range(first, last + 1))

    def _segment_ahead(self) -> bool:
        """Is there a block to fetch inside the window (skipping cached ones)? Under the lock."""
        limit = min(self._last, self._reader + self.window - 1)
        while self._next <= limit and self.cache.has(self.key, self._next):
            self._next += 1
        return self._next <= limit

    def _take(self, gen: int) -> tuple[int, int] | None:
        """The next segment [first, end) for a stream of generation `gen`, or None (stopped, or
        the window is full: the stream ends; the reader's next advance starts one again)."""
        with self._cond:
            if gen != self._gen or not self._segment_ahead():
                self._running -= 1
                self._cond.notify_all()
                return None
            return self._hand_out()

    def _hand_out(self) -> tuple[int, int]:
        """The segment from the next block to fetch (there is one: `_segment_ahead`), marked
        in flight. Under the lock."""
        first = self._next
        end = min(first + self.segment, self._last + 1, self._reader + self.window)
        self._next = end
        self._flight[first] = end
        self.requests += 1
        return first, end

    def _stream(self, gen: int, segment: tuple[int, int] | None) -> None:
        while segment is not None:
            first, end = segment
            bs = self.cache.block_size
            writer = BlockWriter(self.cache, self.key, first, self.size,
                                 on_block=lambda: self._arrived(gen))
            try:
                if gen == self._gen:          # (a stopped reader's queued segment: dropped)
                    lo = first * bs
                    self._fetch(lo, min(end * bs, self.size) - lo, writer)
            except Cancelled:
                pass
            except Exception as err:          # the reader fetches these blocks itself, and
                # reports the error if it fails there too
                log.info("read-ahead of blocks %d..%d stopped: %s", first, end - 1, err)
            finally:
                with self._cond:
                    if gen == self._gen:
                        self._flight.pop(first, None)
                    self._cond.notify_all()
            segment = self._take(gen)

    def _arrived(self, gen: int) -> None:
        """A block was cached: wake waiting readers; a stopped stream ends here."""
        with self._cond:
            self._cond.notify_all()
            if gen != self._gen:
                raise Cancelled()


class BlockWriter:
    """A file-like sink for `Client.download` that cuts the bytes it is given into the cache's
    blocks as they arrive. A piece that is exactly one whole block of a read-only buffer of its
    own (a verified span of the bulk protocol, or a gRPC response's bytes: nothing writes to
    either once it is handed over) is cached as it is, without a copy. Other pieces are
    gathered into a reused buffer and each block copied out of it once it is whole (each copy
    into a fresh megabyte costs the process 256 page faults, so pieces are not collected and
    sliced). Only whole blocks (or the file's last, short one) are cached: the part of a block
    a failed download leaves behind is dropped. `on_block` is called after each block is
    cached; what it raises ends the download."""

    def __init__(self, cache: BlockCache, key: tuple, first: int, file_size: int,
                 on_block: Callable[[], None] | None = None):
        self.cache, self.key, self.index = cache, key, first
        self._on_block = on_block
        self._buf: bytearray | None = None      # allocated for the first piece not kept whole
        self._fill = 0
        self._size = file_size
        self._want = self._block_length()
        self.kept = 0                           # blocks cached without a copy (for tests)

    def _block_length(self) -> int:
        bs = self.cache.block_size
        return max(0, min(bs, self._size - self.index * bs))

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        while view:
            n = min(self._want - self._fill, len(view))
            if n <= 0:
                raise ValueError("more bytes than the file holds")
            if self._fill == 0 and len(view) == self._want and _owns_whole_buffer(view):
                self.kept += 1
                self._cached(view)
                break
            if self._buf is None:
                self._buf = bytearray(self.cache.block_size)
            self._buf[self._fill:self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == self._want:
                self._cached(bytes(memoryview(self._buf)[:self._fill]))
        return len(data)

    def _cached(self, block: bytes | memoryview) -> None:
        self.cache.put(self.key, self.index, block)
        self.index, self._fill = self.index + 1, 0
        self._want = self._block_length()
        if self._on_block is not None:
            self._on_block()

    def flush(self) -> None:
        pass


def _owns_whole_buffer(view: memoryview) -> bool:
    """Is `view` read-only and all of the buffer under it (so keeping it keeps nothing more)?"""
    owner = view.obj
    return view.readonly and isinstance(owner, (bytes, bytearray)) and len(owner) == view.nbytes
