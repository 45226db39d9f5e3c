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
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, AsyncIterator, Callable, TypeVar

from gateway.http.exchange import Exchange
from gfs.client import Client, FileInfo
from gfs.errors import DeadlineExceeded, GfsError, InvalidArgument

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


_PLAIN_RANGE = re.compile(r"bytes=\s*(\d+)-(\d*)\s*")


def range_span(header: str | None) -> tuple[int, int] | None:
    """The bytes a `bytes=FIRST-LAST` or `bytes=FIRST-` Range can ask for, known before the
    object's size is: `(offset, length)` (-1: to the end) to stat it with, so the masters send
    only those chunks; None (the whole chunk list) for anything else — no range, a suffix, a
    list, a malformed one — which the range parsers then judge against the real size."""
    m = _PLAIN_RANGE.fullmatch(header) if header else None
    if m is None:
        return None
    first = int(m.group(1))
    if not m.group(2):
        return first, -1
    last = int(m.group(2))
    return (first, last - first + 1) if last >= first else None


def content_range(first: int, end: int, size: int) -> str:
    return f"bytes {first}-{end - 1}/{size}"


# --- request body -> gfs -----------------------------------------------------------------------

class BodySource(io.BufferedIOBase):
    """A request body as a blocking, read-only stream for the gfs client's upload threads,
    over `pieces`, an async iterator on `loop` (the exchange's body, decoded as the app
    needs). `read(n)` returns n bytes except at the end; `read_pieces(n)` the same bytes as the
    pieces they came in (what `Client.put` asks for: no joining copy). Each call gathers what
    it needs on the loop in one hand-over: one thread wake-up per MiB, not per socket read —
    with parallel uploads each wake-up waits its turn for the GIL.

    `absorb(piece)` sees every piece in order in the reading thread (digests there run beside
    the event loop and each other: hashlib and zlib let go of the GIL on large buffers);
    `finish()` runs there once at the end and may raise (a digest mismatch), before the last
    bytes are handed on, so a bad body is never committed."""

    def __init__(self, pieces: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop, *,
                 absorb: Callable[[bytes], None] | None = None,
                 finish: Callable[[], None] | None = None,
                 expected_length: int | None = None):
        """`expected_length`: the bytes the request declared (checked elsewhere), which lets
        `Client.put` ask for the quota and the first chunk with its create."""
        self.expected_length = expected_length
        self._pieces = pieces
        self._loop = loop
        self._absorb = absorb
        self._finish = finish
        self._rest: deque[memoryview] = deque()      # gathered, not handed out yet
        self._rest_size = 0
        self._done = False

    def readable(self) -> bool:
        return True

    async def _gather(self, want: int) -> list[bytes]:
        out, got = [], 0
        while got < want:
            piece = await anext(self._pieces, b"")
            if not piece:
                self._done = True
                break
            out.append(piece)
            got += len(piece)
        return out

    def read_pieces(self, n: int) -> list[memoryview]:
        """The next n bytes (fewer only at the end: none there) as a list of pieces."""
        if self._rest_size < n and not self._done:
            got = _on_loop(self._gather(n - self._rest_size), self._loop)
            for piece in got:
                if self._absorb is not None:
                    self._absorb(piece)
                self._rest.append(memoryview(piece))
                self._rest_size += len(piece)
            if self._done and self._finish is not None:
                self._finish()
        out, size = [], 0
        while self._rest and size < n:
            piece = self._rest.popleft()
            if size + len(piece) > n:
                piece, tail = piece[:n - size], piece[n - size:]
                self._rest.appendleft(tail)
            out.append(piece)
            size += len(piece)
        self._rest_size -= size
        return out

    def read(self, n: int = -1) -> bytes:
        return b"".join(self.read_pieces(n if n >= 0 else 1 << 62))


async def _checked_length(pieces: AsyncIterator[bytes], expected: int | None
                          ) -> AsyncIterator[bytes]:
    """`pieces`, failing (InvalidArgument) as soon as they add up to more than `expected`
    bytes, or at the end when to fewer."""
    received = 0
    async for piece in pieces:
        received += len(piece)
        if expected is not None and received > expected:
            raise InvalidArgument(f"the body is longer than its Content-Length "
                                  f"({expected} bytes)")
        yield piece
    if expected is not None and received < expected:
        raise InvalidArgument(f"the body ended after {received} of {expected} "
                              "bytes (Content-Length)")


async def body_pieces(ex: Exchange) -> AsyncIterator[bytes]:
    """The request body of `ex`, piece by piece as it arrives."""
    while True:
        data = await ex.read()
        if not data:
            return
        yield data


async def upload(ex: Exchange, client: Client, path: str, *, overwrite: bool = True,
                 expected_size: int | None = None, **put_kwargs: Any) -> FileInfo:
    """Stream the request body into the gfs file `path` (created, or replaced with
    `overwrite`); `expected_size`: the Content-Length, checked against what arrived. Raises the
    gfs error, or the exchange's (ClientGone, BodyTooLarge); nothing is committed then."""
    stream = BodySource(_checked_length(body_pieces(ex), expected_size),
                        asyncio.get_running_loop(), expected_length=expected_size)
    return await offload(client.put, stream, path, overwrite=overwrite, **put_kwargs)


# --- gfs -> response body ----------------------------------------------------------------------

class ResponseSink:
    """A blocking, in-order sink for `Client.download` in a worker thread: each write waits until
    the event loop has handed the bytes to the connection (its backpressure included)."""

    def __init__(self, ex: Exchange, loop: asyncio.AbstractEventLoop):
        self._ex, self._loop = ex, loop

    def write(self, data) -> int:
        # No copy: `Client.download` hands over buffers of their own, never a view of one it
        # reuses (gfs/transfer.py read_chunk), so the connection may hold on to this one.
        _on_loop(self._ex.write(data), self._loop)
        return len(data)

    def flush(self) -> None:
        pass


async def download(ex: Exchange, client: Client, info: FileInfo, first: int, end: int) -> int:
    """Write bytes [first, end) of the file `info` (stat'ed for reading) to the response body,
    whose head the caller has sent; returns the bytes written. On an error mid-way the caller
    must abort the exchange (the client must not take a short body for the whole)."""
    writer = ResponseSink(ex, asyncio.get_running_loop())
    return await offload(client.download, info, writer, offset=first, length=end - first,
                         parallel=1)
