"""File-system durability helpers shared by the journal, the state store and the chunk store."""
from __future__ import annotations

import os


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
