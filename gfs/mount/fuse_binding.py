"""mfusepy's FUSE, with reads copied straight into libfuse's reply buffer and writes taken
straight from libfuse's request buffer.

mfusepy's own read callback asks the operations for a bytes object and copies it into the buffer
libfuse hands over: for a read served from the block cache that is a copy to make the bytes (a
join or a slice) and a second one into the buffer. Here the operations' `read_into` fills the
buffer itself, one copy from each cached block. Its write callback copies the request's bytes
into a bytes object first; here the operations get a view of libfuse's buffer, valid only
during the call (the mount writes it to its spool at once)."""
from __future__ import annotations

import ctypes

import mfusepy


class Fuse(mfusepy.FUSE):
    """`mfusepy.FUSE` for operations that have `read_into(fh, out, offset) -> int` (and a `read`,
    which is what makes mfusepy register the read callback) and whose `write` takes a
    memoryview it does not keep."""

    def read(self, path, buf, size: int, offset: int, fip) -> int:
        if not size:
            return 0
        return self.operations.read_into(fip.contents.fh, _view(buf, size), offset)

    def write(self, path, buf, size: int, offset: int, fip) -> int:
        return self.operations.write(None, _view(buf, size), offset, fip.contents.fh)


def _view(buf, size: int) -> memoryview:
    """The `size` bytes libfuse's buffer `buf` points at, without a copy."""
    return memoryview((ctypes.c_char * size).from_address(ctypes.addressof(buf.contents))).cast("B")
