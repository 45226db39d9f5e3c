"""The Raft snapshot file: a header, then the LMDB store image, with a checksum of the image.

    GFSSNAP2 | L: u64 | N: u64 | D: 16 bytes | header: L bytes | image: N bytes

`header` is pysyncobj's pickle of (last entry, previous entry, cluster, members); `image` is a
compacted LMDB copy (data.mdb); `D` is the xxh3-128 of the image (big endian, as xxhash's
`digest()`), the hash family gfs already checksums data with (gfs/checksum.py): it runs at
tens of GB/s, so hashing a piece costs far less than receiving it. The writer hashes the image
as it copies it (`write`: LMDB copies into a pipe, this side hashes and writes to the file) and
fills in N and D once the copy is complete; a follower hashes the image as the pieces arrive
(master/snapshot_receiver.py), the leader as they go out (master/snapshot_sender.py); N and D
are checked before an image is used and before the last piece is sent (`check_image`).

Files written before the checksum (`GFSSNAP1 | L: u64 | header | image`) are still read: a
cluster upgraded in place has them. Their image is checked only by its size against its LMDB
meta page and by LMDB itself, and `check_image` says so in the log.
"""
from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
from typing import Callable, NamedTuple

import pysyncobj.pickle as sopickle
import xxhash

from gfs.errors import DataLoss

log = logging.getLogger(__name__)

MAGIC_V1 = b"GFSSNAP1"          # no checksum of the image (older masters)
MAGIC = b"GFSSNAP2"
_U64 = struct.Struct("<Q")
DIGEST_BYTES = 16
_V1_HEAD = len(MAGIC) + _U64.size                               # magic, L
_V2_HEAD = len(MAGIC) + 2 * _U64.size + DIGEST_BYTES            # magic, L, N, D
_IMAGE_FIELDS = len(MAGIC) + _U64.size                          # where N and D are
PIECE = 1 << 20
MAX_HEADER = 64 << 20           # a header this long is a damaged length, not a header
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class Image(NamedTuple):
    """The length and xxh3-128 digest of a store image."""
    length: int
    digest: bytes


class Header(NamedTuple):
    last_entry: tuple
    prev_entry: tuple
    members: dict[str, str]     # raft address -> gRPC address, as of last_entry
    offset: int                 # where the image starts
    image: Image | None         # what the image must be (None: an old file, no checksum)


class ImageHash:
    """The Image of bytes fed in pieces."""

    def __init__(self) -> None:
        self._hash = xxhash.xxh3_128()
        self.length = 0

    def update(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self.length += len(data)

    def result(self) -> Image:
        return Image(self.length, self._hash.digest())


def prefix_length(data: bytes | bytearray) -> int | None:
    """How long the part before the image is of a file that starts with `data`; None while
    `data` is too short to tell. ValueError if it is not a snapshot."""
    magic = bytes(data[:len(MAGIC)])
    if len(magic) < len(MAGIC):
        if not (MAGIC.startswith(magic) or MAGIC_V1.startswith(magic)):
            raise ValueError("not a gfs snapshot")
        return None
    head = {MAGIC: _V2_HEAD, MAGIC_V1: _V1_HEAD}.get(magic)
    if head is None:
        raise ValueError("not a gfs snapshot")
    if len(data) < head:
        return None
    (length,) = _U64.unpack_from(data, len(MAGIC))
    if length > MAX_HEADER:
        raise ValueError(f"not a whole gfs snapshot: a header of {length} bytes")
    return head + length


def read_header(path: str) -> Header:
    """The header of snapshot file `path`. ValueError if it is not a snapshot or its header is
    damaged (cut off, unreadable)."""
    with open(path, "rb") as f:
        offset = prefix_length(f.read(_V2_HEAD))
        if offset is not None:
            f.seek(0)
            prefix = f.read(offset)
    if offset is None or len(prefix) != offset:
        raise ValueError(f"{path} is not a whole gfs snapshot: it ends inside its header")
    return parse_prefix(prefix, path)


def parse_prefix(prefix: bytes | bytearray, name: str) -> Header:
    """The Header of a snapshot file whose part before the image is `prefix` (all of it:
    prefix_length bytes). ValueError if its pickled fields are damaged."""
    image = None
    start = _V1_HEAD
    if prefix.startswith(MAGIC):
        (length,) = _U64.unpack_from(prefix, _IMAGE_FIELDS)
        image = Image(length, bytes(prefix[_IMAGE_FIELDS + _U64.size:_V2_HEAD]))
        start = _V2_HEAD
    try:
        fields = sopickle.loads(bytes(prefix[start:]))
        last_entry, prev_entry, cluster = fields[:3]
        # Snapshots written before membership changes carry pysyncobj's node set only.
        members = fields[3] if len(fields) > 3 else {n.address: "" for n in cluster}
    except Exception as exc:        # whatever a damaged pickle raises
        raise ValueError(f"{name} has a damaged header: {exc!r}") from None
    return Header(last_entry, prev_entry, members, len(prefix), image)


class SnapshotStream:
    """A snapshot file fed in pieces, as it is sent or received: the part before the image is
    kept (`prefix`), the image is hashed as it passes (`image`)."""

    def __init__(self) -> None:
        self.prefix = bytearray()
        self._prefix_len: int | None = None
        self._hash = ImageHash()

    @property
    def in_image(self) -> bool:
        """Has the whole prefix arrived (what comes next is image)?"""
        return self._prefix_len is not None and len(self.prefix) >= self._prefix_len

    def take(self, data: bytes) -> bytes:
        """The part of the next piece `data` that is image (hashed). ValueError if the file is
        not a gfs snapshot."""
        if self.in_image:
            self._hash.update(data)
            return data
        self.prefix += data
        if self._prefix_len is None:
            self._prefix_len = prefix_length(self.prefix)
        if not self.in_image:
            return b""
        body = bytes(self.prefix[self._prefix_len:])
        del self.prefix[self._prefix_len:]
        self._hash.update(body)
        return body

    def image(self) -> Image:
        """The length and digest of the image fed so far."""
        return self._hash.result()


def write(path: str, header: bytes, copy_to_fd: Callable[[int], None]) -> Image:
    """Write a snapshot file: `header` (the pickled fields) and the image that
    `copy_to_fd(fd)` writes (an LMDB copy), hashed on its way to the file; fsync'd."""
    with open(path, "wb") as f:
        f.write(MAGIC + _U64.pack(len(header)) + bytes(_U64.size + DIGEST_BYTES)
                + header)
        image = _copy_hashed(f, copy_to_fd)
        f.flush()
        os.pwrite(f.fileno(), _U64.pack(image.length) + image.digest, _IMAGE_FIELDS)
        os.fsync(f.fileno())
    return image


def _copy_hashed(f, copy_to_fd: Callable[[int], None]) -> Image:
    """Run `copy_to_fd` into a pipe in a thread of its own (LMDB releases the GIL while it
    copies) and write what comes out to `f`, hashing it: the image is read once, as it is
    written, never again from the file."""
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, _F_SETPIPE_SZ, PIECE)
    except OSError:                 # a smaller pipe only means shorter reads
        pass
    failed: list[BaseException] = []

    def produce() -> None:
        try:
            copy_to_fd(w)
        except BaseException as exc:
            failed.append(exc)
        finally:
            os.close(w)

    producer = threading.Thread(target=produce, name="raft-snapshot-copy", daemon=True)
    try:
        producer.start()
    except BaseException:
        os.close(w)
        os.close(r)
        raise
    hashed, error = ImageHash(), None
    buffer = bytearray(PIECE)
    view = memoryview(buffer)
    with open(r, "rb", buffering=0) as src:
        while count := src.readinto(buffer):
            if error is None:       # after a failed write, drain: the copy must finish
                try:
                    f.write(view[:count])
                    hashed.update(view[:count])
                except BaseException as exc:
                    error = exc
    producer.join()
    if error is not None:
        raise error
    if failed:
        raise failed[0]
    return hashed.result()


def copy_image(src, dst_path: str) -> Image:
    """Copy the rest of the open snapshot file `src` (positioned at its image) to `dst_path`,
    fdatasync'd, hashing it on the way."""
    hashed = ImageHash()
    with open(dst_path, "wb") as dst:
        while piece := src.read(PIECE):
            dst.write(piece)
            hashed.update(piece)
        dst.flush()
        os.fdatasync(dst.fileno())
    return hashed.result()


def check_image(header: Header, got: Image, name: str) -> None:
    """DataLoss unless `got` (what was received or read) is the image `header` describes."""
    want = header.image
    if want is None:
        log.warning("%s is a snapshot in the old format (GFSSNAP1): its image has no checksum "
                    "and is checked only by its size and by LMDB", name)
        return
    if got.length != want.length:
        raise DataLoss(f"{name}: the snapshot's store image is {got.length} bytes where its "
                       f"header says {want.length} (cut off or padded)")
    if got.digest != want.digest:
        raise DataLoss(f"{name}: the snapshot's store image does not match its checksum "
                       f"(xxh3-128 {got.digest.hex()}, header {want.digest.hex()}): damaged")


# --- an LMDB image's own idea of its size ------------------------------------------------------
# LMDB's meta page (lmdb.h/mdb.c, 64-bit): a 16-byte page header, then MDB_meta: magic u32,
# version u32, address u64, mapsize u64, two MDB_db records of 48 bytes (the page size is the
# first one's leading u32), last_pg u64, txnid u64. Pages 0 and 1 are meta pages; the one with
# the higher txnid is current.
_PAGE_HEADER = 16
_META = struct.Struct("<IIQQI44x48xQQ")
_LMDB_MAGIC = 0xBEEFC0DE


def image_needs(head: bytes) -> int:
    """How many bytes the LMDB image starting with `head` (its first two pages, or as much as
    there is) says it has; DataLoss if its meta pages are not there or not LMDB's."""
    metas = []
    offset = 0
    for _ in range(2):
        if len(head) < offset + _PAGE_HEADER + _META.size:
            raise DataLoss(f"not a whole metadata store image: {len(head)} bytes, its meta "
                           "pages cut off")
        magic, _, _, _, psize, last_pg, txnid = _META.unpack_from(head, offset + _PAGE_HEADER)
        if magic != _LMDB_MAGIC or psize < 512 or psize & (psize - 1):
            raise DataLoss("not a metadata store image: no LMDB meta page")
        metas.append((txnid, last_pg, psize))
        offset = psize
    _, last_pg, psize = max(metas)
    return (last_pg + 1) * psize


def check_file(path: str) -> Header:
    """Check a whole snapshot file: its header; its image's length and checksum (in the new
    format) or its length against its meta page (in both). Returns the header; ValueError or
    DataLoss if it is damaged."""
    header = read_header(path)
    size = os.path.getsize(path) - header.offset
    with open(path, "rb") as f:
        f.seek(header.offset)
        first = f.read(PIECE)
        needed = image_needs(first)
        if header.image is not None:
            hashed = ImageHash()
            hashed.update(first)
            while piece := f.read(PIECE):
                hashed.update(piece)
            check_image(header, hashed.result(), path)
    if size < needed:
        raise DataLoss(f"{path}: the snapshot's store image is {size} bytes where its meta page "
                       f"needs {needed} (cut off)")
    return header
