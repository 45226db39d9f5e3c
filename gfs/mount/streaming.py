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
before (reads of the file being written do not give the stream up: bytes they need that are
not in the spool are put back first, below). So
the stream is only ever a head start: the spool stays the source of truth.

Bytes appended while the stream runs wait in memory (`_Held`, within a mount-wide
`hold_budget`) rather than in the spool, until their chunk is durable; they are written to the
spool whenever it must be whole. Bytes of a chunk the stream made durable (fsync'd on every
replica) are dropped from the spool
(a hole punched, `GrowingSpool.dropped`): a page the kernel has not written to the local disk
yet never is, so a streamed file costs the local disk nothing beside the chunkservers' writes
(with the spool on the chunkservers' disk a 1 GiB `dd` otherwise wrote 4 GiB instead of 3).
Whatever needs the spool whole again — a write out of order, a truncate, a read of a dropped
range, the put failing, or more writes after the stream committed — first reads the dropped
chunks back from their replicas (`keep_bytes`: the capability AddChunk gave the upload's
creator, every block verified), and from then on nothing more is dropped. If that read-back
fails the bytes are gone from this handle: the operation fails with EIO and nothing is put
(the file keeps its last committed version).
"""
from __future__ import annotations

import bisect
import logging
import os
import threading
import time
from concurrent.futures import Future
from dataclasses import replace
from typing import Iterator

from gfs.client import ChunkInfo, ChunkPieces, Client, FileInfo, UploadSource
from gfs.errors import DataLoss, GfsError, NotFound, Unauthenticated
from gfs.fsutil import punch_hole, pwrite_all
from gfs.transfer import PIECE_SIZE

log = logging.getLogger("gfs.mount")

STREAM_AFTER = 8 << 20         # bytes written in order before a new file starts streaming
STREAMS_AT_ONCE = 4            # files streamed at once, mount-wide (others: put at close)
HOLD_WAIT_S = 30.0             # longest a writer waits for its held bytes to become durable
_streams = threading.BoundedSemaphore(STREAMS_AT_ONCE)


class HoldBudget:
    """Bytes all streamed files may hold in memory at once (`set_hold_budget`: the mount gives
    half its --cache-size); beyond it a writer waits for a chunk to be durable, or its appends
    go to the spool (`GrowingSpool.hold`)."""

    def __init__(self, total: int):
        self.total, self.used = total, 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        with self._lock:
            if self.used + n > self.total:
                return False
            self.used += n
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self.used -= n


hold_budget = HoldBudget(64 << 20)


def set_hold_budget(total: int) -> None:
    hold_budget.total = total


class _Held:
    """Bytes a streamed file's writer appended that are not durable yet, kept in memory instead
    of the spool: in-order (offset, bytes) pieces, counted against the mount's `budget`. Memory
    the process reuses from one piece to the next, where spool pages are fresh page cache for
    every byte."""

    def __init__(self, budget: HoldBudget):
        self.pieces: list[tuple[int, bytes]] = []
        self.bytes = 0
        self._budget = budget

    def add(self, start: int, data) -> bool:
        """Hold a copy of `data` (False, nothing copied: the budget is spent)."""
        if not self._budget.take(len(data)):
            return False
        self.pieces.append((start, bytes(data)))
        self.bytes += len(data)
        return True

    def overlaps(self, lo: int, hi: int) -> bool:
        return any(s < hi and lo < s + len(p) for s, p in self.pieces)

    def read(self, pos: int, n: int, spool_read) -> bytes:
        """Bytes [pos, pos+n): held pieces where held, the spool elsewhere."""
        end, out = pos + n, []
        i = max(0, bisect.bisect_right(self.pieces, pos, key=lambda piece: piece[0]) - 1)
        while pos < end:
            while i < len(self.pieces) and self.pieces[i][0] + len(self.pieces[i][1]) <= pos:
                i += 1
            if i < len(self.pieces) and self.pieces[i][0] <= pos:
                start, piece = self.pieces[i]
                at = pos - start
                take = min(end - pos, len(piece) - at)
                out.append(piece if at == 0 and take == len(piece) else piece[at:at + take])
            else:
                take = min(end, self.pieces[i][0] if i < len(self.pieces) else end) - pos
                out.append(spool_read(pos, take))
            pos += take
        return out[0] if len(out) == 1 else b"".join(out)

    def spill(self, fd: int, lo: int, hi: int, inside_too: bool) -> None:
        """Write to the spool, and forget, the pieces overlapping [lo, hi) that reach outside
        it (`inside_too`: all of them). A write that fails (a full disk) keeps that piece and
        the ones after it."""
        kept, done = [], 0
        try:
            for s, p in self.pieces:
                if s < hi and lo < s + len(p) and (inside_too or s < lo or s + len(p) > hi):
                    pwrite_all(fd, p, s)
                else:
                    kept.append((s, p))
                done += 1
        finally:
            self._keep_only(kept + self.pieces[done:])

    def discard(self, lo: int, hi: int) -> None:
        """Forget the pieces inside [lo, hi) (durable there, or not wanted any more)."""
        self._keep_only([(s, p) for s, p in self.pieces if not (lo <= s and s + len(p) <= hi)])

    def _keep_only(self, pieces: list[tuple[int, bytes]]) -> None:
        left = sum(len(p) for _, p in pieces)
        self._budget.give(self.bytes - left)
        self.pieces, self.bytes = pieces, left


class Abandoned(Exception):
    """The file stopped being written in order: the background put must not commit."""


class GrowingSpool(UploadSource):
    """The spool of a file being appended to, as `Client.put` reads it: each chunk's pieces are
    handed over as the writer writes them (`wrote`), and the source ends at `finish`."""

    def __init__(self, fd: int, client: Client, path: str):
        self._fd, self._client, self._path = fd, client, path
        self._inode = 0                # of the upload, once a chunk was declared durable
        self._cond = threading.Condition()
        self._end = 0                  # bytes written in order so far
        self._finished = False
        self._abandoned = False
        self.seekable, self.size = True, -1       # read by offset; size unknown: never inline
        self._dropped: dict[int, ChunkInfo] = {}  # spool offset -> the durable chunk there
        self._keep = False             # the spool must stay whole: nothing more is dropped
        self._discarding = False       # the spool is about to be closed: nothing to keep
        self._restoring = threading.Lock()
        self.lost: GfsError | None = None         # dropped bytes that could not be read back
        self._held = _Held(hold_budget)   # appended bytes not durable yet, not in the spool
        self._chunk_size = 0               # the put's, once it asked for its first chunk
        self._put_over = False             # the put returned or failed: nothing more is durable
        self.waited = 0.0                  # seconds the writer waited for durable chunks

    # --- dropped bytes ------------------------------------------------------------------------

    def dropped(self, start: int, chunk: ChunkInfo, inode: int) -> None:
        """Put's side: the chunk at spool offset `start` of upload `inode` is durable; free
        its bytes here — only if it came with a capability to read it back (masters older
        than this client, and the insecure mode, give none: the spool then keeps it)."""
        end = start + chunk.length
        with self._cond:
            self._cond.notify_all()          # a writer may wait for the memory freed here
            self._inode = inode
            drop = bool(chunk.capability) and not self._keep
            try:
                # pieces reaching into other chunks go to the spool
                self._held.spill(self._fd, start, end, inside_too=False)
                if drop and punch_hole(self._fd, start, chunk.length):
                    self._dropped[start] = chunk
                    self._held.discard(start, end)
                else:
                    self._held.spill(self._fd, start, end, inside_too=True)
            except OSError as err:       # the spool's disk is full: the bytes stay in memory
                log.warning("spool of %s: %s (its bytes stay in memory)", self._path, err)

    @property
    def has_dropped(self) -> bool:
        return bool(self._dropped)

    def read_present(self, out: memoryview, offset: int) -> int | None:
        """Read the spool's bytes from `offset` into `out` if every one of them is there
        (None, nothing read: some are dropped or held in memory). Checked and read under the
        condition, so a chunk declared durable meanwhile cannot be dropped in between."""
        with self._cond:
            end = offset + len(out)
            if self._held.overlaps(offset, end) or any(
                    start < end and offset < start + c.length
                    for start, c in self._dropped.items()):
                return None
            return os.preadv(self._fd, [out], offset)

    def hold(self, offset: int, data) -> bool:
        """The writer's side: keep a copy of an in-order append in memory instead of writing
        it to the spool (False, nothing copied: out of order, or the spool must stay whole).
        When the mount's hold budget is spent and this file holds bytes of a chunk written
        whole, the writer waits for that chunk to be durable (its bytes then free their
        memory) rather than write to the spool: a program writes no faster than the file is
        stored, and the spool, whose every page is a fresh page of the page cache, stays
        empty. Otherwise (or after HOLD_WAIT_S) False: the bytes go to the spool."""
        with self._cond:
            deadline = 0.0
            while not (self._keep or self._discarding or self._abandoned
                       or offset != self._end):
                if self._held.add(offset, data):
                    return True
                if not self._room_coming():
                    return False
                now = time.monotonic()
                deadline = deadline or now + HOLD_WAIT_S
                if now >= deadline:
                    log.warning("spool of %s: held bytes not durable after %.0f s; writing "
                                "to the spool", self._path, HOLD_WAIT_S)
                    return False
                self._cond.wait(deadline - now)
                self.waited += time.monotonic() - now
            return False

    def _room_coming(self) -> bool:
        """Will memory this file holds be freed without the writer writing more? Yes if its
        first held bytes are in a chunk written whole and the put goes on: the put takes the
        chunks in order and needs nothing more from the writer for that one, nor for those
        before it. (Under the condition.)"""
        if self._put_over or not self._chunk_size or not self._held.pieces:
            return False
        first = self._held.pieces[0][0]
        return (first // self._chunk_size + 1) * self._chunk_size <= self._end

    def keep_bytes(self) -> None:
        """Make the spool whole again (read the dropped chunks back) and drop nothing more.
        Raises DataLoss if a chunk could not be read back (and every call after that)."""
        with self._restoring:
            with self._cond:
                self._keep = True
                self._held.spill(self._fd, 0, 1 << 62, inside_too=True)
                todo = sorted(self._dropped.items())
            if self.lost is not None:
                raise self.lost
            renewed: dict[tuple[int, int], ChunkInfo] | None = None
            for start, chunk in todo:
                try:
                    try:
                        self._client.read_chunk(chunk, 0, chunk.length,
                                                _WriteAt(self._fd, start))
                    except Unauthenticated:      # its capability expired: ask for new ones
                        if renewed is None:
                            renewed = self._renewed()
                        chunk = self._fresh(chunk, renewed)
                        self._client.read_chunk(chunk, 0, chunk.length,
                                                _WriteAt(self._fd, start))
                except GfsError as err:
                    self.lost = DataLoss(f"bytes of the file being written could not be read "
                                         f"back from chunk {chunk.handle}: {err}")
                    raise self.lost from None
                with self._cond:
                    del self._dropped[start]
            if todo:
                log.info("read %d dropped chunk(s) back into the spool", len(todo))

    def _renewed(self) -> dict[tuple[int, int], ChunkInfo]:
        """The upload's chunks with fresh read capabilities, by (handle, version): from the
        upload while it is pending, from the file once committed."""
        try:
            found = self._client.upload_chunks(self._inode)
        except NotFound:                         # committed since (or aborted: then not found)
            found = self._client.stat(self._path, for_read=True).chunks
        return {(c.handle, c.version): c for c in found}

    def _fresh(self, chunk: ChunkInfo, renewed: dict[tuple[int, int], ChunkInfo]) -> ChunkInfo:
        """`chunk` with its renewed capability (DataLoss if the file no longer has it)."""
        c = renewed.get((chunk.handle, chunk.version))
        if c is None:
            raise DataLoss(f"chunk {chunk.handle} of {self._path} is no longer there")
        return replace(chunk, capability=c.capability, replicas=c.replicas or chunk.replicas)

    def before_abort(self) -> None:
        """Put failed: the spool is put whole instead, so it must be whole (unless it is being
        discarded); a failure to read back is kept in `lost`."""
        if not self._discarding:
            try:
                self.keep_bytes()
            except GfsError:
                pass

    # --- the writer's side ----------------------------------------------------------------------

    def wrote(self, end: int) -> None:
        with self._cond:
            self._end = end
            self._cond.notify_all()

    def finish(self) -> None:
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def abandon(self, keep: bool = True) -> None:
        """Stop the stream: its put aborts. `keep`: the spool is used on, so its dropped bytes
        are read back first (while the put's chunks still exist; DataLoss if they cannot be)."""
        try:
            if keep:
                self.keep_bytes()
            else:
                with self._cond:
                    self._discarding = True
                    self._held.discard(0, 1 << 62)
        finally:
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
        with self._cond:
            self._chunk_size = chunk_size
        return _GrowingChunk(self, start, chunk_size)

    def put_ended(self) -> None:
        """Put's side: it returned, failed, or gave a chunk up (then it fails, once it sees
        that: perhaps only after more bytes are written); no chunk becomes durable any more
        that a writer should wait for."""
        with self._cond:
            self._put_over = True
            self._cond.notify_all()

    def _read_at(self, pos: int, n: int) -> bytes:
        if self._abandoned:
            raise Abandoned()
        with self._cond:
            if self._held.bytes:
                return self._held.read(pos, n, lambda at, k: os.pread(self._fd, k, at))
        return os.pread(self._fd, n, pos)


class _WriteAt:
    """A read_chunk sink writing the chunk's bytes into the spool from `pos` on."""

    def __init__(self, fd: int, pos: int):
        self._fd, self._pos = fd, pos

    def __call__(self, piece: memoryview) -> None:
        pwrite_all(self._fd, piece, self._pos)
        self._pos += len(piece)


class _GrowingChunk(ChunkPieces):
    """One chunk of a GrowingSpool: pieces handed over as they are written; read again from the
    spool if the chunk has to be sent again (a failed replica); dropped once durable."""

    def __init__(self, spool: GrowingSpool, start: int, chunk_size: int):
        super().__init__(spool._read_at, None, start, chunk_size)
        self._spool = spool
        self.known_length = chunk_size       # at most; room the placement should find

    def open(self) -> Iterator[bytes]:
        pos, stop = self._start, self._start + self._length
        while pos < stop:
            # at most a piece at once, however far ahead the writer is (a whole chunk's bytes
            # in one read would cost this process and every replica a fresh buffer of its size)
            want = min(stop, pos + PIECE_SIZE)
            end = min(want, self._spool._available(want))
            if end <= pos:
                return                       # the file ended inside this chunk
            yield self._spool._read_at(pos, end - pos)
            pos = end

    def durable(self, chunk: ChunkInfo, inode: int) -> None:
        self._spool.dropped(self._start, chunk, inode)

    def failed(self) -> None:
        self._spool.put_ended()


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
        self.source = GrowingSpool(fd, client, path)
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
                self.source.put_ended()
                _streams.release()       # before the result: the place is free once finished
        except BaseException as err:     # (the spool is uploaded whole instead)
            self._done.set_exception(err)
        else:
            self._done.set_result(info)

    def finish(self) -> FileInfo:
        """The file's bytes are all written: let the put commit; its FileInfo, or its error."""
        self.source.finish()
        return self._done.result()

    def abandon(self, wait: float = 0.0, keep: bool = True) -> None:
        """Give the stream up: its put aborts instead of committing (waited for up to `wait`
        seconds, e.g. before the spool is closed). `keep`: the spool is used on (put whole):
        its dropped bytes are read back first (DataLoss if they cannot be)."""
        try:
            self.source.abandon(keep)
        finally:
            if wait:
                self._thread.join(wait)
