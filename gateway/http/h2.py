"""HTTP/2 on one client connection: h2 does the framing and state machine (no I/O of its own);
this engine runs one `Exchange` task per stream. Request bodies are acknowledged to the client
only as the app reads them, so HTTP/2 flow control is the backpressure."""
from __future__ import annotations

import asyncio
import logging

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from gateway.http.exchange import (BodyBuffer, BodyTooLarge, ClientGone, Exchange, RequestHead,
                                   split_authority)
from gateway.http.h2flow import FlowWindows, decode_headers, h2_fields
from gateway.websocket import ACCEPT_HEADER
from gfs.window_budget import WindowBudget

log = logging.getLogger("gateway.http")
CONNECTION_WINDOW = 16 * 1024 * 1024


class H2Exchange(Exchange):
    def __init__(self, engine: "H2Engine", stream_id: int, head: RequestHead, body: BodyBuffer):
        super().__init__(head, body)
        self.engine = engine
        self.stream_id = stream_id
        self.reset = False

    def _alive(self) -> bool:
        return not self.reset and not self.engine.conn.closed

    def _check(self) -> None:
        if not self._alive():
            raise ClientGone("stream reset by the client")

    async def read_tunnel(self) -> bytes:
        """An extended CONNECT's stream after its 200: the client's DATA (b'' at END_STREAM)."""
        if not self.upgrade:
            raise RuntimeError("not an extended CONNECT stream")
        return await self.read()

    async def _send_head(self, status: int, headers: list[tuple[str, str]], end: bool) -> None:
        self._check()
        if status == 101 and self.upgrade:
            # An extended CONNECT succeeds with a 2xx (RFC 8441 5); the HTTP/1.1 handshake's
            # accept value means nothing to an HTTP/2 client.
            status = 200
            headers = [(k, v) for k, v in headers if k.lower() != ACCEPT_HEADER]
        fields = [(b":status", str(status).encode())] + h2_fields(headers)
        self.engine.h2.send_headers(self.stream_id, fields, end_stream=end)
        self.engine.flush()
        await self.engine.conn.drain()

    async def _send_data(self, data: bytes) -> None:
        self._check()
        try:
            await self.engine.windows.send(self.engine.h2, self.stream_id, data, self.engine.flush,
                                           self.engine.conn.drain, self._alive)
        except (h2.exceptions.StreamClosedError, ConnectionResetError) as err:
            raise ClientGone(str(err)) from None

    async def _send_end(self, trailers: list[tuple[str, str]] | None) -> None:
        self._check()
        try:
            if trailers:
                self.engine.h2.send_headers(self.stream_id, h2_fields(trailers), end_stream=True)
            else:
                self.engine.h2.end_stream(self.stream_id)
        except h2.exceptions.StreamClosedError as err:
            raise ClientGone(str(err)) from None
        self.engine.flush()

    def _abort(self) -> None:
        if self._alive():
            try:
                self.engine.h2.reset_stream(self.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
                self.engine.flush()
            except h2.exceptions.H2Error:
                pass


class H2Engine:
    def __init__(self, conn, upgrade: tuple | None = None):
        self.conn = conn
        self.limits = conn.limits
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.limits.h2_max_streams,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.limits.h2_window,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: self.limits.max_header_bytes,
            h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,       # RFC 8441 WebSockets
        })
        self.windows = FlowWindows()
        self.streams: dict[int, H2Exchange] = {}
        self.tasks: dict[int, asyncio.Task] = {}
        self.body_sizes: dict[int, int] = {}
        # Each stream a client resets while it is being served costs a Task started and
        # cancelled, and maybe an upstream request: a client doing that as fast as it can
        # (HTTP/2 "rapid reset", CVE-2023-44487) is told to calm down and disconnected.
        self.resets = WindowBudget(self.limits.h2_max_resets, self.limits.h2_reset_window_s)
        conn.clear_header_deadline()
        if upgrade is not None:
            settings, head = upgrade
            self.h2.initiate_upgrade_connection(settings.encode("latin-1"))
            self.h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
            self.flush()
            body = self._body(1)
            body.finish()
            self._start(1, head, body)
        else:
            self.h2.initiate_connection()
            self.h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
            self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.conn.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as err:
            self._goaway(err)
            return
        for event in events:
            try:
                self._event(event)
            except h2.exceptions.ProtocolError as err:
                self._goaway(err)
                return
        self.flush()

    def _goaway(self, err: Exception) -> None:
        code = getattr(err, "error_code", None) or h2.errors.ErrorCodes.PROTOCOL_ERROR
        try:
            self.h2.close_connection(error_code=code,
                                     additional_data=str(err)[:200].encode("utf-8", "replace"))
            self.flush()
        except h2.exceptions.H2Error:
            pass
        self.conn.close()

    def _event(self, event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event)
        elif isinstance(event, h2.events.DataReceived):
            self._data(event)
        elif isinstance(event, h2.events.StreamEnded):
            ex = self.streams.get(event.stream_id)
            if ex is not None:
                ex.body.finish()
        elif isinstance(event, h2.events.TrailersReceived):
            ex = self.streams.get(event.stream_id)
            if ex is not None:
                ex.head.extra["request_trailers"] = decode_headers(event.headers)
        elif isinstance(event, h2.events.StreamReset):
            self._reset(event.stream_id)
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self.windows.opened(getattr(event, "stream_id", 0) or 0)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.conn.close()

    def _body(self, stream_id: int) -> BodyBuffer:
        def consumed(n: int) -> None:
            if stream_id in self.streams and not self.conn.closed:
                try:
                    self.h2.acknowledge_received_data(n, stream_id)
                    self.flush()
                except h2.exceptions.H2Error:
                    pass
        # The window we advertise bounds what a client can have buffered: no pause needed.
        return BodyBuffer(self.limits.h2_window * 2, lambda: None, consumed)

    def _request(self, event: h2.events.RequestReceived) -> None:
        sid = event.stream_id
        headers = decode_headers(event.headers)
        pseudo = {k: v for k, v in headers if k.startswith(":")}
        regular = [(k, v) for k, v in headers if not k.startswith(":")]
        size = sum(len(k) + len(v) + 32 for k, v in headers)
        if size > self.limits.max_header_bytes or len(regular) > self.limits.max_headers:
            self._refuse(sid, 431, "request header fields too large")
            return
        method = pseudo.get(":method", "")
        target = pseudo.get(":path", "")
        if not method or (method != "CONNECT" and not target):
            self.h2.reset_stream(sid, h2.errors.ErrorCodes.PROTOCOL_ERROR)
            return
        # An extended CONNECT (RFC 8441) opens a tunnel such as a WebSocket: an HTTP/1.1
        # upstream sees it as the GET + Upgrade it stands for; its bytes are the stream's DATA.
        protocol = pseudo.get(":protocol", "").lower() if method == "CONNECT" else ""
        if protocol:
            method = "GET"
        path, _, query = target.partition("?")
        authority = pseudo.get(":authority") or next((v for k, v in regular if k == "host"), "")
        length = next((v for k, v in regular if k == "content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.limits.max_body_bytes:
            self._refuse(sid, 413, "request body too large")
            return
        ended = event.stream_ended is not None
        head = RequestHead(method=method, path=path, query=query, headers=regular,
                           http_version="2", scheme=pseudo.get(":scheme", self.conn.scheme),
                           authority=split_authority(authority), peer=self.conn.peer,
                           has_body=not ended and not protocol, raw_authority=authority)
        if protocol:
            head.extra["upgrade"] = protocol
        body = self._body(sid)
        if ended:
            body.finish()
        self._start(sid, head, body)

    def _refuse(self, sid: int, status: int, message: str) -> None:
        body = (message + "\n").encode()
        self.h2.send_headers(sid, [(b":status", str(status).encode()),
                                   (b"content-type", b"text/plain; charset=utf-8"),
                                   (b"content-length", str(len(body)).encode())])
        self.h2.send_data(sid, body, end_stream=True)

    def _start(self, sid: int, head: RequestHead, body: BodyBuffer) -> None:
        ex = H2Exchange(self, sid, head, body)
        self.streams[sid] = ex
        self.body_sizes[sid] = 0
        self.tasks[sid] = self.conn.loop.create_task(self._serve(ex))

    def _data(self, event: h2.events.DataReceived) -> None:
        sid = event.stream_id
        ex = self.streams.get(sid)
        padding = event.flow_controlled_length - len(event.data)
        if padding:
            self.h2.acknowledge_received_data(padding, sid)
        if ex is None:
            self.h2.acknowledge_received_data(len(event.data), sid)
            return
        self.body_sizes[sid] += len(event.data)
        if self.body_sizes[sid] > self.limits.max_body_bytes:
            ex.body.fail(BodyTooLarge("request body too large"))
            return
        ex.body.feed(event.data)

    def _reset(self, sid: int) -> None:
        ex = self.streams.get(sid)
        if ex is not None:
            if not self.resets.take():
                calm = h2.exceptions.ProtocolError(
                    f"more than {self.resets.per_window} streams reset in "
                    f"{self.resets.window_s:g} s")
                calm.error_code = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
                raise calm
            ex.reset = True
            ex.body.fail(ClientGone("stream reset by the client"))
            self.windows.forget(sid)
            task = self.tasks.get(sid)
            if task is not None:
                task.cancel()
            # Let go of the stream now: a Task cancelled before its first step never runs
            # _serve's `finally`, and a client resetting streams as fast as it opens them
            # (HTTP/2 "rapid reset") would grow `streams` until the connection closed.
            self._finish(ex)

    async def _serve(self, ex: H2Exchange) -> None:
        try:
            await self.conn.app(ex)
            if not ex.response_started:
                await ex.respond(500, b"no response\n")
            await ex.end()
        except (ClientGone, asyncio.CancelledError):
            pass
        except BodyTooLarge:
            if not ex.response_started and ex._alive():
                self._refuse(ex.stream_id, 413, "request body too large")
                self.flush()
            else:
                ex.abort()
        except Exception:
            log.exception("request handler failed")
            if not ex.response_started and ex._alive():
                self._refuse(ex.stream_id, 500, "internal error")
                self.flush()
            else:
                ex.abort()
        finally:
            self._finish(ex)

    def _finish(self, ex: H2Exchange) -> None:
        """The stream is done with (answered, failed or reset): forget it. Idempotent."""
        sid = ex.stream_id
        if not ex.body.done and ex._alive():
            # The app answered without reading the whole request body: stop the client
            # sending it (NO_ERROR, as RFC 9113 8.1 allows after a complete response).
            try:
                self.h2.reset_stream(sid, h2.errors.ErrorCodes.NO_ERROR)
                self.flush()
            except h2.exceptions.H2Error:
                pass
        if self.streams.get(sid) is ex:
            del self.streams[sid]
            self.tasks.pop(sid, None)
            self.body_sizes.pop(sid, None)
            self.windows.forget(sid)

    # --- from the connection ---
    def idle(self) -> bool:
        return not self.streams

    def header_timeout(self) -> None:
        pass                                   # HTTP/2 frames headers whole: nothing dribbles

    def idle_timeout(self) -> None:
        try:
            self.h2.close_connection()
            self.flush()
        except h2.exceptions.H2Error:
            pass
        self.conn.close()

    def connection_lost(self) -> None:
        for sid, ex in list(self.streams.items()):
            ex.reset = True
            ex.body.fail(ClientGone("client closed the connection"))
        for task in list(self.tasks.values()):
            task.cancel()
        self.windows.wake_all()
