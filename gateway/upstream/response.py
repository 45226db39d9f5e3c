"""An upstream response as the proxy consumes it, whichever protocol brought it."""
from __future__ import annotations

import asyncio

from gateway.http.exchange import BodyBuffer


class UpstreamResponse:
    """The head (`status`, `headers`) once `head_done`; or `head_error`, the upstream's failure
    before a head came. A future to wait on is made only when someone waits (`wait_head`): the
    proxy's fast path reads the head from the connection's callback and never does.

    An HTTP/1.1 head is kept as its header lines' bytes (`set_raw_head`) and decoded when
    `headers` is first read; `whole` is the response exactly as it came when it came whole in
    one read, with where its head ends (the fast path relays it with `relayed_fields` and
    never decodes the head)."""
    __slots__ = ("status", "_headers", "_raw_headers", "whole", "trailers", "head_only", "body",
                 "head_done", "head_error", "_loop", "_waiter")

    def __init__(self, body: BodyBuffer, loop: asyncio.AbstractEventLoop | None = None):
        self.status = 0
        self._headers: list[tuple[str, str]] = []
        self._raw_headers: bytes | None = None
        self.whole: tuple[bytes, int] | None = None
        self.trailers: list[tuple[str, str]] = []
        self.head_only = False              # HTTP/2: the stream ended with its HEADERS (gRPC's
                                            # trailers-only errors): no body, no trailers
        self.body = body
        self.head_done = False
        self.head_error: BaseException | None = None
        self._loop = loop
        self._waiter: asyncio.Future | None = None

    @property
    def headers(self) -> list[tuple[str, str]]:
        """(lower-case name, value) pairs, in arrival order."""
        raw = self._raw_headers
        if raw is not None:
            self._raw_headers = None
            self._headers = [(k.decode("latin-1").lower(), v.strip(b" \t").decode("latin-1"))
                             for k, _, v in (line.partition(b":")
                                             for line in raw.split(b"\r\n")[1:])]
        return self._headers

    def set_head(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.status, self._headers = status, headers
        self._settle()

    def set_raw_head(self, status: int, raw: bytes) -> None:
        """The head's header lines as they came, each with the CRLF before it (b"\\r\\nA: 1"),
        in the form httptools accepts (CRLF line ends, no space before a colon, no folded
        lines); decoded when first read."""
        self.status, self._raw_headers = status, raw
        self._settle()

    def fail(self, error: BaseException) -> None:
        if not self.head_done:
            self.head_error = error
            self._settle()
        self.body.fail(error)

    def _settle(self) -> None:
        if not self.head_done:
            self.head_done = True
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def wait_head(self) -> None:
        """Until the head is here; raises the upstream's failure if it failed first. A caller
        cancelled while waiting (a timeout) leaves the response as it was."""
        while not self.head_done:
            waiter = self._waiter
            if waiter is None or waiter.done():
                waiter = self._waiter = (self._loop or asyncio.get_running_loop()).create_future()
            await waiter
        if self.head_error is not None:
            raise self.head_error
