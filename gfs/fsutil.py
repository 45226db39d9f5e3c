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
