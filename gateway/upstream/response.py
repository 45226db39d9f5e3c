"""An upstream response as the proxy consumes it, whichever protocol brought it."""
from __future__ import annotations

import asyncio

from gateway.http.exchange import BodyBuffer


class UpstreamResponse:
    """The head (`status`, `headers`) once `head_done`; or `head_error`, the upstream's failure
    before a head came. A future to wait on is made only when someone waits (`wait_head`): the
    proxy's fast path reads the head from the connection's callback and never does."""
    __slots__ = ("status", "headers", "trailers", "head_only", "body", "head_done",
                 "head_error", "_loop", "_waiter")

    def __init__(self, body: BodyBuffer, loop: asyncio.AbstractEventLoop | None = None):
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.trailers: list[tuple[str, str]] = []
        self.head_only = False              # HTTP/2: the stream ended with its HEADERS (gRPC's
                                            # trailers-only errors): no body, no trailers
        self.body = body
        self.head_done = False
        self.head_error: BaseException | None = None
        self._loop = loop
        self._waiter: asyncio.Future | None = None

    def set_head(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.status, self.headers = status, headers
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
