"""Helpers for tests that inspect or damage chunk files on disk."""
from __future__ import annotations

import os


def files_under(path) -> list[str]:
    """Names of every file below `path`, sorted."""
    return sorted(f for _, _, names in os.walk(path) for f in names)


def flip_bit(path, offset: int, bit: int = 3) -> None:
    """Flip one bit of the byte at `offset` in the file at `path`."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))
