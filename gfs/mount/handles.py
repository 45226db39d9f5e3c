"""What an open file of the mount is.

A `ReadHandle` reads one version of a file — the one stat'ed at open — through the mount's block
cache. A `WriteHandle` spools the file's new content to an unlinked local temporary file and
`put`s it whole when the program flushes, fsyncs or closes it: the file appears atomically, as a
`gfs put` does, and a failed upload leaves the previous version untouched.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from concurrent.futures import Executor

from gfs.client import Client, FileInfo
from gfs.errors import DataLoss
from gfs.mount.blockcache import BlockCache
from gfs.mount.readahead import Prefetcher
from gfs.mount.streaming import STREAM_AFTER, GrowingSpool, SpoolStream

log = logging.getLogger("gfs.mount")


def version_key(info: FileInfo) -> tuple:
    """Changes whenever the file's bytes may have: replaced (inode), rewritten (mtime, chunk
    versions)."""
    return (info.inode, info.mtime_ms, info.size,
            tuple((c.handle, c.version) for c in info.chunks))


class Readable:
    """What an open file reads with: `read_into` the kernel's buffer (one copy), or `read`."""

    def read_into(self, out: memoryview, offset: int) -> int:
        """Copy the file's bytes from `offset` into `out`; returns how many (short at the end)."""
        raise NotImplementedError

    def read(self, size: int, offset: int) -> bytes:
        out = bytearray(size)
        del out[self.read_into(memoryview(out), offset):]
        return bytes(out)


class ReadHandle(Readable):
    """Reads of one open file through the mount's block cache. Random readers get exactly the
    blocks they touch. Once a reader is seen reading on from where it left off, the blocks
    ahead of it stream into the cache in the background (a `Prefetcher`: several bulk reads in
    parallel, up to a window ahead), and the reader waits only for its own blocks, each
    handed over as soon as it has arrived. Seeking away stops the read-ahead (its bulk reads
    end at their next block); so does closing the file."""

    WINDOW = 64                # blocks fetched ahead of a sequential reader

    def __init__(self, client: Client, info: FileInfo, cache: BlockCache,
                 pool: Executor | None = None, reorder: int = 8):
        self.client, self.info, self.cache = client, info, cache
        self.key = version_key(info)
        # The kernel has up to `reorder` blocks of one sequential read in flight (and asks for
        # the next window before the last is answered), answered by several threads: they may
        # arrive two windows out of order and are still sequential.
        self._slack = 2 * max(1, reorder) * cache.block_size
        self._next = 0             # where a sequential reader will read next
        self._lock = threading.Lock()
        # Never fetch ahead more than a quarter of the cache: it would evict itself.
        window = min(self.WINDOW, max(0, cache.capacity // cache.block_size // 4))
        self.prefetcher = Prefetcher(cache, self.key, info.size, self._download, pool, window) \
            if pool is not None and window else None

    def read_into(self, out: memoryview, offset: int) -> int:
        size = len(out)
        bs = self.cache.block_size
        first, last = offset // bs, max(offset, offset + size - 1) // bs
        ahead = self.prefetcher
        with self._lock:
            sequential = offset > 0 and (
                self._next - self._slack <= offset <= self._next + self._slack
                or (ahead is not None and ahead.covers(first)))
            self._next = max(self._next, offset + size) if sequential else offset + size
        if ahead is not None:
            if sequential:
                ahead.advance(first)           # its own block too: fetched once, by a stream
            elif ahead.ahead:
                ahead.stop()                   # seeked away from the blocks streaming in
            if ahead.fetching(first, last):
                ahead.wait(first, last)
        return self.cache.read_into(self.key, self.info.size, offset, out, self._fetch)

    def _fetch(self, start: int, length: int) -> bytes:
        return self.client.read_at(self.info, start, length)

    def _download(self, start: int, length: int, sink) -> None:
        self.client.download(self.info, sink, offset=start, length=length, parallel=1)

    def close(self) -> None:
        if self.prefetcher is not None:
            self.prefetcher.stop()


class WriteHandle(Readable):
    """A file open for writing: its new content in a spool, put whole at flush/fsync/close. A
    new (or truncated) file written strictly in order is streamed while it is written (pass
    `stream_with`, see gfs/mount/streaming.py): the spool stays the source of truth, the stream
    is a head start that anything but an in-order append gives up."""

    def __init__(self, path: str, mode: int, spool_dir: str | None = None,
                 stream_with: Client | None = None, stream_after: int = STREAM_AFTER):
        self.path, self.mode = path, mode
        self.mtime_ms: int | None = None       # set by utimens while open: applied after upload
        self.dirty = True                      # a new or truncated file is written at close
        self.failed = False                    # an upload failed and the program was told
        self._file = tempfile.TemporaryFile(prefix="gfs-mount-", dir=spool_dir)
        self.lock = threading.Lock()
        self._client, self._stream_after = stream_with, stream_after
        self._appended = 0 if stream_with is not None else -1   # in-order end; -1: not streaming
        self._stream: SpoolStream | None = None
        # A committed stream's spool with bytes dropped (streaming.py): read back before the
        # spool is read, written or put again.
        self._holes: GrowingSpool | None = None

    @property
    def size(self) -> int:
        return os.fstat(self._file.fileno()).st_size

    @property
    def streaming(self) -> bool:
        return self._stream is not None

    def load(self, client: Client, info: FileInfo) -> None:
        """Start from the file's current content (an open without O_TRUNC)."""
        self._give_up_stream("")
        client.download(info, self._file)
        self.dirty = False

    def read_into(self, out: memoryview, offset: int) -> int:
        stream = self._stream
        if self._holes is None and stream is not None:
            n = stream.source.read_present(out, offset)      # (not dropped while it reads)
            if n is not None:
                return n
        if self._holes is not None or stream is not None:
            with self.lock:
                self._whole_spool()            # nothing is dropped any more after this
        return os.preadv(self._file.fileno(), [out], offset)    # (a stream reads it too)

    def _whole_spool(self) -> None:
        """Bytes a stream dropped from the spool read back into it (DataLoss if they cannot
        be); the stream, if one runs, goes on but drops nothing more. Under the lock."""
        if self._holes is not None:
            self._holes.keep_bytes()
            self._holes = None
        if self._stream is not None:
            self._stream.source.keep_bytes()

    def write(self, data: bytes, offset: int) -> int:
        with self.lock:
            if self._holes is not None:
                self._whole_spool()
            self.dirty = True
            if offset != self._appended:
                # before the bytes land: giving up reads dropped chunks back into the spool
                self._give_up_stream("a write out of order")
            if self._stream is not None and self._stream.source.hold(offset, data):
                n = len(data)                  # in memory until durable (streaming.py)
                os.ftruncate(self._file.fileno(), offset + n)     # the file's size, sparse
            else:
                n = os.pwrite(self._file.fileno(), data, offset)
            if offset == self._appended:
                self._appended += n
                if self._stream is not None:
                    self._stream.source.wrote(self._appended)
                elif self._appended >= self._stream_after:
                    self._stream = SpoolStream.start(self._client, self._file.fileno(),
                                                     self.path, self.mode)
                    if self._stream is None:
                        self._appended = -1      # enough files stream already: put at close
                    else:
                        log.info("streaming %s while it is written", self.path)
                        self._stream.source.wrote(self._appended)
            return n

    def truncate(self, length: int) -> None:
        with self.lock:
            if self._holes is not None:
                self._whole_spool()
            self.dirty = True
            if length != self._appended:
                self._give_up_stream("a truncate")
            os.ftruncate(self._file.fileno(), length)

    def _give_up_stream(self, why: str, wait: float = 0.0, keep: bool = True) -> None:
        """No (more) streaming for this handle: the spool is put whole (`keep`: its dropped
        bytes read back first). Under the lock."""
        self._appended = -1
        stream, self._stream = self._stream, None
        if stream is not None:
            if why:
                log.info("stopped streaming %s (%s): it is put whole when closed", self.path, why)
            try:
                stream.abandon(wait, keep)
            except DataLoss:
                self._holes = stream.source    # every later use of the spool fails the same
                raise

    def upload(self, client: Client) -> None:
        """Put the spooled content (durable on every replica when this returns)."""
        with self.lock:
            if not self.dirty:
                return
            # (In-order appends after this upload stream again: `dd` closes a duplicate of its
            # output before writing, and that first flush already makes the file, empty.)
            stream, self._stream = self._stream, None
            if stream is None or not self._streamed(stream):
                if stream is not None:      # its put failed: read back already, or now
                    self._holes = stream.source
                self._whole_spool()         # DataLoss: never a spool with holes put
                self._file.seek(0)
                client.put(self._file, self.path, overwrite=True, mode=self.mode & 0o7777)
            elif stream.source.has_dropped:
                self._holes = stream.source
            self.dirty = False
            if self.mtime_ms is not None:
                client.set_attr(self.path, mtime_ms=self.mtime_ms)

    def _streamed(self, stream: SpoolStream) -> bool:
        """Let the stream commit; False if it failed (the caller puts the spool instead, and
        reports the error if that fails too)."""
        try:
            stream.finish()
            log.info("streamed %s: committed (the writer waited %.2f s for its chunks to be "
                     "durable)", self.path, stream.source.waited)
            return True
        except Exception as err:           # noqa: BLE001 (any failure: the whole put decides)
            log.info("streamed upload of %s failed (%s); putting the whole file", self.path, err)
            return False

    def close(self) -> None:
        with self.lock:
            self._give_up_stream("", wait=10.0, keep=False)   # its put stops reading first
            self._holes = None
        self._file.close()
