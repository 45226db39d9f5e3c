"""mfusepy's FUSE, with each read copied straight into libfuse's reply buffer.

mfusepy's own read callback asks the operations for a bytes object and copies it into the buffer
libfuse hands over: for a read served from the block cache that is a copy to make the bytes (a
join or a slice) and a second one into the buffer. Here the operations' `read_into` fills the
buffer itself, one copy from each cached block."""
from __future__ import annotations

import ctypes

import mfusepy


class Fuse(mfusepy.FUSE):
    """`mfusepy.FUSE` for operations that have `read_into(fh, out, offset) -> int` (and a `read`,
    which is what makes mfusepy register the read callback)."""

    def read(self, path, buf, size: int, offset: int, fip) -> int:
        if not size:
            return 0
        out = (ctypes.c_char * size).from_address(ctypes.addressof(buf.contents))
        return self.operations.read_into(fip.contents.fh, memoryview(out).cast("B"), offset)
