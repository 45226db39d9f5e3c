"""Appending bytes to a file without the page cache (O_DIRECT) where it can.

Two writers put large amounts of bytes into files they do not read back soon: a chunkserver
storing a chunk (it fsyncs it before the write is acknowledged, and a get of a fresh file reads
one replica of three), and a client downloading a file. Through the page cache each write is a
copy into freshly allocated cache pages: on this project's VMs, whose free memory is handed back
to the host, that copy faulted on nearly every page - 61–77 % of a chunkserver's CPU during a
put (perf, copy_folio_from_iter_atomic), and 2.3–3.8 CPU s per GiB of a `gfs get` to a file
against 0.2 to /dev/null. With O_DIRECT the bytes go from one reused, page-aligned staging
buffer to the disk: one copy into memory that stays mapped, and the cache is left to the files
people read.

O_DIRECT wants the buffer, the file offset and the length aligned (4 KiB covers every common
device), so bytes are staged until a whole buffer is full. Bytes before the first aligned
offset go through the page cache; so does the tail, unless the caller owns the file's end
(`pad_tail`: a chunk file), where it is written padded to the alignment and the file then cut
to its length. Where the file system refuses O_DIRECT (tmpfs before Linux 6.6, some FUSE file
systems) the open or a write fails with EINVAL and the writer goes on through the page cache
from where the direct writes stopped. Durability is the caller's as before: it fsyncs the file
(its size, and the disk's write cache) where it promises durability.
"""
from __future__ import annotations

import errno
import mmap
import os

from gfs.fsutil import pwrite_all

ALIGN = 4096                 # of the buffer, the offsets and the lengths of direct writes
STAGE_BYTES = 1 << 20        # bytes gathered before one direct write


class DirectAppender:
    """Appends to the file open as `fd` (at `path`, which may be `/proc/self/fd/N`) from file
    offset `start` on: through O_DIRECT from a staging buffer while the file system takes it,
    through `fd` (the page cache) otherwise. `finish` when every byte is written (before the
    caller fsyncs `fd`); `close` in any case (`fd` stays the caller's).

    `pad_tail`: the caller owns the file from `start` to its end (a new chunk file): the last
    staged bytes are written padded to the alignment and the file is truncated to its length.
    Otherwise (a range of a file others write too) they go through the page cache."""

    def __init__(self, fd: int, path: str, direct: bool = True, *, start: int = 0,
                 pad_tail: bool = True):
        self.fd = fd
        self._pad_tail = pad_tail
        self._on_disk = start             # the file offset after the bytes written so far
        self._staged = 0                  # bytes after those, in the stage
        self._direct_fd = -1
        self._stage: mmap.mmap | None = None
        self.direct = False       # bytes go around the page cache (all but a head and tail)
        if direct:
            try:
                self._direct_fd = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
            except OSError as err:
                if err.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    raise
            else:
                self._stage = mmap.mmap(-1, STAGE_BYTES)   # page-aligned, reused
                self.direct = True

    @property
    def end(self) -> int:
        """The file offset after every byte handed over so far (staged ones included)."""
        return self._on_disk + self._staged

    def write(self, data: memoryview) -> None:
        at, n = 0, len(data)
        if self._direct_fd >= 0 and not self._staged and self._on_disk % ALIGN:
            at = min(n, ALIGN - self._on_disk % ALIGN)     # up to the first aligned offset
            pwrite_all(self.fd, data[:at], self._on_disk)
            self._on_disk += at
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
        """Write what is staged: padded to the alignment and the file then cut to its length
        (`pad_tail`), or its aligned part direct and the rest through the page cache."""
        if self._direct_fd < 0 or not self._staged:
            return
        if self._pad_tail:
            padded = -(-self._staged // ALIGN) * ALIGN
            self._stage[self._staged:padded] = bytes(padded - self._staged)
            self._write_stage(padded)
            os.ftruncate(self.fd, self._on_disk)
            return
        whole = self._staged - self._staged % ALIGN
        rest = self._staged - whole
        if whole:
            self._staged = whole
            self._write_stage(whole)
        if rest:
            with memoryview(self._stage) as view:
                pwrite_all(self.fd, view[whole:whole + rest], self._on_disk)
            self._on_disk += rest

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
