"""Metadata backups: the file `gfs admin snapshot save` writes and `gfs admin snapshot restore`
turns into a new master's data directory (docs/disaster-recovery.md).

A backup file is MAGIC, a 4-byte length, a JSON header (format, applied_index, created_ms,
size, sha256), then `size` bytes: a compacted copy of the metadata LMDB (data.mdb), checksummed
as a whole with SHA-256. A restored store starts a new Raft log (its applied index is reset to
0: the new group's first entry is 1); it keeps every chunk handle, version and counter, so the
chunks the chunkservers hold match it again, and new handles never collide with old ones.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from typing import BinaryIO, Iterator

from gfs.errors import AlreadyExists, DataLoss, InvalidArgument
from gfs.fsutil import fsync_path, makedirs_durable

MAGIC = b"GFSMETA\x01"
FORMAT = 1
PIECE = 1 << 20
_LEN = struct.Struct("<I")


def header_bytes(header: dict) -> bytes:
    body = json.dumps(header, sort_keys=True).encode()
    return MAGIC + _LEN.pack(len(body)) + body


def read_header(f: BinaryIO, name: str = "backup") -> dict:
    """The header of a backup file open at its start (left positioned at the LMDB bytes)."""
    if f.read(len(MAGIC)) != MAGIC:
        raise InvalidArgument(f"{name} is not a gfs metadata backup (bad magic)")
    raw = f.read(_LEN.size)
    if len(raw) != _LEN.size:
        raise DataLoss(f"{name} is truncated (no header)")
    (length,) = _LEN.unpack(raw)
    if length > 1 << 16:
        raise DataLoss(f"{name} has a corrupt header (length {length})")
    try:
        header = json.loads(f.read(length))
    except ValueError:
        raise DataLoss(f"{name} has a corrupt header") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise InvalidArgument(f"{name}: unsupported backup format {header.get('format')!r}"
                              if isinstance(header, dict) else f"{name} has a corrupt header")
    for key in ("applied_index", "created_ms", "size", "sha256"):
        if key not in header:
            raise DataLoss(f"{name} has a corrupt header (no {key})")
    return header


def make_header(applied_index: int, created_ms: int, size: int, sha256: str) -> dict:
    return {"format": FORMAT, "applied_index": applied_index, "created_ms": created_ms,
            "size": size, "sha256": sha256}


def digest_file(path: str) -> tuple[int, str]:
    """(size, SHA-256 hex) of a file."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while piece := f.read(PIECE):
            h.update(piece)
            size += len(piece)
    return size, h.hexdigest()


def pieces(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while piece := f.read(PIECE):
            yield piece


def verify_and_extract(path: str, mdb_out: str) -> dict:
    """Check a backup file whole (header, length, SHA-256) while copying its LMDB bytes to
    `mdb_out` (fsync'd); DataLoss on any mismatch. Returns the header."""
    with open(path, "rb") as f, open(mdb_out, "wb") as out:
        header = read_header(f, path)
        h, size = hashlib.sha256(), 0
        while piece := f.read(PIECE):
            h.update(piece)
            size += len(piece)
            out.write(piece)
        out.flush()
        os.fsync(out.fileno())
    if size != header["size"]:
        raise DataLoss(f"{path} is truncated or padded: {size} bytes of metadata, "
                       f"the header says {header['size']}")
    if h.hexdigest() != header["sha256"]:
        raise DataLoss(f"{path} is corrupt: its SHA-256 does not match its header")
    return header


def restore(path: str, data_dir: str, force: bool = False) -> dict:
    """Make `data_dir` a master data directory holding the backup's metadata and an empty Raft
    journal (a new group starts from it). Refuses a directory that already holds a master's
    state unless `force` (which replaces it). Returns the backup's header."""
    from master.state import MetadataState
    meta, raft = os.path.join(data_dir, "meta"), os.path.join(data_dir, "raft")
    existing = [d for d in (meta, raft) if os.path.exists(d) and os.listdir(d)]
    if existing and not force:
        raise AlreadyExists(f"{data_dir} already holds a master's state ({', '.join(existing)});"
                            " restore into an empty directory, or give --force to replace it")
    makedirs_durable(data_dir)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".restore-") as tmp:
        mdb = os.path.join(tmp, "data.mdb")
        header = verify_and_extract(path, mdb)
        MetadataState.install_copy(mdb, meta)
    with MetadataState(meta) as state:
        state.start_new_log()
    if os.path.exists(raft):
        shutil.rmtree(raft)
    makedirs_durable(raft)
    fsync_path(data_dir)
    return header
