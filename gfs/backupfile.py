"""The metadata backup file format, shared by the client that writes it (`gfs admin snapshot
save`), the master that streams it and `restore` (master/backup.py); docs/disaster-recovery.md.

A backup file is MAGIC, a 4-byte length, a JSON header (format, applied_index, created_ms,
size, sha256), then `size` bytes: a compacted copy of the metadata LMDB (data.mdb), checksummed
as a whole with SHA-256.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from typing import BinaryIO

from gfs.errors import DataLoss, InvalidArgument

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
