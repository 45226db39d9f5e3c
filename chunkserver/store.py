"""The on-disk chunk store of one chunkserver.

Layout under ``root`` (one store per tier; only ``hot`` exists today, a ``cold`` tier is
another ``ChunkStore(root, tier="cold")``)::

    root/<tier>/<xx>/<handle:016x>-<version>.chunk   raw chunk bytes
    root/<tier>/<xx>/<handle:016x>-<version>.sums    checksum sidecar
    root/<tier>/<xx>/<handle:016x>-<version>.bad     corrupt marker (text: time and reason)
    root/tmp/<tier>-<handle:016x>-<version>-<random>.chunk|.sums   writes in progress

``xx`` is the last two hex digits of the handle. The master hands out handles sequentially, so
the low byte spreads chunks evenly over 256 fan-out directories and none of them grows huge.
``tmp/`` is shared by the tiers of one root (a rename must stay on one file system); each store
only clears the temp files of its own tier, so opening one tier never kills another's writes.

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
by its block checksum.

Publishing a chunk: the data and the sidecar are written and fsync'd in ``tmp/``, then renamed
into the tier (data first, sidecar last) and the fan-out directory is fsync'd. A chunk exists
only when both files exist, so start-up deletes a data file without a sidecar (a crash between
the two renames, or during a delete, which unlinks the sidecar first). When several complete
versions of a handle are found (a crash before the old version was removed), the newest wins
and the others are deleted.

Corrupt replicas: any DataLoss that ``read()`` runs into (damaged or missing sidecar, data file
of the wrong size, a block failing its checksum) marks that replica corrupt, in memory and with
a marker file ``<handle:016x>-<version>.bad`` (not fsync'd: losing a mark in a crash only means
the scrubber finds the damage again). Start-up loads the markers of the chunks it keeps and
removes the others. A corrupt replica stays in the index and readable block by block (intact
blocks are still served, verified), so a chunk can be rebuilt from several partly bad replicas;
publishing the same version again (repair in place) or a newer one, or deleting it, clears the
mark.
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
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator

import xxhash

from gfs.checksum import BLOCK_SIZE, ChunkChecksummer, block_checksum, chunk_checksum
from gfs.errors import DataLoss, FailedPrecondition, InvalidArgument, NotFound
from gfs.fsutil import fsync_path

log = logging.getLogger(__name__)

MAGIC = b"GFSS"
FORMAT_VERSION = 1
DEFAULT_MAX_CHUNK_SIZE = 64 * 1024 * 1024
U64_MAX = (1 << 64) - 1

_HEADER_BODY = struct.Struct("<4sHHIQQ")
_HEADER_SUM = struct.Struct("<Q")
HEADER_SIZE = _HEADER_BODY.size + _HEADER_SUM.size
_NAME = re.compile(r"([0-9a-f]{16})-([0-9]+)\.(chunk|sums|bad)")
_TIER = re.compile(r"[a-z][a-z0-9_]*")
_FANOUT = [f"{i:02x}" for i in range(256)]


@dataclass(frozen=True)
class ChunkMeta:
    handle: int
    version: int
    length: int
    checksum: int
    mtime: float    # seconds since the epoch: when the chunk was published


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

    def __init__(self, store: ChunkStore, handle: int, version: int):
        self.handle = handle
        self.version = version
        self.length = 0
        self._store = store
        self._summer = ChunkChecksummer(BLOCK_SIZE)
        prefix = f"{store.tier}-{handle:016x}-{version}-"
        fd, self._data_path = tempfile.mkstemp(dir=store.tmp_dir, prefix=prefix, suffix=".chunk")
        self._sums_path = self._data_path[:-len(".chunk")] + ".sums"
        self._file: BinaryIO | None = os.fdopen(fd, "wb")

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abort()

    @property
    def closed(self) -> bool:
        return self._file is None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append `data`. Past max_chunk_size: InvalidArgument and nothing of `data` is kept."""
        f = self._open_file()
        view = memoryview(data).cast("B")
        if self.length + len(view) > self._store.max_chunk_size:
            raise InvalidArgument(f"{_chunk_name(self.handle, self.version)}: writing "
                                  f"{len(view)} bytes at {self.length} exceeds the maximum "
                                  f"chunk size {self._store.max_chunk_size}")
        f.write(view)
        self._summer.update(view)
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
            f.flush()
            os.fsync(f.fileno())
            f.close()
            self._write_sidecar(checksum)
            meta = self._store._publish(self.handle, self.version, self.length, checksum,
                                        self._data_path, self._sums_path)
        except BaseException:
            self.abort()
            raise
        self._file = None
        return meta

    def abort(self) -> None:
        """Drop the chunk: remove the temp files. Idempotent; a no-op after commit."""
        if self._file is None:
            return
        self._file.close()
        self._file = None
        _unlink_quietly(self._data_path)
        _unlink_quietly(self._sums_path)

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
        blocks = self._summer.blocks
        with open(self._sums_path, "xb") as f:
            f.write(encode_header(self.length, checksum))
            f.write(struct.pack(f"<{len(blocks)}Q", *blocks))
            f.flush()
            os.fsync(f.fileno())


# ---------------------------------------------------------------------------------------------
# The store


class ChunkStore:
    """The chunks of one tier of one chunkserver, with an in-memory index.

    Thread-safe: the index and every change of the published files happen under one lock;
    reads open their files under it (so they always see a matching data/sidecar pair) and then
    stream without it.

    `on_corrupt(handle, version, reason)`, if set, is called (outside the lock, from whichever
    thread found it) each time a replica is newly marked corrupt.
    """

    def __init__(self, root: str, *, tier: str = "hot",
                 max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE):
        if not isinstance(tier, str) or not _TIER.fullmatch(tier) or tier == "tmp":
            raise InvalidArgument(f"tier must be a lower-case name other than 'tmp', "
                                  f"not {tier!r}")
        _check_int("max_chunk_size", max_chunk_size, 1)
        self.root = os.path.abspath(root)
        self.tier = tier
        self.max_chunk_size = max_chunk_size
        self.tier_dir = os.path.join(self.root, tier)
        self.tmp_dir = os.path.join(self.root, "tmp")
        self._lock = threading.Lock()
        self.on_corrupt: Callable[[int, int, str], None] | None = None
        self._corrupt: dict[int, int] = {}          # handle -> version marked corrupt
        self._make_dirs()
        self._clear_tmp()
        self._index: dict[int, ChunkMeta] = self._scan()

    # -- public API ----------------------------------------------------------------------------

    def begin_write(self, handle: int, version: int) -> ChunkWriter:
        """Start receiving a chunk. Refused early if a newer version is already stored."""
        _check_int("handle", handle, 0)
        _check_int("version", version, 0)
        with self._lock:
            self._check_not_stale(handle, version)
        return ChunkWriter(self, handle, version)

    def read(self, handle: int, offset: int = 0, length: int = -1,
             version: int | None = None) -> Iterator[bytes]:
        """Stream bytes [offset, offset + length) of a chunk (length -1: to its end).

        Errors about the request (NotFound, FailedPrecondition for another stored version,
        InvalidArgument) and a damaged or missing file (DataLoss) are raised by this call; a
        damaged data block raises DataLoss from the iterator before any byte of that block is
        yielded. Pieces are at most one block long, and one block is in memory at a time.
        Every DataLoss marks the replica corrupt (see mark_corrupt) before it is raised. A
        replica already marked corrupt is read all the same: its intact blocks are served.
        """
        _check_int("handle", handle, 0)
        _check_int("offset", offset, 0)
        _check_int("length", length, -1)
        if version is not None:
            _check_int("version", version, 0)
        meta: ChunkMeta | None = None
        try:
            with self._lock:
                meta = self._lookup(handle, version)
                end = _range_end(meta, offset, length)
                sums_file, data_file = self._open_files(meta)
            try:
                with sums_file:
                    sums = self._load_sums(meta, sums_file)
                self._check_data_size(meta, data_file)
            except BaseException:
                data_file.close()
                raise
        except DataLoss as err:
            if meta is not None:       # always so: the lookup raises no DataLoss
                self._found_bad(meta, err)
            raise
        return self._stream(meta, data_file, sums, offset, end)

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
        """Delete a chunk; with `version`, only if that is the stored version.

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
            del self._index[handle]
            self._corrupt.pop(handle, None)
            self._remove_files(handle, meta.version)
        return True

    def get(self, handle: int) -> ChunkMeta | None:
        with self._lock:
            return self._index.get(handle)

    def chunks(self) -> list[ChunkMeta]:
        """Every published chunk, by handle."""
        with self._lock:
            return sorted(self._index.values(), key=lambda m: m.handle)

    def usage(self) -> dict[str, int]:
        with self._lock:
            used = sum(m.length for m in self._index.values())
            count = len(self._index)
        st = os.statvfs(self.root)
        return {"used_bytes": used, "chunk_count": count,
                "capacity_bytes": st.f_blocks * st.f_frsize,
                "free_bytes": st.f_bavail * st.f_frsize}

    # -- paths -----------------------------------------------------------------------------------

    def _path(self, handle: int, version: int, kind: str) -> str:
        return os.path.join(self.tier_dir, f"{handle & 0xFF:02x}",
                            f"{handle:016x}-{version}.{kind}")

    def _remove_files(self, handle: int, version: int) -> None:
        """Sidecar first: without it the chunk no longer exists, even if we crash here."""
        _unlink_quietly(self._path(handle, version, "sums"))
        _unlink_quietly(self._path(handle, version, "chunk"))
        _unlink_quietly(self._path(handle, version, "bad"))

    # -- opening ---------------------------------------------------------------------------------

    def _make_dirs(self) -> None:
        os.makedirs(self.tmp_dir, exist_ok=True)
        missing = [d for d in _FANOUT if not os.path.isdir(os.path.join(self.tier_dir, d))]
        for d in missing:
            os.makedirs(os.path.join(self.tier_dir, d), exist_ok=True)
        if missing:
            fsync_path(self.tier_dir)
            fsync_path(self.root)

    def _clear_tmp(self) -> None:
        """Remove this tier's abandoned writes (their writers died with the last process)."""
        for entry in os.scandir(self.tmp_dir):
            if not entry.name.startswith(f"{self.tier}-"):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)

    def _scan(self) -> dict[int, ChunkMeta]:
        """Build the index (and the corrupt marks) from the file names and the sidecar headers
        only."""
        found: dict[int, dict[int, set[str]]] = {}
        for fanout in _FANOUT:
            for entry in os.scandir(os.path.join(self.tier_dir, fanout)):
                m = _NAME.fullmatch(entry.name)
                if m is None or m[1][-2:] != fanout:
                    log.warning("ignoring unexpected file %s", entry.path)
                    continue
                versions = found.setdefault(int(m[1], 16), {})
                versions.setdefault(int(m[2]), set()).add(m[3])
        index = {}
        for handle, versions in found.items():
            meta = self._recover(handle, versions)
            if meta is not None:
                index[handle] = meta
                if "bad" in versions[meta.version]:
                    self._corrupt[handle] = meta.version
        if self._corrupt:
            log.warning("%d chunks are marked corrupt", len(self._corrupt),
                        extra={"fields": {"handles": sorted(self._corrupt)[:50]}})
        return index

    def _recover(self, handle: int, versions: dict[int, set[str]]) -> ChunkMeta | None:
        """Pick the newest intact version of a handle; delete unpublished and superseded files,
        and corrupt markers whose chunk is not kept."""
        kept: ChunkMeta | None = None
        for version in sorted(versions, reverse=True):
            kinds = versions[version] - {"bad"}
            if kinds <= {"chunk"} or kept is not None:
                self._remove_files(handle, version)
            elif kinds == {"chunk", "sums"}:
                kept = self._load_meta(handle, version)
            else:
                log.warning("%s: sidecar without data file; leaving it for inspection",
                            _chunk_name(handle, version))
            if "bad" in versions[version] and (kept is None or kept.version != version):
                _unlink_quietly(self._path(handle, version, "bad"))
        return kept

    def _load_meta(self, handle: int, version: int) -> ChunkMeta | None:
        """Read one sidecar header; None (logged, files left in place) if it is damaged."""
        what = _chunk_name(handle, version)
        try:
            with open(self._path(handle, version, "sums"), "rb") as f:
                length, checksum = decode_header(f.read(HEADER_SIZE), what)
                mtime = os.fstat(f.fileno()).st_mtime
        except (DataLoss, OSError) as e:
            log.warning("%s: not loaded: %s", what, e)
            return None
        return ChunkMeta(handle, version, length, checksum, mtime)

    # -- writing ---------------------------------------------------------------------------------

    def _check_not_stale(self, handle: int, version: int) -> None:
        stored = self._index.get(handle)
        if stored is not None and stored.version > version:
            raise FailedPrecondition(f"chunk {handle:016x}: version {stored.version} is "
                                     f"stored; refusing older version {version}")

    def _publish(self, handle: int, version: int, length: int, checksum: int,
                 data_tmp: str, sums_tmp: str) -> ChunkMeta:
        """Move a written chunk into the tier and the index; drop the version it replaces."""
        data_path = self._path(handle, version, "chunk")
        sums_path = self._path(handle, version, "sums")
        with self._lock:
            self._check_not_stale(handle, version)
            old = self._index.get(handle)
            if old is not None and old.version == version:
                # Same names: unpublish first, or a crash between the renames would pair the
                # new data with the old sidecar (and the old corrupt marker with the new data).
                _unlink_quietly(sums_path)
                _unlink_quietly(self._path(handle, version, "bad"))
            os.rename(data_tmp, data_path)
            os.rename(sums_tmp, sums_path)
            fsync_path(os.path.dirname(data_path))
            meta = ChunkMeta(handle, version, length, checksum, os.stat(sums_path).st_mtime)
            self._index[handle] = meta
            self._corrupt.pop(handle, None)
            if old is not None and old.version != version:
                self._remove_files(handle, old.version)
        return meta

    # -- corrupt marks ---------------------------------------------------------------------------

    def _set_mark(self, meta: ChunkMeta, reason: str) -> bool:
        """Mark a replica that is in the index (lock held). Returns whether it is a new mark."""
        if self._corrupt.get(meta.handle) == meta.version:
            return False
        self._corrupt[meta.handle] = meta.version
        path = self._path(meta.handle, meta.version, "bad")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write(f"{stamp} {reason}\n")
        except OSError as err:
            log.warning("%s: cannot write corrupt marker %s: %s",
                        _chunk_name(meta.handle, meta.version), path, err)
        return True

    def _found_bad(self, meta: ChunkMeta, err: DataLoss) -> None:
        """A read ran into damage: mark the replica, unless it was replaced or deleted since."""
        with self._lock:
            if self._index.get(meta.handle) is not meta:
                return
            new = self._set_mark(meta, str(err))
        if new:
            self._announce(meta, str(err))

    def _announce(self, meta: ChunkMeta, reason: str) -> None:
        log.warning("%s marked corrupt: %s", _chunk_name(meta.handle, meta.version), reason,
                    extra={"fields": {"handle": meta.handle, "version": meta.version}})
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

    def _open_files(self, meta: ChunkMeta) -> tuple[BinaryIO, BinaryIO]:
        """Open (sidecar, data). A file missing behind the index's back is DataLoss."""
        what = _chunk_name(meta.handle, meta.version)
        try:
            sums_file = open(self._path(meta.handle, meta.version, "sums"), "rb")
        except FileNotFoundError:
            raise DataLoss(f"{what}: checksum sidecar is missing") from None
        try:
            return sums_file, open(self._path(meta.handle, meta.version, "chunk"), "rb",
                                   buffering=0)
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

    def _stream(self, meta: ChunkMeta, f: BinaryIO, sums: tuple[int, ...], start: int,
                end: int) -> Iterator[bytes]:
        """Yield [start, end) block by block, each block checked before any of it leaves."""
        with f:
            fd = f.fileno()
            blocks = range(start // BLOCK_SIZE, _n_blocks(end)) if end > start else range(0)
            for block in blocks:
                block_start = block * BLOCK_SIZE
                want = min(BLOCK_SIZE, meta.length - block_start)
                data = os.pread(fd, want, block_start)
                if len(data) != want or block_checksum(data) != sums[block]:
                    err = DataLoss(f"{_chunk_name(meta.handle, meta.version)}: block {block} "
                                   f"(bytes {block_start}..{block_start + want}) fails its "
                                   f"checksum")
                    self._found_bad(meta, err)
                    raise err
                lo = max(start - block_start, 0)
                hi = min(end - block_start, want)
                yield data if (lo, hi) == (0, want) else data[lo:hi]
