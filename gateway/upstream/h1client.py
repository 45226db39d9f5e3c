"""One HTTP/1.1 connection to an upstream: request head and streamed body out, response parsed by
httptools in, body handed over through a bounded buffer that pauses reading from the upstream
while the client is slower."""
from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

import httptools

from gateway.http.exchange import BodyBuffer
from gateway.upstream.errors import UpstreamError, connect
from gateway.upstream.response import UpstreamResponse

BodySource = Callable[[], Awaitable[bytes]]     # returns b"" at the end


class H1Upstream(asyncio.Protocol):
    def __init__(self, buffer_bytes: int):
        self.transport: asyncio.Transport | None = None
        self.buffer_bytes = buffer_bytes
        self.closed = False
        self.reusable = False
        self.idle_since = time.monotonic()
        self.response: UpstreamResponse | None = None
        self.parser = httptools.HttpResponseParser(self)
        # The reads of the current response until its head is whole: its fields are taken
        # from these bytes (no on_header callback: one Python call per field saved).
        self._head_reads: list[bytes] = []
        self._head_only = False
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._writer: asyncio.Task | None = None
        self._request_done = False
        self._response_done = False
        self._tunnel = False                     # after a 101: the body is the raw bytes
        self._watcher: Callable[[], None] | None = None
        self._late: Callable[[], None] | None = None
        self._deadline = 0.0                     # the watched response's (the loop's clock)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._interim = 0                        # 1xx heads before the current response's
        self._whole: tuple[bytes, int] | None = None   # see _keep_whole

    @classmethod
    async def open(cls, host: str, port: int, timeout: float, buffer_bytes: int) -> "H1Upstream":
        return await connect(lambda: cls(buffer_bytes), host, port, timeout)

    # --- asyncio.Protocol ---
    def connection_made(self, transport) -> None:
        self.loop = asyncio.get_running_loop()   # kept: each look-up is a getpid() on 3.11
        self.transport = transport
        transport.set_write_buffer_limits(high=self.buffer_bytes)

    def data_received(self, data: bytes) -> None:
        if self._tunnel:
            self.response.body.feed(data)
            return
        if self.response is None:
            self.closed = True                   # bytes nobody asked for: not reusable
            self.transport.close()
            return
        if not self.response.head_done:
            self._head_reads.append(data)
        try:
            self.parser.feed_data(data)
            if self._whole is not None:
                self._keep_whole()
            elif not self.response.head_done and \
                    sum(map(len, self._head_reads)) > self.buffer_bytes:
                self.response.fail(UpstreamError(
                    f"upstream response head larger than {self.buffer_bytes} bytes"))
                self._close()
        except httptools.HttpParserUpgrade as up:
            if self.response.status != 101:
                self.response.fail(UpstreamError("upstream upgraded without a 101"))
                self._close()
                return
            self._tunnel = True                  # what follows the 101 belongs to the tunnel
            rest = data[up.args[0]:] if up.args else b""
            if rest:
                self.response.body.feed(rest)
        except httptools.HttpParserError as err:
            self.response.fail(UpstreamError(f"bad response from upstream: {err}"))
            self._close()
        self._notify_if_settled()

    def _keep_whole(self) -> None:
        """The response's head came in its first read (`_whole`: that read, where the head
        ends). If the body came whole in it too, framed by a length with nothing after it, the
        response is kept as it came (`UpstreamResponse.whole`), to be relayed as it is."""
        data, head_end = self._whole
        self._whole = None
        if self._response_done and head_end + 4 + self.response.body.buffered == len(data):
            self.response.whole = (data, head_end)

    def watch(self, watcher: Callable[[], None], deadline: float,
              late: Callable[[], None]) -> None:
        """Call `watcher` once, at the end of the first event (bytes read, the connection
        lost) after which the response's head is there or failed: the bytes of its body that
        came with the head are in its buffer by then. Or, if that has not happened by
        `deadline` (the loop's clock), call `late` instead. The timer is the connection's and
        outlives a request: one that ends before its deadline leaves it set, and when it goes
        off it looks at the request watched then and sets itself again for that one's deadline
        (under uvloop a timer made and cancelled per request cost ~2 µs of its ~30)."""
        self._watcher, self._late, self._deadline = watcher, late, deadline
        timer = self._timer
        if timer is None or deadline < self._timer_at:
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(deadline, self._timer_fired)
            self._timer_at = deadline

    def _timer_fired(self) -> None:
        self._timer = None
        late = self._late
        if late is None:
            return                               # nothing watched: set again by the next
        if self._deadline > self._timer_at:      # a later request's: wait for its deadline
            self._timer = self.loop.call_at(self._deadline, self._timer_fired)
            self._timer_at = self._deadline
            return
        self._watcher = self._late = None
        late()

    def _notify_if_settled(self) -> None:
        if self._watcher is not None and self.response is not None \
                and self.response.head_done:
            watcher, self._watcher, self._late = self._watcher, None, None
            watcher()

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.reusable = False
        self._can_write.set()
        if self._tunnel and self.response is not None:
            self.response.body.finish()          # the upstream closed its side of the tunnel
        elif self.response is not None and self._close_delimited():
            self._response_done = True           # a body without a length ends with the close
            self.response.body.finish()
        elif self.response is not None and not self._response_done:
            self.response.fail(UpstreamError(
                "upstream closed the connection" + (f": {exc}" if exc else "")))
        if self._writer is not None:
            self._writer.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._notify_if_settled()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def _close_delimited(self) -> bool:
        """A response head without Content-Length or chunked framing: EOF ends its body."""
        resp = self.response
        return resp.head_done and resp.head_error is None and not any(
            k in ("content-length", "transfer-encoding") for k, _ in resp.headers)

    # --- httptools callbacks ---
    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._interim += 1                   # an interim response: the real one follows
            return
        reads, self._head_reads = self._head_reads, []
        raw = reads[0] if len(reads) == 1 else b"".join(reads)
        start = 0
        for _ in range(self._interim):           # skip the 1xx heads before this one
            start = raw.index(b"\r\n\r\n", start) + 4
        head_end = raw.index(b"\r\n\r\n", start)   # httptools took it: CRLF lines
        if len(reads) == 1 and not self._interim:
            self._whole = (raw, head_end)
        self.response.set_raw_head(status, raw[raw.index(b"\r\n", start):head_end])
        if self._head_only or status in (204, 304):
            self._message_done(reusable=False)

    def on_body(self, body: bytes) -> None:
        if not self._response_done:
            self.response.body.feed(body)

    def on_message_complete(self) -> None:
        if self.response is not None and self.response.status == 101:
            return                               # not the end: a tunnel starts (see below)
        if self.response is not None and self.response.head_done \
                and not self._response_done:
            self._message_done(reusable=self.parser.should_keep_alive())

    def _message_done(self, reusable: bool) -> None:
        self._response_done = True
        self.response.body.finish()
        self.reusable = reusable and not self.closed
        if not reusable:
            self._close()

    # --- use ---
    def _close(self) -> None:
        self.reusable = False
        if not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        self.reusable = False
        if not self.closed:
            self.closed = True
            self.transport.abort()

    def send(self, method: str, target: str, headers: list[tuple[str, str]],
             body: BodySource | None, length: int | None,
             tunnel: BodySource | None = None) -> UpstreamResponse:
        """Send the request (its body streams in the background) and return the response,
        whose head the caller awaits (nothing here waits: the head goes to the transport).
        `length` None with a body: chunked. `tunnel`: an Upgrade request; after a 101 its bytes
        go up as they are and the response body is the upstream's bytes."""
        if not self.reusable:                # a reused connection's parser is between messages
            self.parser = httptools.HttpResponseParser(self)
        self.reusable = False
        self._head_reads = []
        self._interim = 0
        self._whole = None
        self._head_only = method == "HEAD"
        self._response_done = False
        self._request_done = body is None
        self.response = UpstreamResponse(BodyBuffer(self.buffer_bytes, self._pause,
                                                    self._resume), self.loop)
        chunked = body is not None and length is None
        lines = [f"{method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers]
        if chunked:
            lines.append("transfer-encoding: chunked")
        elif body is None and method in ("POST", "PUT", "PATCH"):
            lines.append("content-length: 0")
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if body is not None or tunnel is not None:
            self._writer = self.loop.create_task(
                self._write_body(body or tunnel, chunked))
        return self.response

    async def _write_body(self, body: BodySource, chunked: bool) -> None:
        try:
            while True:
                data = await body()
                if not data:
                    break
                if self.closed:
                    return
                self.transport.write(b"%x\r\n" % len(data) + data + b"\r\n" if chunked else data)
                if not self._can_write.is_set():
                    await self._can_write.wait()
            if chunked and not self.closed:
                self.transport.write(b"0\r\n\r\n")
            self._request_done = True
        except asyncio.CancelledError:
            pass
        except Exception as err:
            # ClientGone: the client went away mid-upload, and the upstream must not take a
            # truncated body for a whole one; BodyTooLarge: the proxy answers it.
            if self.response is not None:
                self.response.fail(err)
            self.abort()
        finally:
            self._writer = None

    def _pause(self) -> None:
        if not self.closed:
            self.transport.pause_reading()

    def _resume(self, n: int) -> None:
        if not self.closed and self.response is not None \
                and self.response.body.buffered <= self.buffer_bytes // 2:
            self.transport.resume_reading()

    def finished(self) -> bool:
        """The exchange is over and the connection can carry another request."""
        return self.reusable and self._response_done and self._request_done and not self.closed
