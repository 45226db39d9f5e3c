"""What the application sees of one request, whatever protocol carried it."""
from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Callable


class BodyTooLarge(Exception):
    """The request body went past the server's limit (answered with 413)."""


class ClientGone(Exception):
    """The client closed the connection or reset the stream mid-request."""


@dataclass(slots=True)
class RequestHead:
    method: str
    path: str                                   # as sent, percent-encoded, without the query
    query: str                                  # without the '?'
    headers: list[tuple[str, str]]              # names lower-case, in arrival order
    http_version: str                           # "1.0", "1.1" or "2"
    scheme: str                                 # "http" or "https"
    authority: str                              # Host header or :authority, lower-case, no port
    peer: tuple[str, int]                       # the TCP peer (a proxy's address if one is in front)
    has_body: bool = False
    raw_authority: str = ""                     # Host / :authority as sent (with its port)
    extra: dict = field(default_factory=dict)   # filled by the layers above (client ip, route...)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def target(self) -> str:
        return self.path + ("?" + self.query if self.query else "")


def split_authority(authority: str) -> str:
    """'Example.COM:8080' -> 'example.com'; '[::1]:80' -> '::1'."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        return authority[1:authority.find("]")] if "]" in authority else authority
    host, sep, port = authority.rpartition(":")
    return host if sep and port.isdigit() else authority


async def raising(exc: BaseException) -> None:
    """An awaitable that raises `exc`: an error that a callback found, handed to the code that
    awaits a request's handling (and answers what it raises)."""
    raise exc


class BodyBuffer:
    """A request (or upstream response) body between the socket and its reader, bounded: the
    producer is told to stop reading (`pause`) past `cap` bytes and to go on (`resume`) once the
    reader has taken it below half of that."""

    def __init__(self, cap: int, pause: Callable[[], None], resume: Callable[[int], None]):
        self._cap = cap
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future | None = None
        self._pause = pause
        self._resume = resume          # called with the number of bytes the reader took
        self._paused = False

    @property
    def buffered(self) -> int:
        return self._size

    def feed(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self._size += len(data)
            if self._size > self._cap and not self._paused:
                self._paused = True
                self._pause()
        self._wake()

    def finish(self) -> None:
        self._done = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        if not self._done:
            self._error = error
            self._done = True
        self._wake()

    @property
    def done(self) -> bool:
        return self._done and not self._chunks

    @property
    def complete(self) -> bool:
        """The producer finished without an error: every byte is here (`take_all`)."""
        return self._done and self._error is None

    def take_all(self) -> list[bytes]:
        """Every chunk buffered, at once: what `read` would return until the end, for a reader
        that found the body `complete`."""
        chunks = list(self._chunks)
        self._chunks.clear()
        taken, self._size, self._paused = self._size, 0, False
        if taken:
            self._resume(taken)
        return chunks

    @property
    def ready(self) -> bool:
        """`read` would answer at once (a chunk, the end, or the error)."""
        return bool(self._chunks) or self._done

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read(self) -> bytes:
        """The next chunk; b'' at the end; raises the producer's error after what came before."""
        while not self._chunks:
            if self._done:
                if self._error is not None:
                    raise self._error
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._chunks.popleft()
        self._size -= len(data)
        if self._paused and self._size <= self._cap // 2:
            self._paused = False
        self._resume(len(data))
        return data


class Exchange:
    """One request/response. Subclasses (h1.py, h2.py) implement the `_send_*` methods."""

    def __init__(self, head: RequestHead, body: BodyBuffer):
        self.head = head
        self.body = body
        self.status = 0                   # the response status once started
        self.bytes_in = 0
        self.bytes_out = 0
        self.finished = False

    @property
    def response_started(self) -> bool:
        return self.status != 0

    async def read(self) -> bytes:
        data = await self.body.read()
        self.bytes_in += len(data)
        return data

    @property
    def upgrade(self) -> str:
        """The protocol an HTTP/1.1 `Upgrade` request asks for ("" for none): answering 101
        turns the connection into a byte tunnel (`read_tunnel`, `write`)."""
        return self.head.extra.get("upgrade", "")

    async def read_tunnel(self) -> bytes:
        """The client's bytes after a 101 (b'' when it closed its side)."""
        raise RuntimeError("not an upgraded connection")

    async def start_response(self, status: int, headers: list[tuple[str, str]],
                             end: bool = False) -> None:
        if self.status:
            raise RuntimeError("response already started")
        self.status = status
        await self._send_head(status, headers, end)
        if end:
            self.finished = True

    async def write(self, data: bytes) -> None:
        if data:
            self.bytes_out += len(data)
            await self._send_data(data)

    async def end(self, trailers: list[tuple[str, str]] | None = None) -> None:
        if not self.finished:
            self.finished = True
            await self._send_end(trailers)

    async def respond(self, status: int, body: bytes = b"",
                      headers: list[tuple[str, str]] | None = None) -> None:
        """A whole small response at once (errors, built-in pages)."""
        hdrs = list(headers or [])
        if not any(k == "content-type" for k, _ in hdrs):
            hdrs.append(("content-type", "text/plain; charset=utf-8"))
        hdrs.append(("content-length", str(len(body))))
        await self.start_response(status, hdrs, end=not body)
        if body:
            await self.write(body)
            await self.end()

    def abort(self) -> None:
        """Give up on this response mid-way (the client sees a reset stream or a closed
        connection, never a truncated body that looks complete)."""
        self.finished = True
        self._abort()

    # implemented per protocol
    async def _send_head(self, status: int, headers: list[tuple[str, str]], end: bool) -> None:
        raise NotImplementedError

    async def _send_data(self, data: bytes) -> None:
        raise NotImplementedError

    async def _send_end(self, trailers: list[tuple[str, str]] | None) -> None:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError
