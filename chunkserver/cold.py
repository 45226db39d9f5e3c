"""The cold tier's data file: a chunk compressed with zstd in independently decodable frames.

A cold chunk is ``<handle:016x>-<version>.zst`` next to the same checksum sidecar as a hot one
(``.sums``: block sums of the *uncompressed* bytes, so every read and the scrubber check the real
data, and the chunk checksum does not change when a chunk changes tier). The data is cut into
frames of ``blocks_per_frame`` 64 KiB blocks (16: 1 MiB of data per frame; the last frame may be
shorter). Each frame is one complete zstd frame (content size in its header, no zstd checksum:
the block sums do that job) or, when zstd does not shrink it by at least 1/16, the raw bytes
(pass-through: incompressible data costs neither space nor decompression time). A range read
decompresses only the frames that hold its blocks.

File layout (all integers little endian)::

    offset      size  field
         0         4  magic b"GFSZ"
         4         2  format version (1)
         6         2  reserved, 0
         8         4  block size (65536, gfs.checksum.BLOCK_SIZE)
        12         4  blocks per frame (16)
        16         8  chunk length (uncompressed bytes)
        24         8  chunk checksum (the same as in the sidecar)
        32         4  frame count n = ceil(ceil(length / block size) / blocks per frame)
        36         4  reserved, 0
        40      16*n  frame index, one entry per frame:
                        u64 offset of the frame in this file
                        u32 stored size of the frame in bytes
                        u32 flags: bit 0 = raw (stored as is), other bits 0
    40+16*n        8  index checksum: xxh3-64 of bytes 0 .. 40+16*n-1
    48+16*n      ...  the frames, back to back in order (frame 0 starts right after the
                      index checksum, each next one where the previous ends, and the file ends
                      where the last one ends)

The index is validated as a whole (checksum, fields, contiguity, file size) before a byte is
served; a damaged index or header makes the whole replica unreadable (DATA_LOSS, like a damaged
sidecar). A damaged frame fails only its own blocks: zstd refusing it, or a decoded size other
than the frame's, fails the first requested block of that frame; bytes that decode but differ
fail the block sums of exactly the blocks that differ.

The writer reserves the header and index, appends the frames, then fills in the index (the
number of frames follows from the length, known before the first frame is written).
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

import xxhash
import zstandard

from gfs.checksum import BLOCK_SIZE
from gfs.errors import DataLoss, GfsError

MAGIC = b"GFSZ"
FORMAT_VERSION = 1
DEFAULT_BLOCKS_PER_FRAME = 16          # 1 MiB of data per frame
DEFAULT_LEVEL = 3
MAX_BLOCKS_PER_FRAME = 1024            # 64 MiB frames at most (bounds memory per read)
RAW = 1                                # frame flag: stored uncompressed
_KNOWN_FLAGS = RAW

_HEADER = struct.Struct("<4sHHIIQQII")
_ENTRY = struct.Struct("<QII")
_SUM = struct.Struct("<Q")
HEADER_SIZE = _HEADER.size             # 40


def frame_count(length: int, blocks_per_frame: int) -> int:
    blocks = -(-length // BLOCK_SIZE)
    return -(-blocks // blocks_per_frame)


def index_size(n_frames: int) -> int:
    """Bytes of header + frame index + index checksum: where frame 0 starts."""
    return HEADER_SIZE + _ENTRY.size * n_frames + _SUM.size


@dataclass(frozen=True)
class ColdIndex:
    length: int
    checksum: int
    blocks_per_frame: int
    frames: tuple[tuple[int, int, int], ...]     # (offset, stored size, flags) per frame

    @property
    def frame_bytes(self) -> int:
        return self.blocks_per_frame * BLOCK_SIZE

    def frame_length(self, frame: int) -> int:
        """Uncompressed bytes of a frame (the last one may be short)."""
        return min(self.frame_bytes, self.length - frame * self.frame_bytes)

    @property
    def stored_bytes(self) -> int:
        """The size the data file must have."""
        if not self.frames:
            return index_size(0)
        offset, size, _ = self.frames[-1]
        return offset + size


def encode_index(index: ColdIndex) -> bytes:
    body = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, BLOCK_SIZE, index.blocks_per_frame,
                        index.length, index.checksum, len(index.frames), 0)
    body += b"".join(_ENTRY.pack(*f) for f in index.frames)
    return body + _SUM.pack(xxhash.xxh3_64_intdigest(body))


def read_index(fd: int, length: int, checksum: int, what: str) -> ColdIndex:
    """Read and validate the header and frame index of an open cold data file, for a chunk the
    store knows as (length, checksum); DataLoss if anything about it is wrong."""
    head = os.pread(fd, HEADER_SIZE, 0)
    if len(head) != HEADER_SIZE:
        raise DataLoss(f"{what}: cold data file is truncated ({len(head)} header bytes)")
    magic, fmt, _r1, block_size, bpf, h_length, h_checksum, n, _r2 = _HEADER.unpack(head)
    if magic != MAGIC or fmt != FORMAT_VERSION or block_size != BLOCK_SIZE or \
            not 1 <= bpf <= MAX_BLOCKS_PER_FRAME or n != frame_count(length, bpf):
        raise DataLoss(f"{what}: cold data file header is corrupt or unsupported "
                       f"(magic {magic!r}, format {fmt}, block size {block_size}, "
                       f"{bpf} blocks per frame, {n} frames)")
    rest_size = _ENTRY.size * n + _SUM.size
    rest = os.pread(fd, rest_size, HEADER_SIZE)
    if len(rest) != rest_size:
        raise DataLoss(f"{what}: cold data file is truncated inside its frame index")
    body = head + rest[:-_SUM.size]
    (stored_sum,) = _SUM.unpack(rest[-_SUM.size:])
    if xxhash.xxh3_64_intdigest(body) != stored_sum:
        raise DataLoss(f"{what}: cold frame index is corrupt")
    if (h_length, h_checksum) != (length, checksum):
        raise DataLoss(f"{what}: cold data file is of another chunk (length {h_length}, "
                       f"checksum {h_checksum:016x})")
    frames = tuple(_ENTRY.iter_unpack(rest[:-_SUM.size]))
    index = ColdIndex(length, checksum, bpf, frames)
    expect = index_size(n)
    for i, (offset, size, flags) in enumerate(frames):
        if offset != expect or flags & ~_KNOWN_FLAGS or \
                (flags & RAW and size != index.frame_length(i)):
            raise DataLoss(f"{what}: cold frame index entry {i} is inconsistent")
        expect += size
    file_size = os.fstat(fd).st_size
    if file_size != index.stored_bytes:
        raise DataLoss(f"{what}: cold data file has {file_size} bytes, expected "
                       f"{index.stored_bytes}")
    return index


def decode_frame(dctx: zstandard.ZstdDecompressor, index: ColdIndex, frame: int,
                 payload: bytes) -> bytes:
    """The uncompressed bytes of one frame, or ValueError (with the reason) if it cannot be
    decoded to exactly the frame's size. The caller still checks the block sums."""
    _, size, flags = index.frames[frame]
    want = index.frame_length(frame)
    if len(payload) != size:
        raise ValueError(f"read {len(payload)} of its {size} bytes")
    if flags & RAW:
        return payload
    try:
        declared = zstandard.frame_content_size(payload)
        if declared != want:
            raise ValueError(f"zstd frame declares {declared} bytes, expected {want}")
        data = dctx.decompress(payload, max_output_size=want, allow_extra_data=False)
    except zstandard.ZstdError as err:
        raise ValueError(f"zstd: {err}") from None
    if len(data) != want:
        raise ValueError(f"decompressed to {len(data)} bytes, expected {want}")
    return data


class ColdFileWriter:
    """Writes one cold data file into an open (empty) file: add() each frame's uncompressed
    bytes in order, then finish(). Every compressed frame is decompressed again and compared
    with its input before it is written, so a copy that reaches the disk decodes correctly.
    Not thread-safe; one per move."""

    def __init__(self, f: BinaryIO, length: int, checksum: int,
                 blocks_per_frame: int = DEFAULT_BLOCKS_PER_FRAME, level: int = DEFAULT_LEVEL):
        self._f = f
        self._index = ColdIndex(length, checksum, blocks_per_frame, ())
        self._n = frame_count(length, blocks_per_frame)
        self._frames: list[tuple[int, int, int]] = []
        self._offset = index_size(self._n)
        self._cctx = zstandard.ZstdCompressor(level=level, write_checksum=False,
                                              write_content_size=True)
        self._dctx = zstandard.ZstdDecompressor()
        f.seek(self._offset)
        self.raw_frames = 0

    def add(self, data: bytes) -> None:
        i = len(self._frames)
        if i >= self._n or len(data) != self._index.frame_length(i):
            raise GfsError(f"cold writer: frame {i} of {len(data)} bytes does not fit "
                           f"a {self._index.length}-byte chunk")
        payload = self._cctx.compress(data)
        flags = 0
        if len(payload) > len(data) - len(data) // 16:
            payload, flags = data, RAW          # does not shrink enough: pass through
            self.raw_frames += 1
        else:
            check = self._dctx.decompress(payload, max_output_size=len(data))
            if check != data:
                raise GfsError(f"cold writer: frame {i} does not decompress to its input")
        self._f.write(payload)
        self._frames.append((self._offset, len(payload), flags))
        self._offset += len(payload)

    def finish(self) -> int:
        """Write the index, flush and fsync; return the file size."""
        if len(self._frames) != self._n:
            raise GfsError(f"cold writer: {len(self._frames)} of {self._n} frames written")
        index = ColdIndex(self._index.length, self._index.checksum,
                          self._index.blocks_per_frame, tuple(self._frames))
        self._f.seek(0)
        self._f.write(encode_index(index))
        self._f.flush()
        os.fsync(self._f.fileno())
        return index.stored_bytes
