"""An upstream response as the proxy consumes it, whichever protocol brought it."""
from __future__ import annotations

import asyncio

from gateway.http.exchange import BodyBuffer


class UpstreamResponse:
    def __init__(self, body: BodyBuffer, loop: asyncio.AbstractEventLoop | None = None):
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.trailers: list[tuple[str, str]] = []
        self.head_only = False              # HTTP/2: the stream ended with its HEADERS (gRPC's
                                            # trailers-only errors): no body, no trailers
        self.body = body
        self.head_ready: asyncio.Future = (loop or asyncio.get_running_loop()).create_future()
        # Read here so that a failure after the proxy stopped waiting is not logged as lost.
        self.head_ready.add_done_callback(lambda f: f.cancelled() or f.exception())

    def set_head(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.status, self.headers = status, headers
        if not self.head_ready.done():
            self.head_ready.set_result(None)

    def fail(self, error: BaseException) -> None:
        if not self.head_ready.done():
            self.head_ready.set_exception(error)
        self.body.fail(error)
