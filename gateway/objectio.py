"""Moving object bytes between HTTP exchanges and gfs, for the gateway's built-in apps (the
plain REST API, the S3 API): what both need and neither should write twice.

- `upload(ex, client, path, ...)`: the request body becomes a gfs file as it arrives, never
  held whole in memory (a blocking reader in a worker thread pulls pieces off the event loop;
  the HTTP layer's bounded body buffer pauses the client meanwhile). Nothing appears unless the
  whole body arrived and every chunk is durable (gfs `put` semantics).
- `download(ex, client, info, first, end)`: a byte range of a gfs file into the response body
  (the response head is the caller's), in order, with the HTTP layer's backpressure.
- `parse_range(header, size)`: one HTTP byte range (RFC 9110 section 14).
- `http_status(err)`: the HTTP status that fits a gfs error.

The gfs client is synchronous; its calls run in `OFFLOAD`, a thread pool of its own, so that
long uploads do not starve the event loop's default executor.
"""
from __future__ import annotations

import asyncio
import io
import re
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, TypeVar

from gateway.http.exchange import Exchange
from gfs.client import Client, FileInfo
from gfs.errors import DeadlineExceeded, GfsError, InvalidArgument
from gfs.transfer import PIECE_SIZE

T = TypeVar("T")
OFFLOAD = ThreadPoolExecutor(max_workers=64, thread_name_prefix="objectio")
# The longest a worker thread waits for the event loop to hand over or take one piece (the
# HTTP layer closes a connection idle for 60 s, which ends the wait sooner; this bound is for an
# event loop that stopped, so that no thread waits forever).
LOOP_WAIT_S = 180.0

HTTP_STATUS = {
    "INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "FAILED_PRECONDITION": 409,
    "RESOURCE_EXHAUSTED": 507, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504,
    "DATA_LOSS": 500, "INTERNAL": 500,
}


def http_status(err: GfsError) -> int:
    """The HTTP status for a gfs error (quota: 507 Insufficient Storage)."""
    return HTTP_STATUS.get(err.code, 500)


def _on_loop(coroutine, loop: asyncio.AbstractEventLoop):
    """Run `coroutine` on the event loop from a worker thread; its result or exception."""
    future = asyncio.run_coroutine_threadsafe(coroutine, loop)
    try:
        return future.result(LOOP_WAIT_S)
    except FutureTimeout:
        future.cancel()
        raise DeadlineExceeded(f"the connection moved nothing for {LOOP_WAIT_S:g} s") from None


async def offload(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking gfs call in OFFLOAD."""
    return await asyncio.get_running_loop().run_in_executor(OFFLOAD, lambda: fn(*args, **kwargs))


# --- ranges ------------------------------------------------------------------------------------

class MalformedRange(ValueError):
    """A `bytes=` Range that does not parse, or asks for several ranges (not served)."""


class UnsatisfiableRange(ValueError):
    """A well-formed range that starts past the end (416, with `Content-Range: bytes */SIZE`)."""


_RANGE = re.compile(r"(\d*)-(\d*)")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first byte, end exclusive) of a single `bytes=` range over `size` bytes; None when there
    is none, or its unit is not bytes (ignored, as RFC 9110 requires)."""
    if header is None:
        return None
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    if "," in spec:
        raise MalformedRange("multiple ranges are not supported: ask for one range")
    m = _RANGE.fullmatch(spec.strip())
    if m is None or m.group(1) == m.group(2) == "":
        raise MalformedRange(f"malformed range {header.strip()[:80]!r} (bytes=FIRST-LAST, "
                             "bytes=FIRST- or bytes=-SUFFIX)")
    first, last = m.group(1), m.group(2)
    if first == "":                               # the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise UnsatisfiableRange(f"no bytes in range {header.strip()[:80]!r} of {size} bytes")
        return max(0, size - suffix), size
    start = int(first)
    if last and int(last) < start:
        raise MalformedRange(f"malformed range {header.strip()[:80]!r}: the last byte is before "
                             "the first")
    if start >= size:
        raise UnsatisfiableRange(f"range {header.strip()[:80]!r} starts at or past the end "
                                 f"({size} bytes)")
    return start, min(size, int(last) + 1) if last else size


def content_range(first: int, end: int, size: int) -> str:
    return f"bytes {first}-{end - 1}/{size}"


# --- request body -> gfs -----------------------------------------------------------------------

class _BodyReader(io.RawIOBase):
    """The request body as a blocking stream, for a worker thread: each read waits for the next
    piece from the event loop (b'' at the end; the exchange's errors are raised). A body that
    does not match `expected` bytes fails the read, so the upload is never committed."""

    def __init__(self, ex: Exchange, loop: asyncio.AbstractEventLoop, expected: int | None):
        self._ex, self._loop, self._expected = ex, loop, expected
        self._left = memoryview(b"")
        self.received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self._left:
            self._left = memoryview(_on_loop(self._ex.read(), self._loop))
            self.received += len(self._left)
            self._check_length()
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n

    def _check_length(self) -> None:
        if self._expected is None:
            return
        if self.received > self._expected:
            raise InvalidArgument(f"the body is longer than its Content-Length "
                                  f"({self._expected} bytes)")
        if not self._left and self.received < self._expected:
            raise InvalidArgument(f"the body ended after {self.received} of {self._expected} "
                                  "bytes (Content-Length)")


async def upload(ex: Exchange, client: Client, path: str, *, overwrite: bool = True,
                 expected_size: int | None = None, **put_kwargs: Any) -> FileInfo:
    """Stream the request body into the gfs file `path` (created, or replaced with
    `overwrite`); `expected_size`: the Content-Length, checked against what arrived. Raises the
    gfs error, or the exchange's (ClientGone, BodyTooLarge); nothing is committed then."""
    stream = io.BufferedReader(_BodyReader(ex, asyncio.get_running_loop(), expected_size),
                               buffer_size=PIECE_SIZE)
    return await offload(client.put, stream, path, overwrite=overwrite, **put_kwargs)


# --- gfs -> response body ----------------------------------------------------------------------

class _ResponseWriter:
    """A blocking, in-order sink for `Client.download` in a worker thread: each write waits until
    the event loop has handed the bytes to the connection (its backpressure included)."""

    def __init__(self, ex: Exchange, loop: asyncio.AbstractEventLoop):
        self._ex, self._loop = ex, loop

    def write(self, data) -> int:
        piece = bytes(data)               # the reader may reuse its buffer once this returns
        _on_loop(self._ex.write(piece), self._loop)
        return len(piece)

    def flush(self) -> None:
        pass


async def download(ex: Exchange, client: Client, info: FileInfo, first: int, end: int) -> int:
    """Write bytes [first, end) of the file `info` (stat'ed for reading) to the response body,
    whose head the caller has sent; returns the bytes written. On an error mid-way the caller
    must abort the exchange (the client must not take a short body for the whole)."""
    writer = _ResponseWriter(ex, asyncio.get_running_loop())
    return await offload(client.download, info, writer, offset=first, length=end - first,
                         parallel=1)
