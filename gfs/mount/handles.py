"""What an open file of the mount is.

A `ReadHandle` reads one version of a file — the one stat'ed at open — through the mount's block
cache. A `WriteHandle` spools the file's new content to an unlinked local temporary file and
`put`s it whole when the program flushes, fsyncs or closes it: the file appears atomically, as a
`gfs put` does, and a failed upload leaves the previous version untouched.
"""
from __future__ import annotations

import os
import tempfile
import threading
from concurrent.futures import Executor, Future
from typing import Callable

from gfs.client import Client, FileInfo
from gfs.mount.blockcache import BlockCache


def version_key(info: FileInfo) -> tuple:
    """Changes whenever the file's bytes may have: replaced (inode), rewritten (mtime, chunk
    versions)."""
    return (info.inode, info.mtime_ms, info.size,
            tuple((c.handle, c.version) for c in info.chunks))


class ReadHandle:
    """Sequential readers get the next blocks fetched ahead in the background (PIECE blocks per
    request, up to WINDOW blocks ahead, on the mount's shared pool), so fetching overlaps with
    the program's reading; random readers get exactly the blocks they touch. A piece's blocks
    are cached one by one as they arrive, and a reader waits for its own blocks, not for the
    whole piece: pieces can be long (fewer requests, longer sequential reads on the
    chunkservers' disks) without delaying the first block."""

    PIECE = 16                 # blocks per background request
    WINDOW = 64                # blocks fetched ahead of a sequential reader

    def __init__(self, client: Client, info: FileInfo, cache: BlockCache,
                 pool: Executor | None = None):
        self.client, self.info, self.cache, self.pool = client, info, cache, pool
        self.key = version_key(info)
        self._next = 0             # where a sequential reader will read next
        self._inflight: dict[int, Future] = {}      # first block of a piece -> its fetch
        # Reentrant: a fetch that is already done runs its done-callback (which takes the lock)
        # at once, in the thread adding it, while that thread holds the lock.
        self._lock = threading.RLock()
        self._arrived = threading.Condition()      # a block was cached, or a piece ended
        # Never fetch ahead more than a quarter of the cache: it would evict itself.
        self._window = min(self.WINDOW, max(0, cache.capacity // cache.block_size // 4))

    def read(self, size: int, offset: int) -> bytes:
        bs = self.cache.block_size
        first, last = offset // bs, max(offset, offset + size - 1) // bs
        with self._lock:
            # The kernel sends its read-ahead requests on several threads, so a sequential
            # reader's requests may arrive a block or two out of order: still sequential.
            sequential = offset > 0 and self._next - 4 * bs <= offset <= self._next + bs
            self._next = max(self._next, offset + size) if sequential else offset + size
            waiting = [f for start, f in self._inflight.items()
                       if start <= last and start + self.PIECE > first]
        if waiting:                # blocks being fetched ahead: wait for them, don't fetch twice
            self._wait_for(first, last, waiting)
        data = self.cache.read(self.key, self.info.size, offset, size, self._fetch)
        if sequential and self.pool is not None and self._window:
            self._ahead(last + 1)
        return data

    def _wait_for(self, first: int, last: int, pieces: list[Future]) -> None:
        """Until blocks first..last are cached or the pieces bringing them have ended."""
        with self._arrived:
            while not all(f.done() for f in pieces) and \
                    not all(self.cache.has(self.key, i) for i in range(first, last + 1)):
                self._arrived.wait(1.0)

    def _notify(self) -> None:
        with self._arrived:
            self._arrived.notify_all()

    def _fetch(self, start: int, length: int) -> bytes:
        return self.client.read_at(self.info, start, length)

    def _ahead(self, from_block: int) -> None:
        bs, end_block = self.cache.block_size, (self.info.size - 1) // self.cache.block_size
        start = from_block - from_block % self.PIECE
        with self._lock:
            while start <= min(end_block, from_block + self._window):
                wanted = [i for i in range(max(start, from_block),
                                           min(start + self.PIECE, end_block + 1))
                          if not self.cache.has(self.key, i)]
                if start not in self._inflight and wanted:     # from the first block missing
                    future = self.pool.submit(self._fetch_piece, wanted[0],
                                              min(start + self.PIECE, end_block + 1) - wanted[0])
                    self._inflight[start] = future
                    future.add_done_callback(lambda _f, s=start: self._done(s))
                start += self.PIECE

    def _fetch_piece(self, start: int, count: int) -> None:
        bs = self.cache.block_size
        lo = start * bs
        blocks = _BlockWriter(self.cache, self.key, start, self.info.size, self._notify)
        self.client.download(self.info, blocks, offset=lo,
                             length=min(count * bs, self.info.size - lo), parallel=1)

    def _done(self, start: int) -> None:
        with self._lock:
            self._inflight.pop(start, None)
        self._notify()

    def close(self) -> None:
        with self._lock:
            pending = list(self._inflight.values())
        for f in pending:
            f.cancel()


class _BlockWriter:
    """A file-like sink for `Client.download` that cuts the bytes it is given into the cache's
    blocks as they arrive: one copy into a reused buffer, one into the cached block, instead of
    collecting a whole piece in memory and slicing it (each copy into a fresh megabyte costs the
    process 256 page faults). Only whole blocks (or the file's last, short one) are cached: the
    part of a block a failed download leaves behind is dropped."""

    def __init__(self, cache: BlockCache, key: tuple, first: int, file_size: int,
                 on_block: Callable[[], None] | None = None):
        self.cache, self.key, self.index = cache, key, first
        self._on_block = on_block
        self._buf = bytearray(cache.block_size)
        self._fill = 0
        self._want = self._block_length(file_size)
        self._size = file_size

    def _block_length(self, file_size: int) -> int:
        bs = len(self._buf)
        return max(0, min(bs, file_size - self.index * bs))

    def write(self, data) -> int:
        view = memoryview(data)
        while view:
            n = min(self._want - self._fill, len(view))
            if n <= 0:
                raise ValueError("more bytes than the file holds")
            self._buf[self._fill:self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == self._want:
                self.cache.put(self.key, self.index, bytes(memoryview(self._buf)[:self._fill]))
                self.index, self._fill = self.index + 1, 0
                if self._on_block is not None:
                    self._on_block()
                self._want = self._block_length(self._size)
        return len(data)

    def flush(self) -> None:
        pass


class WriteHandle:
    def __init__(self, path: str, mode: int, spool_dir: str | None = None):
        self.path, self.mode = path, mode
        self.mtime_ms: int | None = None       # set by utimens while open: applied after upload
        self.dirty = True                      # a new or truncated file is written at close
        self.failed = False                    # an upload failed and the program was told
        self._file = tempfile.TemporaryFile(prefix="gfs-mount-", dir=spool_dir)
        self.lock = threading.Lock()

    @property
    def size(self) -> int:
        return os.fstat(self._file.fileno()).st_size

    def load(self, client: Client, info: FileInfo) -> None:
        """Start from the file's current content (an open without O_TRUNC)."""
        client.download(info, self._file)
        self.dirty = False

    def read(self, size: int, offset: int) -> bytes:
        return os.pread(self._file.fileno(), size, offset)

    def write(self, data: bytes, offset: int) -> int:
        with self.lock:
            self.dirty = True
            return os.pwrite(self._file.fileno(), data, offset)

    def truncate(self, length: int) -> None:
        with self.lock:
            self.dirty = True
            os.ftruncate(self._file.fileno(), length)

    def upload(self, client: Client) -> None:
        """Put the spooled content (durable on every replica when this returns)."""
        with self.lock:
            if not self.dirty:
                return
            self._file.seek(0)
            client.put(self._file, self.path, overwrite=True, mode=self.mode & 0o7777)
            self.dirty = False
            if self.mtime_ms is not None:
                client.set_attr(self.path, mtime_ms=self.mtime_ms)

    def close(self) -> None:
        self._file.close()
