"""Appending a chunk's bytes to its new file without the page cache (O_DIRECT) where it can.

A chunkserver writes every byte it receives once and fsyncs it before the write is
acknowledged; it rarely reads a chunk back soon (a get of a fresh file reads one replica of
three). Through the page cache each write is a copy into freshly allocated cache pages: on this
project's VMs, whose free memory is handed back to the host, that copy faulted on nearly every
page and was 61–77 % of a chunkserver's CPU during a put (perf, copy_folio_from_iter_atomic).
With O_DIRECT the bytes go from one reused, page-aligned staging buffer to the disk: one copy
into memory that stays mapped, and the cache is left to the chunks people read.

O_DIRECT wants the buffer, the file offset and the length aligned (4 KiB covers every common
device), so bytes are staged until a whole buffer is full; the tail is written padded to the
alignment and the file then truncated to its length. Where the file system refuses O_DIRECT
(tmpfs before Linux 6.6, some FUSE file systems) the open or a write fails with EINVAL and the
writer goes on through the page cache from where the direct writes stopped. Durability is
unchanged: the caller still fsyncs the file (its size, and the disk's write cache) before
acknowledging.
"""
from __future__ import annotations

import errno
import mmap
import os

from gfs.fsutil import pwrite_all

ALIGN = 4096                 # of the buffer, the offsets and the lengths of direct writes
STAGE_BYTES = 1 << 20        # bytes gathered before one direct write


class ChunkFileAppender:
    """Appends to the new, empty file open as `fd` (at `path`): through O_DIRECT from a staging
    buffer while the file system takes it, through `fd` (the page cache) otherwise. `finish`
    before the caller fsyncs `fd`; `close` in any case (`fd` stays the caller's)."""

    def __init__(self, fd: int, path: str, direct: bool = True):
        self.fd = fd
        self._on_disk = 0                 # bytes written to the file
        self._staged = 0                  # bytes after those, in the stage
        self._direct_fd = -1
        self._stage: mmap.mmap | None = None
        self.direct = False       # every byte so far went around the page cache
        if direct:
            try:
                self._direct_fd = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
            except OSError as err:
                if err.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    raise
            else:
                self._stage = mmap.mmap(-1, STAGE_BYTES)   # page-aligned, reused
                self.direct = True

    def write(self, data: memoryview) -> None:
        at, n = 0, len(data)
        while at < n and self._direct_fd >= 0:
            take = min(n - at, STAGE_BYTES - self._staged)
            self._stage[self._staged:self._staged + take] = data[at:at + take]
            self._staged += take
            at += take
            if self._staged == STAGE_BYTES:
                self._write_stage(STAGE_BYTES)
        if at < n:                                  # through the page cache
            pwrite_all(self.fd, data[at:], self._on_disk)
            self._on_disk += n - at

    def finish(self) -> None:
        """Write what is staged: padded to the alignment, the file then cut to its length."""
        if self._direct_fd >= 0 and self._staged:
            padded = -(-self._staged // ALIGN) * ALIGN
            self._stage[self._staged:padded] = bytes(padded - self._staged)
            self._write_stage(padded)
            os.ftruncate(self.fd, self._on_disk)

    def _write_stage(self, nbytes: int) -> None:
        """The stage's first `nbytes` (its bytes, padded) to the file with one direct write;
        on EINVAL (refused by the file system) its bytes through the page cache instead, and
        every later write too."""
        view = memoryview(self._stage)
        try:
            pwrite_all(self._direct_fd, view[:nbytes], self._on_disk)
        except OSError as err:
            if err.errno != errno.EINVAL:
                raise
            pwrite_all(self.fd, view[:self._staged], self._on_disk)
            self._close_direct()
            self.direct = False
        finally:
            view.release()
        self._on_disk += self._staged
        self._staged = 0

    def _close_direct(self) -> None:
        if self._direct_fd >= 0:
            os.close(self._direct_fd)
            self._direct_fd = -1

    def close(self) -> None:
        self._close_direct()
        if self._stage is not None:
            try:
                self._stage.close()
            except BufferError:   # a failed write's traceback still views it: freed with it
                pass
            self._stage = None
