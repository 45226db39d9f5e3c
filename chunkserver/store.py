"""The on-disk chunk store of one chunkserver: a hot tier (raw bytes) and a cold tier (zstd).

Layout (the cold tier's directory is ``root/cold`` unless the store is given another one,
normally on another disk)::

    root/hot/<xx>/<handle:016x>-<version>.chunk    raw chunk bytes
    root/hot/<xx>/<handle:016x>-<version>.sums     checksum sidecar
    root/hot/<xx>/<handle:016x>-<version>.bad      corrupt marker (text: time and reason)
    root/tmp/hot-<handle:016x>-<version>-<random>.chunk|.sums     hot files being written

    COLD/<xx>/<handle:016x>-<version>.zst          compressed chunk (chunkserver/cold.py)
    COLD/<xx>/<handle:016x>-<version>.sums         the same sidecar as in the hot tier
    COLD/<xx>/<handle:016x>-<version>.bad          corrupt marker
    COLD/tmp/cold-<handle:016x>-<version>-<random>.zst|.sums      cold files being written

``xx`` is the last two hex digits of the handle. The master hands out handles sequentially, so
the low byte spreads chunks evenly over 256 fan-out directories and none of them grows huge.
Every tier has its temp directory on its own file system (``root/tmp`` for hot, ``COLD/tmp``
for cold), so publishing is always a rename within one file system, hence atomic; start-up
clears each tier's temp files (those named after the tier).

Sidecar format (all integers little endian)::

    offset size  field
         0    4  magic b"GFSS"
         4    2  format version (1)
         6    2  reserved, 0
         8    4  block size (65536, gfs.checksum.BLOCK_SIZE)
        12    8  chunk length in bytes
        20    8  chunk checksum: xxh3-64 over the block checksums (gfs.checksum.chunk_checksum)
        28    8  header checksum: xxh3-64 of bytes 0..27
        36  8*n  block checksums, u64 each, n = ceil(length / block size)

The header checksum lets start-up trust the length and chunk checksum after reading 36 bytes,
without touching the data or the block sums. The chunk checksum in turn covers the block sums,
so a damaged sidecar is detected before any byte is served; a damaged data block is detected
by its block checksum. The block sums are always those of the uncompressed bytes: a cold
chunk's sidecar is byte for byte the one it had in the hot tier, and every read of it (and the
scrubber) checks the decompressed data.

Publishing a chunk: the data and the sidecar are written and fsync'd in the tier's temp
directory (the data around the page cache with O_DIRECT where the file system allows:
gfs/direct_io.py), then renamed into the tier (data first, sidecar last) and the fan-out directory is
fsync'd (outside the store's lock, before the write is acknowledged). A chunk exists only
when both files exist, so start-up deletes a data file without a sidecar (a crash between
the two renames, or during a delete, which unlinks the sidecar first). New chunks
(WriteChunk, CopyChunk) are always written to the hot tier; publishing replaces whatever the
store held for that handle, in either tier (a repair of a cold replica lands hot).

Moving a chunk between tiers (``move``): the source replica is read and every block checked
against the sidecar (a bad block is DataLoss, marks the replica and moves nothing), re-encoded
(hot -> cold: compressed frame by frame; cold -> hot: decompressed) into the destination tier's
temp directory with a copy of the sidecar, fsync'd, renamed into the destination tier (data,
then sidecar), the directory fsync'd; only then does the index switch to the new copy and the
old tier's files are removed (sidecar first) and that directory fsync'd. Reads that opened the
old files before the switch finish on them (an unlinked file stays readable while open).

Start-up recovery, per handle, over both tiers: candidates are (version, tier) pairs; the
newest version wins; between two complete copies of the same version (a crash after a move's
renames, before the old copy was removed) one without a corrupt marker is preferred, then the
hot one (the master sees the tier in the chunk report and asks again if it still wants a
move). Every other copy, complete or not, is deleted, as are data files without a sidecar,
temp files, and markers of copies not kept. A newer version whose sidecar header is damaged, or
a sidecar without its data file, is left in place for inspection (and not loaded). So a crash
at any point of a move leaves exactly one complete copy: before the destination sidecar's
rename only the source is complete; after it both are, and one is dropped at start-up.

Corrupt replicas: any DataLoss that ``read()`` (or ``move()``) runs into (damaged or missing
sidecar, data file of the wrong size, a damaged cold index, a frame that does not decompress, a
block failing its checksum) marks that replica corrupt, in memory and with a marker file
``<handle:016x>-<version>.bad`` next to it (not fsync'd: losing a mark in a crash only means
the scrubber finds the damage again). Start-up loads the markers of the chunks it keeps and
removes the others, and marks a hot copy whose data file is not the length its sidecar says.
A corrupt replica stays in the index and readable block by block (intact blocks are still
served, verified), so a chunk can be rebuilt from several partly bad replicas;
publishing the same version again (repair in place) or a newer one, or deleting it, clears the
mark. A replica marked corrupt is not moved (FailedPrecondition): repair it first.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from typing import BinaryIO, Callable, Iterator

import xxhash
import zstandard

from chunkserver import cold
from chunkserver.direct_reads import DirectReads, SpanRing
from gfs.direct_io import DirectAppender
from gfs.checksum import BLOCK_SIZE, ChunkChecksummer, block_checksum, chunk_checksum
from gfs.errors import (DataLoss, FailedPrecondition, InvalidArgument, NotFound,
                        ResourceExhausted)
from gfs.fsutil import fsync_path
from gfs.space import repair_reserve
from gfs.planted import planted

log = logging.getLogger(__name__)

MAGIC = b"GFSS"
FORMAT_VERSION = 1
DEFAULT_MAX_CHUNK_SIZE = 64 * 1024 * 1024
U64_MAX = (1 << 64) - 1
HOT, COLD = "hot", "cold"
TIERS = (HOT, COLD)

_HEADER_BODY = struct.Struct("<4sHHIQQ")
_HEADER_SUM = struct.Struct("<Q")
HEADER_SIZE = _HEADER_BODY.size + _HEADER_SUM.size
_FANOUT = [f"{i:02x}" for i in range(256)]
SPAN_BLOCKS = 16        # blocks read with one system call (1 MiB)
SPAN_BYTES = SPAN_BLOCKS * BLOCK_SIZE


@dataclass(frozen=True)
class ChunkMeta:
    handle: int
    version: int
    length: int
    checksum: int
    mtime: float    # seconds since the epoch: when the chunk was published (kept by moves)
    tier: str = HOT
    stored_bytes: int = 0   # size of the data file (hot: the length; cold: compressed + index)


@dataclass(frozen=True)
class Tier:
    """Where one tier keeps its files."""
    name: str
    dir: str        # holds the 256 fan-out directories
    tmp_dir: str    # temp files, on the same file system as `dir`
    data_ext: str   # "chunk" (hot) or "zst" (cold)

    def names(self) -> re.Pattern:
        return re.compile(rf"([0-9a-f]{{16}})-([0-9]+)\.({self.data_ext}|sums|bad)")


# ---------------------------------------------------------------------------------------------
# Small helpers


def _check_int(name: str, value: object, low: int, high: int = U64_MAX) -> None:
    if type(value) is not int or not low <= value <= high:
        raise InvalidArgument(f"{name} must be an int in {low}..{high}, not {value!r}")


def _chunk_name(handle: int, version: int) -> str:
    return f"chunk {handle:016x} version {version}"


def _n_blocks(length: int) -> int:
    return -(-length // BLOCK_SIZE)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def encode_header(length: int, checksum: int) -> bytes:
    body = _HEADER_BODY.pack(MAGIC, FORMAT_VERSION, 0, BLOCK_SIZE, length, checksum)
    return body + _HEADER_SUM.pack(xxhash.xxh3_64_intdigest(body))


def decode_header(raw: bytes, what: str) -> tuple[int, int]:
    """Return (length, chunk checksum) of a sidecar header; DataLoss if it is damaged."""
    if len(raw) < HEADER_SIZE:
        raise DataLoss(f"{what}: checksum sidecar is truncated ({len(raw)} header bytes)")
    body = raw[:_HEADER_BODY.size]
    (stored_sum,) = _HEADER_SUM.unpack_from(raw, _HEADER_BODY.size)
    if xxhash.xxh3_64_intdigest(body) != stored_sum:
        raise DataLoss(f"{what}: checksum sidecar header is corrupt")
    magic, fmt, _reserved, block_size, length, checksum = _HEADER_BODY.unpack(body)
    if magic != MAGIC or fmt != FORMAT_VERSION or block_size != BLOCK_SIZE:
        raise DataLoss(f"{what}: unsupported sidecar (magic {magic!r}, format {fmt}, "
                       f"block size {block_size})")
    return length, checksum


def _range_end(meta: ChunkMeta, offset: int, length: int) -> int:
    """Validate a read range against a chunk; return its end offset."""
    end = meta.length if length == -1 else offset + length
    if offset > meta.length or end > meta.length:
        raise InvalidArgument(f"{_chunk_name(meta.handle, meta.version)}: range "
                              f"offset {offset} length {length} is outside its "
                              f"{meta.length} bytes")
    return end


# ---------------------------------------------------------------------------------------------
# Writing


class ChunkWriter:
    """One chunk being received: append with write(), then commit() or abort().

    Data goes straight to a temp file and the checksums are computed as it arrives, so memory
    use does not depend on the chunk size. Use it from one thread. As a context manager it
    aborts on exit unless committed.
    """

    def __init__(self, store: ChunkStore, handle: int, version: int, *, repair: bool = False,
                 replaces: int = 0):
        self.handle = handle
        self.version = version
        self.length = 0
        self.repair = repair          # a repair or balancing copy: may use the repair reserve
        self.replaces = replaces      # bytes of the stored replica this one will replace
        self._store = store
        self._reserved = 0
        self._summer = ChunkChecksummer(BLOCK_SIZE)
        prefix = f"{HOT}-{handle:016x}-{version}-"
        fd, self._data_path = tempfile.mkstemp(dir=store.tmp_dir, prefix=prefix, suffix=".chunk")
        self._sums_path = self._data_path[:-len(".chunk")] + ".sums"
        try:
            self._bytes = DirectAppender(fd, self._data_path)   # O_DIRECT where it can
        except BaseException:
            os.close(fd)
            _unlink_quietly(self._data_path)
            raise
        self._file: BinaryIO | None = os.fdopen(fd, "wb")

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abort()

    @property
    def closed(self) -> bool:
        return self._file is None

    def write(self, data: bytes | bytearray | memoryview,
              block_sums: list[int] | tuple[int, ...] | None = None) -> None:
        """Append `data`. Past max_chunk_size: InvalidArgument and nothing of `data` is kept.
        `block_sums`: the sums of `data`'s blocks, already verified by the caller (it starts at
        a block boundary; the blocks are not hashed again)."""
        f = self._open_file()
        view = memoryview(data).cast("B")
        if self.length + len(view) > self._store.max_chunk_size:
            raise InvalidArgument(f"{_chunk_name(self.handle, self.version)}: writing "
                                  f"{len(view)} bytes at {self.length} exceeds the maximum "
                                  f"chunk size {self._store.max_chunk_size}")
        self._store._reserve(len(view), _chunk_name(self.handle, self.version), self.repair,
                             self.replaces)
        self._reserved += len(view)
        if block_sums is None:
            self._summer.update(view)
        else:
            self._summer.add_blocks(block_sums, len(view))
        self._bytes.write(view)
        self.length += len(view)

    def commit(self, expected_length: int | None = None,
               expected_checksum: int | None = None) -> ChunkMeta:
        """Make the chunk durable and visible; return its metadata.

        A mismatch with an expectation is DataLoss (the bytes were damaged in transit).
        Any failure removes the temp files; the writer is closed either way.
        """
        f = self._open_file()
        try:
            checksum = self._summer.finish()
            self._check_expected(checksum, expected_length, expected_checksum)
            self._bytes.finish()
            self._bytes.close()
            if not planted("ack_before_fsync"):
                os.fsync(f.fileno())
            f.close()
            self._write_sidecar(checksum)
            meta = self._store._publish(self.handle, self.version, self.length, checksum,
                                        self._data_path, self._sums_path)
        except BaseException:
            self.abort()
            raise
        self._file = None
        self._release()
        return meta

    def abort(self) -> None:
        """Drop the chunk: remove the temp files. Idempotent; a no-op after commit."""
        if self._file is None:
            return
        self._bytes.close()
        self._file.close()
        self._file = None
        _unlink_quietly(self._data_path)
        _unlink_quietly(self._sums_path)
        self._release()

    def _release(self) -> None:
        self._store._unreserve(self._reserved)
        self._reserved = 0

    def _open_file(self) -> BinaryIO:
        if self._file is None:
            raise FailedPrecondition(f"{_chunk_name(self.handle, self.version)}: "
                                     f"the writer is already committed or aborted")
        return self._file

    def _check_expected(self, checksum: int, expected_length: int | None,
                        expected_checksum: int | None) -> None:
        what = _chunk_name(self.handle, self.version)
        if expected_length is not None and expected_length != self.length:
            raise DataLoss(f"{what}: received {self.length} bytes, expected {expected_length}")
        if expected_checksum is not None and expected_checksum != checksum:
            raise DataLoss(f"{what}: received data has checksum {checksum:016x}, "
                           f"expected {expected_checksum:016x}")

    def _write_sidecar(self, checksum: int) -> None:
        _write_sidecar(self._sums_path, self.length, checksum, self._summer.blocks)


# ---------------------------------------------------------------------------------------------
# The store


@dataclass
class _Source:
    """An opened replica: its data file, its checked block sums and (cold) its frame index."""
    meta: ChunkMeta
    file: BinaryIO
    sums: tuple[int, ...]
    index: cold.ColdIndex | None


def _inside(path: str, base: str) -> bool:
    return os.path.commonpath([path, base]) == base


class ChunkStore:
    """The chunks of one chunkserver, in two tiers, with one in-memory index.

    Thread-safe: the index and every change of the published files happen under one lock;
    reads open their files under it (so they always see a matching data/sidecar pair) and then
    stream without it. A move re-encodes without the lock and takes it only to publish.

    `on_corrupt(handle, version, reason)`, if set, is called (outside the lock, from whichever
    thread found it) each time a replica is newly marked corrupt.
    """

    def __init__(self, root: str, *, cold_dir: str | None = None, capacity: int = 0,
                 max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE,
                 cold_level: int = cold.DEFAULT_LEVEL,
                 blocks_per_frame: int = cold.DEFAULT_BLOCKS_PER_FRAME):
        _check_int("max_chunk_size", max_chunk_size, 1)
        _check_int("capacity", capacity, 0)
        _check_int("blocks_per_frame", blocks_per_frame, 1, cold.MAX_BLOCKS_PER_FRAME)
        _check_int("cold_level", cold_level, -7, 22)
        self.root = os.path.abspath(root)
        self.max_chunk_size = max_chunk_size
        self.capacity = capacity          # most bytes stored (both tiers); 0: the disks' size
        self.cold_level = cold_level
        self.blocks_per_frame = blocks_per_frame
        hot = Tier(HOT, os.path.join(self.root, HOT), os.path.join(self.root, "tmp"), "chunk")
        cold_root = os.path.abspath(cold_dir) if cold_dir else os.path.join(self.root, COLD)
        if cold_root == self.root or _inside(cold_root, hot.dir) or \
                _inside(cold_root, hot.tmp_dir) or _inside(self.root, cold_root):
            raise InvalidArgument(f"cold tier directory {cold_root} overlaps the data directory "
                                  f"{self.root} (use <data>/cold or a directory elsewhere)")
        self.tiers = {HOT: hot, COLD: Tier(COLD, cold_root, os.path.join(cold_root, "tmp"), "zst")}
        self.tier_dir = hot.dir           # where new chunks are published
        self.tmp_dir = hot.tmp_dir
        self.cold_dir = cold_root
        self._lock = threading.Lock()
        self.on_corrupt: Callable[[int, int, str], None] | None = None
        self._corrupt: dict[int, int] = {}          # handle -> version marked corrupt
        for tier in self.tiers.values():
            self._make_dirs(tier)
            self._clear_tmp(tier)
        self._index: dict[int, ChunkMeta] = self._scan()
        self._stored = sum(m.stored_bytes for m in self._index.values())
        self._reserved = 0                # bytes being received by open writers
        self._direct_reads = DirectReads()  # bulk reads of hot chunks (chunkserver/direct_reads.py)

    # -- public API ----------------------------------------------------------------------------

    def begin_write(self, handle: int, version: int, *, repair: bool = False) -> ChunkWriter:
        """Start receiving a chunk (into the hot tier). Refused early if a newer version is
        already stored.

        With a capacity, a new chunk (repair False) may fill it up to the repair reserve
        (gfs.space), a repair or balancing copy (repair True) all of it. A writer that will
        replace a stored replica of the same handle (a corrupt replica rebuilt in place, an older
        version rewritten) may use the room that replica takes: it goes when this one is
        published."""
        _check_int("handle", handle, 0)
        _check_int("version", version, 0)
        with self._lock:
            self._check_not_stale(handle, version)
            held = self._index.get(handle)
        return ChunkWriter(self, handle, version, repair=repair,
                           replaces=held.stored_bytes if held is not None else 0)

    def read(self, handle: int, offset: int = 0, length: int = -1,
             version: int | None = None) -> Iterator[bytes]:
        """Stream bytes [offset, offset + length) of a chunk (length -1: to its end), from
        whichever tier holds it.

        Errors about the request (NotFound, FailedPrecondition for another stored version,
        InvalidArgument) and a damaged or missing file (DataLoss) are raised by this call; a
        damaged data block raises DataLoss from the iterator before any byte of that block is
        yielded. Pieces are at most one block long; one block (hot) or one frame (cold, 1 MiB)
        is in memory at a time. Every DataLoss marks the replica corrupt (see mark_corrupt)
        before it is raised. A replica already marked corrupt is read all the same: its intact
        blocks are served.
        """
        src, end = self._open_checked(handle, offset, length, version)
        return self._stream(src, offset, end)

    def read_spans(self, handle: int, offset: int = 0, length: int = -1,
                   version: int | None = None, *, into: bytearray | SpanRing | None = None
                   ) -> tuple[ChunkMeta, Iterator[tuple[int, memoryview, tuple[int, ...]]]]:
        """The replica's metadata and the whole blocks covering [offset, offset + length), in
        spans of up to 1 MiB: (offset of the span, its bytes, the block sums of the sidecar
        that each block was verified against), for senders that pass the sums on instead of
        hashing the blocks again. Errors as for read(); at a bad block the intact blocks
        before it come as a span, then DataLoss.

        `into` (at least SPAN_BYTES): hot spans are read into it, each valid only until the
        next is asked for - for a sender that sends each span before taking the next, and so
        allocates (and faults in) no fresh megabyte per span. A SpanRing (a bulk connection's)
        also reads ahead and around the page cache: chunkserver/direct_reads.py."""
        size = into.span_bytes if isinstance(into, SpanRing) else len(into or ())
        if into is not None and size < SPAN_BYTES:
            raise ValueError(f"a read buffer of {size} bytes; spans take {SPAN_BYTES}")
        src, end = self._open_checked(handle, offset, length, version)

        def spans() -> Iterator[tuple[int, memoryview, tuple[int, ...]]]:
            with src.file:
                for at, span in self._spans(src, offset, end, into):
                    first = at // BLOCK_SIZE
                    yield at, span, src.sums[first:first + _n_blocks(len(span))]
        return src.meta, spans()

    def _open_checked(self, handle: int, offset: int, length: int,
                      version: int | None) -> tuple[_Source, int]:
        """_open of a read's arguments, checked first."""
        _check_int("handle", handle, 0)
        _check_int("offset", offset, 0)
        _check_int("length", length, -1)
        if version is not None:
            _check_int("version", version, 0)
        return self._open(handle, version, offset, length)

    def verify(self, handle: int, version: int | None = None) -> bool:
        """Read and check every block of a chunk; False (and marked corrupt) if any is bad.

        NotFound if absent, FailedPrecondition if `version` is given and another is stored.
        """
        try:
            for _ in self.read(handle, version=version):
                pass
        except DataLoss:
            return False
        return True

    def move(self, handle: int, version: int | None, tier: str) -> ChunkMeta:
        """Move a chunk to `tier` ("hot" or "cold"); return its metadata there.

        Idempotent: a chunk already in `tier` is returned as it is. Every block of the source
        is checked while it is re-encoded; a bad one raises DataLoss (the replica is marked
        corrupt) and nothing is moved. The new copy is durable before the old one is removed,
        and reads never stop (see the module docstring). NotFound if absent,
        FailedPrecondition if `version` is given and another is stored, if the replica is
        marked corrupt, or if it was replaced or deleted while moving.
        """
        _check_int("handle", handle, 0)
        if version is not None:
            _check_int("version", version, 0)
        if tier not in TIERS:
            raise InvalidArgument(f"tier must be one of {', '.join(TIERS)}, not {tier!r}")
        with self._lock:
            meta = self._lookup(handle, version)
            if meta.tier == tier:
                return meta
            self._check_movable(meta)
        src, _ = self._open(handle, meta.version)
        with src.file:
            meta = src.meta
            if meta.tier == tier:          # moved by someone else in between
                return meta
            with self._lock:
                self._check_movable(meta)
            dest = self.tiers[tier]
            fd, data_tmp = tempfile.mkstemp(dir=dest.tmp_dir, suffix=f".{dest.data_ext}",
                                            prefix=f"{tier}-{handle:016x}-{meta.version}-")
            sums_tmp = data_tmp[:-len(dest.data_ext)] + "sums"
            try:
                with os.fdopen(fd, "wb") as out:
                    if tier == COLD:
                        stored = self._encode_cold(src, out)
                    else:
                        stored = self._decode_to_hot(src, out)
                _write_sidecar(sums_tmp, meta.length, meta.checksum, src.sums, meta.mtime)
                return self._publish_move(meta, dest, stored, data_tmp, sums_tmp)
            except BaseException:
                _unlink_quietly(data_tmp)
                _unlink_quietly(sums_tmp)
                raise

    def mark_corrupt(self, handle: int, version: int, reason: str) -> bool:
        """Record that the stored replica (handle, version) is corrupt.

        Persistent (a marker file next to the chunk), until the replica is replaced by a
        publish of the same or a newer version, or deleted. Returns True if that replica is
        stored here (and is now marked, whether or not it already was), False if it is not
        (nothing is recorded).
        """
        _check_int("handle", handle, 0)
        _check_int("version", version, 0)
        with self._lock:
            meta = self._index.get(handle)
            if meta is None or meta.version != version:
                return False
            new = self._set_mark(meta, reason)
        if new:
            self._announce(meta, reason)
        return True

    def corrupt(self) -> dict[int, int]:
        """The replicas marked corrupt: handle -> version (each is also in chunks())."""
        with self._lock:
            return dict(self._corrupt)

    def is_corrupt(self, handle: int, version: int | None = None) -> bool:
        """Is the stored replica of `handle` (of exactly `version`, if given) marked corrupt?"""
        with self._lock:
            marked = self._corrupt.get(handle)
        return marked is not None and (version is None or marked == version)

    def delete(self, handle: int, version: int | None = None) -> bool:
        """Delete a chunk (from whichever tier holds it); with `version`, only if that is the
        stored version.

        Returns whether something was deleted. Reads already in progress finish on the old
        files. Not fsync'd: a chunk that reappears after a crash is simply garbage again.
        """
        _check_int("handle", handle, 0)
        if version is not None:
            _check_int("version", version, 0)
        with self._lock:
            meta = self._index.get(handle)
            if meta is None or (version is not None and meta.version != version):
                return False
            self._set_index(handle, None)
            self._corrupt.pop(handle, None)
            self._remove_files(handle, meta.version, meta.tier)
        return True

    def get(self, handle: int) -> ChunkMeta | None:
        with self._lock:
            return self._index.get(handle)

    def chunks(self) -> list[ChunkMeta]:
        """Every published chunk (of both tiers; see ChunkMeta.tier), by handle."""
        with self._lock:
            return sorted(self._index.values(), key=lambda m: m.handle)

    def usage(self) -> dict:
        """Space figures. Top level, as before tiering: used_bytes is the chunk lengths of all
        tiers, capacity/free_bytes are those of the data directory's file system (the hot tier,
        where new chunks land), both limited by the store's capacity when it has one (free:
        what the capacity leaves after the stored bytes of both tiers). `tiers` has one dict per
        tier, in TIERS order, with the fields of master.proto's TierUsage: name, chunk_count,
        logical_bytes (chunk lengths), stored_bytes (data files on disk: compressed for cold),
        capacity_bytes and free_bytes (of the file system holding the tier)."""
        per = {name: {"name": name, "chunk_count": 0, "logical_bytes": 0, "stored_bytes": 0}
               for name in TIERS}
        with self._lock:
            for m in self._index.values():
                t = per[m.tier]
                t["chunk_count"] += 1
                t["logical_bytes"] += m.length
                t["stored_bytes"] += m.stored_bytes
        for name, tier in self.tiers.items():
            st = os.statvfs(tier.dir)
            per[name]["capacity_bytes"] = st.f_blocks * st.f_frsize
            per[name]["free_bytes"] = st.f_bavail * st.f_frsize
        st = os.statvfs(self.root)
        capacity = st.f_blocks * st.f_frsize
        return {"used_bytes": sum(t["logical_bytes"] for t in per.values()),
                "chunk_count": sum(t["chunk_count"] for t in per.values()),
                "capacity_bytes": min(capacity, self.capacity) if self.capacity else capacity,
                "free_bytes": self._free(st),
                "tiers": [per[name] for name in TIERS]}

    def free_bytes(self) -> int:
        """Room left for new chunks: the hot tier's file system's free space, and with a
        capacity also what the capacity leaves after the stored and incoming bytes."""
        return self._free(os.statvfs(self.root))

    def _free(self, st: os.statvfs_result) -> int:
        free = st.f_bavail * st.f_frsize
        if self.capacity:
            with self._lock:
                free = min(free, max(0, self.capacity - self._stored - self._reserved))
        return free

    def _reserve(self, nbytes: int, what: str, repair: bool = False, replaces: int = 0) -> None:
        """Count `nbytes` an open writer is about to receive; refused beyond the capacity (new
        chunks: beyond the capacity less the repair reserve). `replaces`: bytes of a stored
        replica the writer will replace, which it may count as room."""
        with self._lock:
            if not self.capacity:
                self._reserved += nbytes
                return
            keep = 0 if repair else repair_reserve(self.capacity)
            if self._stored + self._reserved + nbytes > self.capacity - keep + replaces:
                kept = f", {keep} of it kept for repair copies" if keep else ""
                raise ResourceExhausted(f"{what}: no room ({self._stored} bytes stored, "
                                        f"{self._reserved} incoming, capacity "
                                        f"{self.capacity}{kept})")
            self._reserved += nbytes

    def _unreserve(self, nbytes: int) -> None:
        with self._lock:
            self._reserved -= nbytes

    def _set_index(self, handle: int, meta: ChunkMeta | None) -> None:
        """Publish `meta` for `handle` (None: forget it), keeping the stored total (lock held)."""
        old = self._index.pop(handle, None)
        if old is not None:
            self._stored -= old.stored_bytes
        if meta is not None:
            self._index[handle] = meta
            self._stored += meta.stored_bytes

    # -- paths -----------------------------------------------------------------------------------

    def _path(self, handle: int, version: int, kind: str, tier: str = HOT) -> str:
        """kind: "chunk"/"zst" (or "data": the tier's data file), "sums" or "bad"."""
        t = self.tiers[tier]
        if kind == "data":
            kind = t.data_ext
        return os.path.join(t.dir, f"{handle & 0xFF:02x}", f"{handle:016x}-{version}.{kind}")

    def data_path(self, meta: ChunkMeta) -> str:
        """The data file of a stored chunk (for tools and tests)."""
        return self._path(meta.handle, meta.version, "data", meta.tier)

    def _remove_files(self, handle: int, version: int, tier: str) -> None:
        """Sidecar first: without it the chunk no longer exists, even if we crash here."""
        _unlink_quietly(self._path(handle, version, "sums", tier))
        _unlink_quietly(self._path(handle, version, "data", tier))
        _unlink_quietly(self._path(handle, version, "bad", tier))

    # -- opening ---------------------------------------------------------------------------------

    def _make_dirs(self, tier: Tier) -> None:
        created = not os.path.isdir(tier.dir)
        os.makedirs(tier.tmp_dir, exist_ok=True)
        missing = [d for d in _FANOUT if not os.path.isdir(os.path.join(tier.dir, d))]
        for d in missing:
            os.makedirs(os.path.join(tier.dir, d), exist_ok=True)
        if missing or created:
            fsync_path(tier.dir)
            fsync_path(os.path.dirname(tier.dir))

    @staticmethod
    def _clear_tmp(tier: Tier) -> None:
        """Remove this tier's abandoned writes (their writers died with the last process)."""
        for entry in os.scandir(tier.tmp_dir):
            if not entry.name.startswith(f"{tier.name}-"):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)

    def _scan(self) -> dict[int, ChunkMeta]:
        """Build the index (and the corrupt marks) from the file names and the sidecar headers
        only, over both tiers."""
        found: dict[int, dict[tuple[int, str], set[str]]] = {}
        for tier in self.tiers.values():
            pattern = tier.names()
            for fanout in _FANOUT:
                for entry in os.scandir(os.path.join(tier.dir, fanout)):
                    m = pattern.fullmatch(entry.name)
                    if m is None or m[1][-2:] != fanout:
                        log.warning("ignoring unexpected file %s", entry.path)
                        continue
                    kind = "data" if m[3] == tier.data_ext else m[3]
                    copies = found.setdefault(int(m[1], 16), {})
                    copies.setdefault((int(m[2]), tier.name), set()).add(kind)
        index = {}
        for handle, copies in found.items():
            meta = self._recover(handle, copies)
            if meta is not None:
                index[handle] = meta
                if "bad" in copies[(meta.version, meta.tier)]:
                    self._corrupt[handle] = meta.version
                elif not self._data_size_matches(meta):
                    self._set_mark(meta, "data file size does not match its sidecar at start-up")
        if self._corrupt:
            log.warning("%d chunks are marked corrupt", len(self._corrupt),
                        extra={"fields": {"handles": sorted(self._corrupt)[:50]}})
        return index

    def _recover(self, handle: int, copies: dict[tuple[int, str], set[str]]) -> ChunkMeta | None:
        """Pick the copy to keep (newest version; then unmarked; then hot); delete unpublished
        and superseded files, the other tier's copy of the kept version, and corrupt markers
        whose copy is not kept."""
        kept: ChunkMeta | None = None
        order = sorted(copies, key=lambda vt: (-vt[0], "bad" in copies[vt], TIERS.index(vt[1])))
        for version, tier in order:
            kinds = copies[(version, tier)] - {"bad"}
            if kinds <= {"data"} or kept is not None:
                if kinds and kept is not None:
                    log.info("%s: dropping the %s copy (keeping the %s copy of version %d)",
                             _chunk_name(handle, version), tier, kept.tier, kept.version)
                self._remove_files(handle, version, tier)
            elif kinds == {"data", "sums"}:
                kept = self._load_meta(handle, version, tier)
            else:
                log.warning("%s: %s sidecar without data file; leaving it for inspection",
                            _chunk_name(handle, version), tier)
            if "bad" in copies[(version, tier)] and \
                    (kept is None or (kept.version, kept.tier) != (version, tier)):
                _unlink_quietly(self._path(handle, version, "bad", tier))
        return kept

    def _data_size_matches(self, meta: ChunkMeta) -> bool:
        """Does a hot copy's data file hold exactly the bytes its sidecar says? A copy that lost
        data (a torn file after a crash of the disk, a hand-truncated file) is marked corrupt at
        start-up, so the masters re-replicate it at once instead of learning of it from the
        first read. (Cold copies are compressed frames: their reads check them.)"""
        if meta.tier != HOT:
            return True
        try:
            size = os.stat(self._path(meta.handle, meta.version, "data", meta.tier)).st_size
        except OSError:
            return False
        if size != meta.length:
            log.warning("%s: data file holds %d bytes, its sidecar says %d: marked corrupt",
                        _chunk_name(meta.handle, meta.version), size, meta.length)
            return False
        return True

    def _load_meta(self, handle: int, version: int, tier: str) -> ChunkMeta | None:
        """Read one sidecar header; None (logged, files left in place) if it is damaged."""
        what = _chunk_name(handle, version)
        try:
            with open(self._path(handle, version, "sums", tier), "rb") as f:
                length, checksum = decode_header(f.read(HEADER_SIZE), what)
                mtime = os.fstat(f.fileno()).st_mtime
            stored = length if tier == HOT else \
                os.stat(self._path(handle, version, "data", tier)).st_size
        except (DataLoss, OSError) as e:
            log.warning("%s: %s copy not loaded: %s", what, tier, e)
            return None
        return ChunkMeta(handle, version, length, checksum, mtime, tier, stored)

    # -- writing ---------------------------------------------------------------------------------

    def _check_not_stale(self, handle: int, version: int) -> None:
        stored = self._index.get(handle)
        if stored is not None and stored.version > version:
            raise FailedPrecondition(f"chunk {handle:016x}: version {stored.version} is "
                                     f"stored; refusing older version {version}")

    def _publish(self, handle: int, version: int, length: int, checksum: int,
                 data_tmp: str, sums_tmp: str) -> ChunkMeta:
        """Move a written chunk into the hot tier and the index; drop the copy it replaces
        (an older version, or the same version in either tier)."""
        data_path = self._path(handle, version, "chunk")
        sums_path = self._path(handle, version, "sums")
        with self._lock:
            self._check_not_stale(handle, version)
            old = self._index.get(handle)
            # Unpublish whatever has these names first, or a crash between the renames would
            # pair the new data with an old sidecar (and an old corrupt marker with the new
            # data).
            _unlink_quietly(sums_path)
            _unlink_quietly(self._path(handle, version, "bad"))
            os.rename(data_tmp, data_path)
            os.rename(sums_tmp, sums_path)
            meta = ChunkMeta(handle, version, length, checksum, os.stat(sums_path).st_mtime,
                             HOT, length)
            self._set_index(handle, meta)
            self._corrupt.pop(handle, None)
            if old is not None and (old.version, old.tier) != (version, HOT):
                self._remove_files(handle, old.version, old.tier)
        # The directory fsync (the renames made durable) runs without the lock, so reads and
        # other publishes go on meanwhile; the writer's caller acknowledges only after it.
        if not planted("skip_dir_fsync"):
            fsync_path(os.path.dirname(data_path))
        return meta

    def _check_movable(self, meta: ChunkMeta) -> None:
        if self._corrupt.get(meta.handle) == meta.version:
            raise FailedPrecondition(f"{_chunk_name(meta.handle, meta.version)} is marked "
                                     f"corrupt: repair it before moving it")

    def _encode_cold(self, src: _Source, out: BinaryIO) -> int:
        """Compress a verified source into a cold data file; return its size."""
        meta = src.meta
        writer = cold.ColdFileWriter(out, meta.length, meta.checksum, self.blocks_per_frame,
                                     self.cold_level)
        blocks: list[bytes] = []
        for block_start, data in self._blocks(src, 0, meta.length):
            blocks.append(data)
            if len(blocks) == self.blocks_per_frame or block_start + len(data) == meta.length:
                writer.add(b"".join(blocks))
                blocks.clear()
        return writer.finish()

    def _decode_to_hot(self, src: _Source, out: BinaryIO) -> int:
        """Write a verified source raw; return its size."""
        for _, data in self._blocks(src, 0, src.meta.length):
            out.write(data)
        out.flush()
        os.fsync(out.fileno())
        return src.meta.length

    def _publish_move(self, meta: ChunkMeta, dest: Tier, stored: int, data_tmp: str,
                      sums_tmp: str) -> ChunkMeta:
        """Rename a moved copy into its tier, switch the index to it, drop the old copy."""
        h, v = meta.handle, meta.version
        data_path = self._path(h, v, "data", dest.name)
        sums_path = self._path(h, v, "sums", dest.name)
        with self._lock:
            current = self._index.get(h)
            if current is not meta:
                _unlink_quietly(data_tmp)
                _unlink_quietly(sums_tmp)
                if current is not None and current.version == v and current.tier == dest.name:
                    return current          # a concurrent move did the same
                raise FailedPrecondition(f"{_chunk_name(h, v)} was replaced or deleted while "
                                         f"it was being moved to {dest.name}")
            self._check_movable(meta)      # marked corrupt meanwhile: keep it where it is
            _unlink_quietly(sums_path)
            _unlink_quietly(self._path(h, v, "bad", dest.name))
            os.rename(data_tmp, data_path)
            os.rename(sums_tmp, sums_path)
            fsync_path(os.path.dirname(data_path))
            moved = replace(meta, tier=dest.name, stored_bytes=stored,
                            mtime=os.stat(sums_path).st_mtime)
            self._set_index(h, moved)
            self._remove_files(h, v, meta.tier)
        fsync_path(os.path.dirname(self._path(h, v, "sums", meta.tier)))
        log.info("moved %s to the %s tier (%d -> %d bytes on disk)", _chunk_name(h, v),
                 dest.name, meta.stored_bytes, stored,
                 extra={"fields": {"handle": h, "version": v, "tier": dest.name}})
        return moved

    # -- corrupt marks ---------------------------------------------------------------------------

    def _set_mark(self, meta: ChunkMeta, reason: str) -> bool:
        """Mark a replica that is in the index (lock held). Returns whether it is a new mark."""
        if self._corrupt.get(meta.handle) == meta.version:
            return False
        self._corrupt[meta.handle] = meta.version
        path = self._path(meta.handle, meta.version, "bad", meta.tier)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write(f"{stamp} {reason}\n")
        except OSError as err:
            log.warning("%s: cannot write corrupt marker %s: %s",
                        _chunk_name(meta.handle, meta.version), path, err)
        return True

    def _found_bad(self, meta: ChunkMeta, err: DataLoss) -> None:
        """A read ran into damage: mark the replica, unless it was replaced, moved or deleted
        since."""
        with self._lock:
            if self._index.get(meta.handle) is not meta:
                return
            new = self._set_mark(meta, str(err))
        if new:
            self._announce(meta, str(err))

    def _announce(self, meta: ChunkMeta, reason: str) -> None:
        log.warning("%s marked corrupt: %s", _chunk_name(meta.handle, meta.version), reason,
                    extra={"fields": {"handle": meta.handle, "version": meta.version,
                                      "tier": meta.tier}})
        listener = self.on_corrupt
        if listener is not None:
            try:
                listener(meta.handle, meta.version, reason)
            except Exception:       # a listener must never break a read
                log.exception("corrupt-replica listener failed")

    # -- reading ---------------------------------------------------------------------------------

    def _lookup(self, handle: int, version: int | None) -> ChunkMeta:
        meta = self._index.get(handle)
        if meta is None:
            raise NotFound(f"chunk {handle:016x} is not stored here")
        if version is not None and version != meta.version:
            raise FailedPrecondition(f"chunk {handle:016x}: stored version is {meta.version}, "
                                     f"not {version}")
        return meta

    def _open(self, handle: int, version: int | None, offset: int = 0,
              length: int = -1) -> tuple[_Source, int]:
        """Open a replica for reading [offset, offset + length): files, checked sums and cold
        index. Returns it with the end offset of the range. DataLoss marks the replica."""
        meta: ChunkMeta | None = None
        try:
            with self._lock:
                meta = self._lookup(handle, version)
                end = _range_end(meta, offset, length)
                sums_file, data_file = self._open_files(meta)
            try:
                with sums_file:
                    sums = self._load_sums(meta, sums_file)
                index = None
                if meta.tier == HOT:
                    self._check_data_size(meta, data_file)
                else:
                    index = cold.read_index(data_file.fileno(), meta.length, meta.checksum,
                                            _chunk_name(meta.handle, meta.version))
            except BaseException:
                data_file.close()
                raise
        except DataLoss as err:
            if meta is not None:       # always so: the lookup raises no DataLoss
                self._found_bad(meta, err)
            raise
        return _Source(meta, data_file, sums, index), end

    def _open_files(self, meta: ChunkMeta) -> tuple[BinaryIO, BinaryIO]:
        """Open (sidecar, data). A file missing behind the index's back is DataLoss."""
        what = _chunk_name(meta.handle, meta.version)
        try:
            sums_file = open(self._path(meta.handle, meta.version, "sums", meta.tier), "rb")
        except FileNotFoundError:
            raise DataLoss(f"{what}: checksum sidecar is missing") from None
        try:
            return sums_file, open(self.data_path(meta), "rb", buffering=0)
        except FileNotFoundError:
            sums_file.close()
            raise DataLoss(f"{what}: data file is missing") from None

    @staticmethod
    def _load_sums(meta: ChunkMeta, f: BinaryIO) -> tuple[int, ...]:
        """Read and check the block sums (8 bytes per 64 KiB: 8 KiB for a 64 MiB chunk)."""
        what = _chunk_name(meta.handle, meta.version)
        length, checksum = decode_header(f.read(HEADER_SIZE), what)
        if (length, checksum) != (meta.length, meta.checksum):
            raise DataLoss(f"{what}: checksum sidecar no longer matches the index")
        n = _n_blocks(length)
        raw = f.read(8 * n + 1)
        if len(raw) != 8 * n:
            raise DataLoss(f"{what}: checksum sidecar holds {len(raw)} bytes of block sums, "
                           f"expected {8 * n}")
        sums = struct.unpack(f"<{n}Q", raw)
        if chunk_checksum(list(sums)) != checksum:
            raise DataLoss(f"{what}: block sums in the checksum sidecar are corrupt")
        return sums

    @staticmethod
    def _check_data_size(meta: ChunkMeta, f: BinaryIO) -> None:
        size = os.fstat(f.fileno()).st_size
        if size != meta.length:
            raise DataLoss(f"{_chunk_name(meta.handle, meta.version)}: data file has {size} "
                           f"bytes, expected {meta.length}")

    def _stream(self, src: _Source, start: int, end: int) -> Iterator[bytes]:
        """Yield [start, end) block by block, each block checked before any of it leaves."""
        with src.file:
            for block_start, data in self._blocks(src, start, end):
                lo = max(start - block_start, 0)
                hi = min(end - block_start, len(data))
                yield bytes(data) if (lo, hi) == (0, len(data)) else bytes(data[lo:hi])

    def _blocks(self, src: _Source, start: int, end: int) -> Iterator[tuple[int, memoryview]]:
        """Yield (offset, whole block) for the blocks overlapping [start, end), each verified
        against its block sum; DataLoss (replica marked) at the first bad one."""
        for span_start, span in self._spans(src, start, end):
            for at in range(0, len(span), BLOCK_SIZE):
                yield span_start + at, span[at:at + BLOCK_SIZE]

    def _spans(self, src: _Source, start: int, end: int,
               into: bytearray | SpanRing | None = None) -> Iterator[tuple[int, memoryview]]:
        """Yield (offset, whole blocks) for the blocks overlapping [start, end), up to
        SPAN_BLOCKS blocks (hot) or one frame (cold) at a time, read with one system call and
        each block verified against its block sum. At a bad block, the intact blocks before it
        are yielded, then DataLoss is raised (replica marked). `into`: see read_spans."""
        if end <= start:
            return
        first, stop = start // BLOCK_SIZE, _n_blocks(end)
        if src.index is None:
            yield from self._hot_spans(src, first, stop, into)
        else:
            yield from self._cold_spans(src, first, stop)

    def _verified(self, src: _Source, first: int, view: memoryview, want: int,
                  why: str = "") -> Iterator[tuple[int, memoryview]]:
        """Yield the blocks of `view` (block `first` onwards, `want` bytes expected) as one span
        if all are intact, else the intact ones before the first bad block, then DataLoss."""
        sums = src.sums
        for i, at in enumerate(range(0, want, BLOCK_SIZE)):
            block = view[at:at + BLOCK_SIZE]
            size = min(BLOCK_SIZE, want - at)
            if len(block) != size or block_checksum(block) != sums[first + i]:
                if at:
                    yield first * BLOCK_SIZE, view[:at]
                self._bad_block(src.meta, first + i, size, why)
        yield first * BLOCK_SIZE, view[:want]

    def _hot_spans(self, src: _Source, first: int, stop: int,
                   into: bytearray | SpanRing | None = None) -> Iterator[tuple[int, memoryview]]:
        meta, fd = src.meta, src.file.fileno()
        if isinstance(into, SpanRing):
            spans = [(lo, min(min(stop, lo + SPAN_BLOCKS) * BLOCK_SIZE, meta.length)
                      - lo * BLOCK_SIZE) for lo in range(first, stop, SPAN_BLOCKS)]
            at = [(lo * BLOCK_SIZE, want) for lo, want in spans]
            views = self._direct_reads.spans(
                fd, at, into, self._direct_reads.around_cache(meta.handle, meta.version, at))
            try:
                for (lo, want), view in zip(spans, views):
                    yield from self._verified(src, lo, view, want)
            finally:
                views.close()             # waits for reads still writing into the ring
            return
        buffer = memoryview(into) if into is not None else None
        for lo in range(first, stop, SPAN_BLOCKS):
            hi = min(stop, lo + SPAN_BLOCKS)
            want = min(hi * BLOCK_SIZE, meta.length) - lo * BLOCK_SIZE
            if buffer is None:
                view = memoryview(os.pread(fd, want, lo * BLOCK_SIZE))
            else:
                view = buffer[:os.preadv(fd, [buffer[:want]], lo * BLOCK_SIZE)]
            yield from self._verified(src, lo, view, want)

    def _cold_spans(self, src: _Source, first: int, stop: int) -> Iterator[tuple[int, memoryview]]:
        meta, fd, index = src.meta, src.file.fileno(), src.index
        bpf = index.blocks_per_frame
        dctx = zstandard.ZstdDecompressor()
        for frame in range(first // bpf, -(-stop // bpf)):
            offset, size, _ = index.frames[frame]
            lo, hi = max(first, frame * bpf), min(stop, (frame + 1) * bpf)
            try:
                data = cold.decode_frame(dctx, index, frame, os.pread(fd, size, offset))
            except ValueError as why:
                self._bad_block(meta, lo, min(BLOCK_SIZE, meta.length - lo * BLOCK_SIZE),
                                f"cold frame {frame} cannot be decoded: {why}")
            at = (lo - frame * bpf) * BLOCK_SIZE
            want = min(hi * BLOCK_SIZE, meta.length) - lo * BLOCK_SIZE
            yield from self._verified(src, lo, memoryview(data)[at:at + want], want)

    def _bad_block(self, meta: ChunkMeta, block: int, size: int, why: str = "") -> None:
        block_start = block * BLOCK_SIZE
        err = DataLoss(f"{_chunk_name(meta.handle, meta.version)}: block {block} "
                       f"(bytes {block_start}..{block_start + size}) fails its checksum"
                       + (f" ({why})" if why else ""))
        self._found_bad(meta, err)
        raise err


def _write_sidecar(path: str, length: int, checksum: int, sums: tuple[int, ...] | list[int],
                   mtime: float | None = None) -> None:
    """Write and fsync a sidecar; with `mtime`, give it that modification time (a moved chunk
    keeps its publication time)."""
    with open(path, "xb") as f:
        f.write(encode_header(length, checksum))
        f.write(struct.pack(f"<{len(sums)}Q", *sums))
        f.flush()
        if mtime is not None:
            os.utime(f.fileno(), (time.time(), mtime))
        os.fsync(f.fileno())
