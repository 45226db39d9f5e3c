"""Snapshot files (master/snapshot_format.py) made up for tests, whole or damaged."""
from __future__ import annotations

import struct

import pysyncobj.pickle as sopickle

from master.snapshot_format import MAGIC, MAGIC_V1, ImageHash


def image_of(data: bytes):
    hashed = ImageHash()
    hashed.update(data)
    return hashed.result()


def header_of(index: int = 8) -> bytes:
    """The pickled fields of a snapshot at log entry `index` (a group with no members)."""
    return sopickle.dumps(((b"\x01", index, 2), (b"\x01", index - 1, 2), set(), {}))


def snapshot_file(header: bytes, image: bytes, checksum: bytes | None = None) -> bytes:
    """A snapshot file of `header` and `image`; `checksum`: the digest its header claims
    (default: the image's)."""
    digest = image_of(image).digest if checksum is None else checksum
    return MAGIC + struct.pack("<QQ", len(header), len(image)) + digest + header + image


def old_snapshot_file(header: bytes, image: bytes) -> bytes:
    """The format before image checksums (GFSSNAP1)."""
    return MAGIC_V1 + struct.pack("<Q", len(header)) + header + image


def flipped(data: bytes, at: int) -> bytes:
    """`data` with one bit flipped in the byte at `at` (same length)."""
    return data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:]
