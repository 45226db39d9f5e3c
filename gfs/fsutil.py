"""File-system helpers: durability (shared by the journal, the state store and the chunk store),
whole positional writes, and freeing a file's bytes in place (the mount's spool)."""
from __future__ import annotations

import os


def pwrite_all(fd: int, data, pos: int) -> None:
    """Write all of `data` (any buffer) at offset `pos` of `fd`, however short each write."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        view, pos = view[n:], pos + n


def fsync_path(path: str) -> None:
    """fsync a file or a directory by path (for a directory: makes the creations, renames and
    deletions inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durable(path: str) -> None:
    """os.makedirs(path, exist_ok=True), then fsync the parent of every directory it created:
    a new directory entry survives a power loss only once its parent directory is fsync'd."""
    path = os.path.abspath(path)
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    if missing:
        os.makedirs(missing[0], exist_ok=True)
    for created in reversed(missing):
        fsync_path(os.path.dirname(created))


_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
_libc = None


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Free the bytes [offset, offset+length) of a file, keeping its size (they read as zeros
    afterwards): dirty pages there are dropped before they are ever written to the disk. False
    where the file system (or the platform) cannot, which callers treat as "kept as it was"."""
    global _libc
    if length <= 0:
        return True
    try:
        if _libc is None:
            import ctypes
            import ctypes.util
            _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64,
                                        ctypes.c_int64]
        return _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE,
                               offset, length) == 0
    except (OSError, AttributeError, TypeError):
        return False
