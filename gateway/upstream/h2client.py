"""One HTTP/2 connection to an upstream (prior knowledge, h2c), carrying many requests at once:
what gRPC needs (trailers, long-lived streams). Response bodies are acknowledged to the upstream
only as the client takes them, so a slow client slows the upstream through flow control."""
from __future__ import annotations

import asyncio
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from gateway.http.exchange import BodyBuffer
from gateway.http.h2flow import FlowWindows, decode_headers, h2_fields
from gateway.upstream.errors import UpstreamError, connect
from gateway.upstream.h1client import BodySource
from gateway.upstream.response import UpstreamResponse

CONNECTION_WINDOW = 16 * 1024 * 1024


class H2Upstream(asyncio.Protocol):
    def __init__(self, buffer_bytes: int):
        self.buffer_bytes = buffer_bytes
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.goaway = False
        self.idle_since = time.monotonic()
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: buffer_bytes,
        })
        self.streams: dict[int, UpstreamResponse] = {}
        self.windows = FlowWindows()
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._writers: dict[int, asyncio.Task] = {}

    @classmethod
    async def open(cls, host: str, port: int, timeout: float, buffer_bytes: int) -> "H2Upstream":
        return await connect(lambda: cls(buffer_bytes), host, port, timeout)

    @property
    def capacity(self) -> int:
        """How many more streams the upstream allows on this connection now."""
        if self.closed or self.goaway:
            return 0
        return self.h2.remote_settings.max_concurrent_streams - len(self.streams)

    # --- asyncio.Protocol ---
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.closed:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as err:
            self._fail_all(UpstreamError(f"upstream broke HTTP/2: {err}"))
            self.abort()
            return
        for event in events:
            self._event(event)
        self.flush()

    def _event(self, event) -> None:
        sid = getattr(event, "stream_id", None)
        resp = self.streams.get(sid) if sid is not None else None
        if isinstance(event, h2.events.ResponseReceived):
            if resp is not None:
                headers = decode_headers(event.headers)
                status = next((v for k, v in headers if k == ":status"), "502")
                if 100 <= int(status) < 200:
                    return
                resp.head_only = event.stream_ended is not None
                resp.set_head(int(status), [(k, v) for k, v in headers if not k.startswith(":")])
        elif isinstance(event, h2.events.DataReceived):
            padding = event.flow_controlled_length - len(event.data)
            if padding:
                self.h2.acknowledge_received_data(padding, sid)
            if resp is None:
                self.h2.acknowledge_received_data(len(event.data), sid)
            else:
                resp.body.feed(event.data)
        elif isinstance(event, h2.events.TrailersReceived):
            if resp is not None:
                resp.trailers = decode_headers(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            if resp is not None:
                if not resp.head_done:
                    resp.fail(UpstreamError("upstream ended the stream without a response"))
                resp.body.finish()
                self._done(sid)
        elif isinstance(event, h2.events.StreamReset):
            if resp is not None:
                resp.fail(UpstreamError(f"upstream reset the stream ({event.error_code!r})",
                                        sent=event.error_code != h2.errors.ErrorCodes.REFUSED_STREAM))
                self._done(sid)
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self.windows.opened(getattr(event, "stream_id", 0) or 0)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = True
            last = event.last_stream_id or 0
            for s, r in list(self.streams.items()):
                if s > last:                     # never processed: safe to try elsewhere
                    r.fail(UpstreamError("upstream going away", sent=False))
                    self._done(s)

    def _done(self, sid: int) -> None:
        self.streams.pop(sid, None)
        self.windows.forget(sid)
        writer = self._writers.pop(sid, None)
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()                      # the response is over: stop sending the body
        if not self.streams:
            self.idle_since = time.monotonic()

    def connection_lost(self, exc) -> None:
        self.closed = True
        self._can_write.set()
        self._fail_all(UpstreamError("upstream closed the connection"
                                     + (f": {exc}" if exc else "")))
        self.windows.wake_all()
        for writer in list(self._writers.values()):
            writer.cancel()

    def _fail_all(self, error: UpstreamError) -> None:
        for sid, resp in list(self.streams.items()):
            resp.fail(error)
        self.streams.clear()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    async def _drain(self) -> None:
        if not self._can_write.is_set():
            await self._can_write.wait()
        if self.closed:
            raise UpstreamError("upstream closed the connection")

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.abort()

    def close(self) -> None:
        if not self.closed:
            try:
                self.h2.close_connection()
                self.flush()
            except h2.exceptions.H2Error:
                pass
            self.closed = True
            self.transport.close()

    # --- use ---
    async def send(self, method: str, scheme: str, authority: str, target: str,
                   headers: list[tuple[str, str]], body: BodySource | None) -> UpstreamResponse:
        if self.capacity <= 0:
            raise UpstreamError("no stream available on this connection", sent=False)
        sid = self.h2.get_next_available_stream_id()
        fields = [(b":method", method.encode()), (b":scheme", scheme.encode()),
                  (b":authority", authority.encode("latin-1")),
                  (b":path", target.encode("latin-1"))] + h2_fields(headers)
        resp = UpstreamResponse(BodyBuffer(self.buffer_bytes * 2, lambda: None,
                                           lambda n: self._consumed(sid, n)))
        self.streams[sid] = resp
        try:
            self.h2.send_headers(sid, fields, end_stream=body is None)
        except h2.exceptions.H2Error as err:
            self.streams.pop(sid, None)
            raise UpstreamError(f"cannot open a stream: {err}", sent=False) from None
        self.flush()
        if body is not None:
            self._writers[sid] = asyncio.get_running_loop().create_task(
                self._write_body(sid, resp, body))
        return resp

    def _consumed(self, sid: int, n: int) -> None:
        if not self.closed:
            try:
                self.h2.acknowledge_received_data(n, sid)
                self.flush()
            except h2.exceptions.H2Error:
                pass                              # the stream is over: nothing to open

    def reset(self, sid_resp: UpstreamResponse) -> None:
        """The client gave up: cancel the upstream stream too."""
        for sid, resp in list(self.streams.items()):
            if resp is sid_resp:
                self._cancel(sid)

    def _cancel(self, sid: int) -> None:
        try:
            self.h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            self.flush()
        except h2.exceptions.H2Error:
            pass
        self._done(sid)

    async def _write_body(self, sid: int, resp: UpstreamResponse, body: BodySource) -> None:
        alive = lambda: not self.closed and sid in self.streams  # noqa: E731
        try:
            while True:
                data = await body()
                if not alive():
                    return
                if not data:
                    self.h2.end_stream(sid)
                    self.flush()
                    return
                await self.windows.send(self.h2, sid, data, self.flush, self._drain, alive)
        except Exception as err:                 # ClientGone, BodyTooLarge: the proxy answers
            if alive():
                resp.fail(UpstreamError(f"request body: {err}")
                          if isinstance(err, h2.exceptions.H2Error) else err)
                self._cancel(sid)
        finally:
            self._writers.pop(sid, None)
