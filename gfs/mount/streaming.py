"""Uploading a file being written through the mount while it is written.

A program writing a new file through the mount (`dd`, `cp`, `rsync`) writes it from the start
to the end. Uploading the spool only at `close` would double the time a large file takes: the
program's writes, then the whole upload. Once a new file's spool holds `STREAM_AFTER` bytes
written strictly in order, a `SpoolStream` starts a `put` of the spool in the background that
reads each chunk as the program writes it (a `GrowingSpool`), so at `close` only the last
bytes are left to send and the commit to make.

The file still appears only at `close` (or `fsync`): the background put commits only after
`finish()`. A write anywhere but at the end, or a truncate, `abandon()`s the stream (its put
aborts, its chunks are garbage) and the file is uploaded whole from the spool at close, as
before (reads of the file being written leave the spool, and the stream, as they are). So
the stream is only ever a head start: the spool stays the source of truth.
"""
from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future
from typing import Iterator

from gfs.client import ChunkPieces, Client, FileInfo, UploadSource
from gfs.transfer import PIECE_SIZE

log = logging.getLogger("gfs.mount")

STREAM_AFTER = 8 << 20         # bytes written in order before a new file starts streaming
STREAMS_AT_ONCE = 4            # files streamed at once, mount-wide (others: put at close)
_streams = threading.BoundedSemaphore(STREAMS_AT_ONCE)


class Abandoned(Exception):
    """The file stopped being written in order: the background put must not commit."""


class GrowingSpool(UploadSource):
    """The spool of a file being appended to, as `Client.put` reads it: each chunk's pieces are
    handed over as the writer writes them (`wrote`), and the source ends at `finish`."""

    def __init__(self, fd: int):
        self._fd = fd
        self._cond = threading.Condition()
        self._end = 0                  # bytes written in order so far
        self._finished = False
        self._abandoned = False
        self.seekable, self.size = True, -1       # read by offset; size unknown: never inline

    # --- the writer's side ----------------------------------------------------------------------

    def wrote(self, end: int) -> None:
        with self._cond:
            self._end = end
            self._cond.notify_all()

    def finish(self) -> None:
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def abandon(self) -> None:
        with self._cond:
            self._abandoned = True
            self._cond.notify_all()

    # --- put's side -----------------------------------------------------------------------------

    def _available(self, upto: int) -> int:
        """Wait until bytes up to `upto` are written or the file is finished; the end of what
        is written then. Raises Abandoned once the stream was given up."""
        with self._cond:
            self._cond.wait_for(lambda: self._abandoned or self._finished or self._end >= upto)
            if self._abandoned:
                raise Abandoned()
            return self._end

    def chunk(self, index: int, chunk_size: int) -> ChunkPieces | None:
        start = index * chunk_size
        if self._available(start + 1) <= start:
            return None
        return _GrowingChunk(self, start, chunk_size)

    def _read_at(self, pos: int, n: int) -> bytes:
        if self._abandoned:
            raise Abandoned()
        return os.pread(self._fd, n, pos)


class _GrowingChunk(ChunkPieces):
    """One chunk of a GrowingSpool: pieces handed over as they are written; read again from the
    spool if the chunk has to be sent again (a failed replica)."""

    def __init__(self, spool: GrowingSpool, start: int, chunk_size: int):
        super().__init__(spool._read_at, None, start, chunk_size)
        self._spool = spool
        self.known_length = chunk_size       # at most; room the placement should find

    def open(self) -> Iterator[bytes]:
        pos, stop = self._start, self._start + self._length
        while pos < stop:
            end = min(stop, self._spool._available(min(stop, pos + PIECE_SIZE)))
            if end <= pos:
                return                       # the file ended inside this chunk
            yield self._spool._read_at(pos, end - pos)
            pos = end


class SpoolStream:
    """A background `put` of a GrowingSpool to `path`: `finish()` lets it commit."""

    @classmethod
    def start(cls, client: Client, fd: int, path: str, mode: int) -> "SpoolStream | None":
        """A stream of the spool `fd`, or None when STREAMS_AT_ONCE files stream already."""
        if not _streams.acquire(blocking=False):
            return None
        try:
            return cls(client, fd, path, mode)
        except BaseException:
            _streams.release()
            raise

    def __init__(self, client: Client, fd: int, path: str, mode: int):
        self.source = GrowingSpool(fd)
        self.path = path
        self._done: Future = Future()
        self._thread = threading.Thread(target=self._run, args=(client, mode), daemon=True,
                                        name="gfs-mount-stream")
        self._thread.start()

    def _run(self, client: Client, mode: int) -> None:
        try:
            try:
                info = client.put(self.source, self.path, overwrite=True, mode=mode & 0o7777)
            finally:
                _streams.release()       # before the result: the place is free once finished
        except BaseException as err:     # (the spool is uploaded whole instead)
            self._done.set_exception(err)
        else:
            self._done.set_result(info)

    def finish(self) -> FileInfo:
        """The file's bytes are all written: let the put commit; its FileInfo, or its error."""
        self.source.finish()
        return self._done.result()

    def abandon(self, wait: float = 0.0) -> None:
        """Give the stream up: its put aborts instead of committing (waited for up to `wait`
        seconds, e.g. before the spool is closed)."""
        self.source.abandon()
        if wait:
            self._thread.join(wait)
