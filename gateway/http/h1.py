"""HTTP/1.1 on one connection: httptools parses (no I/O of its own), this engine turns its
callbacks into `Exchange`s, answered one after the other (pipelined requests wait their turn)."""
from __future__ import annotations

import asyncio
import functools
import logging
import re
import struct
from http import HTTPStatus
from typing import Awaitable

import httptools

from gateway.headers import relayed_fields
from gateway.http.exchange import (BodyBuffer, BodyTooLarge, ClientGone, Exchange, RequestHead,
                                   raising, split_authority)

log = logging.getLogger("gateway.http")
MAX_PIPELINED = 16                  # parsed requests waiting for their turn before reading pauses
NO_BODY_STATUS = {204, 304}
_FIELD = struct.Struct("<II")       # lengths of a header's name and value in a head being read


def decode_fields(raw: bytes | bytearray) -> list[tuple[str, str]]:
    """The (lower-case name, value) pairs packed by H1Engine.on_header."""
    out = []
    i, end = 0, len(raw)
    while i < end:
        n, v = _FIELD.unpack_from(raw, i)
        i += _FIELD.size
        out.append((raw[i:i + n].decode("latin-1").lower(),
                    raw[i + n:i + n + v].decode("latin-1")))
        i += n + v
    return out


_REASONS = {s.value: s.phrase for s in HTTPStatus}
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}
_authority = functools.lru_cache(maxsize=1024)(split_authority)   # the Host of most requests

# The body of every request that has none: finished and empty, so nothing changes it (feed
# is never called for it; finish and fail leave a finished buffer as it is).
NO_BODY = BodyBuffer(0, lambda: None, lambda n: None)
NO_BODY.finish()


def reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


@functools.lru_cache(maxsize=None)
def _status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {reason(status)}".encode("latin-1")


# A request line as RFC 9112 has it (token method, target, version), checked on a first line
# before its head is whole (see first_head).
_REQUEST_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [^ \r\n]+ HTTP/[0-9]\.[0-9]\r?\n")


HEAD_WAIT, HEAD_PARSE, HEAD_TOO_LARGE = "wait", "parse", "too large"


def first_head(pending: bytes, max_header_bytes: int) -> str:
    """What to do with the first bytes a client sent: HEAD_PARSE (to a parser) when they hold
    a whole head or a first line that is no request line (for the parser to refuse at once);
    HEAD_TOO_LARGE past the limit with no end of the head; HEAD_WAIT otherwise. Until then a
    connection keeps them as bytes: a slowloris dribbling a head costs those bytes, not a parser
    and an engine (~1.3 KB)."""
    if b"\n\r\n" in pending or b"\n\n" in pending:
        return HEAD_PARSE
    if len(pending) > max_header_bytes:
        return HEAD_TOO_LARGE
    line_end = pending.find(b"\n")
    if line_end >= 0 and _REQUEST_LINE.match(pending, 0, line_end + 1) is None:
        return HEAD_PARSE
    return HEAD_WAIT


def error_response(status: int, message: str) -> bytes:
    body = (message + "\n").encode()
    return (f"HTTP/1.1 {status} {reason(status)}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class H1Exchange(Exchange):
    def __init__(self, engine: "H1Engine", head: RequestHead, body: BodyBuffer, keep_alive: bool,
                 expect_continue: bool):
        super().__init__(head, body)
        self._engine = engine
        self.keep_alive = keep_alive
        self._expect_continue = expect_continue and head.has_body
        # Expect: 100-continue on a request without a body: the 100 still goes out, just before
        # the final response (RFC 9110 lets a server omit it, not the client rely on that).
        # botocore takes a final status met while it waits for the 100 as an early answer, and
        # the connection's next response was then misread (`aws s3 cp --recursive` of an empty
        # file beside a multipart upload: 'ETag' missing from an UploadPart's answer).
        self._continue_first = (expect_continue and not head.has_body
                                and head.http_version == "1.1")
        self._chunked = False
        self._no_body = False
        self._raw = False                        # after a 101: bytes as they are
        self.tunnel_in: BodyBuffer | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._engine.conn.loop

    async def read_tunnel(self) -> bytes:
        if self.tunnel_in is None:
            raise RuntimeError("not an upgraded connection")
        data = await self.tunnel_in.read()
        self.bytes_in += len(data)
        return data

    async def read(self) -> bytes:
        if self._expect_continue:
            self._expect_continue = False
            if not self.response_started:
                self._engine.conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return await super().read()

    def answer_now(self, status: int, headers: list[tuple[str, str]], body: list[bytes],
                   trailers: list[tuple[str, str]] | None) -> None:
        """A whole response already in memory, written without waiting for the client to read
        (the proxy's fast path: a small upstream response, a client that was keeping up)."""
        if self.status:
            raise RuntimeError("response already started")
        self.status = status
        conn = self._engine.conn
        conn.batching = True                     # no end-of-turn flush to schedule: ours below
        try:
            self._write_head(status, headers, False)
            for data in body:
                if data:
                    self.bytes_out += len(data)
                    self._write_data(data)
            self.finished = True
            self._write_end(trailers)
        finally:
            conn.batching = False
        conn.flush()

    def answer_relayed(self, status: int, whole: bytes, head_end: int) -> bool:
        """Answer with an upstream's HTTP/1.1 response that came whole (`whole`: its bytes,
        head and body, framed by its Content-Length; `head_end`: where the blank line after
        its head starts): its header lines as they are less the
        hop-by-hop ones (`relayed_fields`), its body as it is — nothing decoded or rebuilt,
        one write. False, and nothing done, when it cannot go as it is (a HEAD request, a
        status without a body, no Content-Length, a Connection header naming another field):
        `answer_now` then."""
        if self.status or status < 200 or status in NO_BODY_STATUS \
                or self.head.method == "HEAD" or not self.body.done:
            return False
        fields = relayed_fields(whole[whole.find(b"\r\n"):head_end])
        if fields is None:
            return False
        self.status = status
        self.finished = True
        self.bytes_out += len(whole) - head_end - 4
        first = b"HTTP/1.1 100 Continue\r\n\r\n" if self._continue_first else b""
        self._continue_first = False
        self._engine.conn.write_now(b"".join((
            first, _status_line(status), fields,
            b"" if self.keep_alive else b"\r\nconnection: close", whole[head_end:])))
        return True

    async def _send_head(self, status: int, headers: list[tuple[str, str]], end: bool) -> None:
        self._write_head(status, headers, end)
        await self._engine.conn.drain()

    def _write_head(self, status: int, headers: list[tuple[str, str]], end: bool) -> None:
        conn = self._engine.conn
        if status == 101 and self.tunnel_in is not None:
            self._raw = True
            lines = ["HTTP/1.1 101 Switching Protocols"] + [f"{k}: {v}" for k, v in headers]
            conn.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            return
        self._no_body = (status in NO_BODY_STATUS or status < 200 or self.head.method == "HEAD")
        has_length = any(k == "content-length" for k, _ in headers)
        if not self._no_body and not has_length and not end:
            if self.head.http_version == "1.1":
                self._chunked = True
            else:
                self.keep_alive = False          # HTTP/1.0 without a length: close delimits
        if not self.body.done and not self._expect_continue:
            # An unread request body would be taken for the next request: close after this one.
            self.keep_alive = False
        if self._expect_continue:
            self.keep_alive = False              # we never said 100: the client may still send
        lines = [f"HTTP/1.1 {status} {reason(status)}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if self._chunked:
            lines.append("transfer-encoding: chunked")
        if end and not has_length and not self._no_body:
            lines.append("content-length: 0")
        if not self.keep_alive:
            lines.append("connection: close")
        if self._continue_first:
            self._continue_first = False
            conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def _send_data(self, data: bytes) -> None:
        self._write_data(data)
        await self._engine.conn.drain()

    def _write_data(self, data: bytes) -> None:
        conn = self._engine.conn
        if self._raw:
            conn.write(data)
        elif self._no_body:
            return
        elif self._chunked:
            conn.write(b"%x\r\n" % len(data) + data + b"\r\n")
        else:
            conn.write(data)

    async def _send_end(self, trailers: list[tuple[str, str]] | None) -> None:
        if self._raw:
            return
        self._write_end(trailers)
        await self._engine.conn.drain()

    def _write_end(self, trailers: list[tuple[str, str]] | None) -> None:
        if self._chunked and not self._raw:
            tail = "".join(f"{k}: {v}\r\n" for k, v in trailers or ())
            self._engine.conn.write(b"0\r\n" + tail.encode("latin-1") + b"\r\n")

    def _abort(self) -> None:
        self._engine.conn.abort()


class H1Engine:
    """Feeds bytes to httptools, queues the parsed requests and runs the app on each in turn."""

    def __init__(self, conn):
        self.conn = conn
        self.limits = conn.limits
        self.parser = httptools.HttpRequestParser(self)
        self.queue: list[H1Exchange] = []        # at most MAX_PIPELINED + 1
        self.current: H1Exchange | None = None   # the exchange being parsed
        self.running: asyncio.Task | None = None
        self.active: H1Exchange | None = None    # the exchange being answered
        self._url = b""
        # A head being read is kept packed (decode_fields) until it is complete: a slowloris
        # dribbling a header line a second costs its bytes, not three objects per line.
        self._fields = bytearray()
        self._field_count = 0
        self._header_bytes = 0
        # Bytes of the reads in a row that carried none of the request's body: its head, or
        # after it chunk framing and trailers. httptools keeps an unfinished field's bytes
        # (header or trailer) until the field ends: one without an end is bounded here.
        self._bodiless_bytes = 0
        self._body_bytes = 0
        self._upgrade: bytes | None = None
        self._failed = False
        self._in_headers = False
        self._began = False                      # a request began in the bytes being parsed
        self._close_after: tuple[int, str] | None = None
        self._tunnel: BodyBuffer | None = None   # an Upgrade request's bytes after its head

    # --- bytes in ---
    def data_received(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel.feed(data)
            return
        if self._failed:
            return
        try:
            body_before = self._body_bytes
            self.parser.feed_data(data)
            if self._began:
                self._began = False
                if self._in_headers:             # its head is not all here: it has 10 s
                    self.conn.set_header_deadline()
            elif self._body_bytes != body_before:
                self._bodiless_bytes = 0
            elif self._in_headers or self._mid_body():   # all head, or framing and trailers
                self._bodiless_bytes += len(data)
                if self._bodiless_bytes > self.limits.max_header_bytes:
                    self._refuse_bodiless()
        except httptools.HttpParserUpgrade as up:
            self._on_upgrade(data[up.args[0]:] if up.args else b"")
        except httptools.HttpParserCallbackError as err:
            refused = err.__context__
            if not isinstance(refused, _Refused):
                raise
            self._fail(refused.status, refused.message)
        except httptools.HttpParserError as err:
            if self.current is not None and self.current.body is not None \
                    and self.current.head.has_body and not self.current.body.done:
                self.current.body.fail(ClientGone(f"bad request body: {err}"))
            self._fail(400, f"malformed request: {err}")

    def _mid_body(self) -> bool:
        return self.current is not None and not self.current.body.done

    def _refuse_bodiless(self) -> None:
        if self._in_headers:
            self._fail(431, "request header fields too large")
            return
        self.current.body.fail(ClientGone("request trailer fields or chunk framing too large"))
        self._fail(431, "request trailer fields too large")

    def _fail(self, status: int, message: str) -> None:
        """A request we will not parse further: answer it (unless a response is already on the
        wire for it) and close once the responses ahead of it are written."""
        self._failed = True
        self.conn.clear_header_deadline()
        if self.active is None and not self.queue:
            self.conn.write(error_response(status, message))
            self.conn.close()
        else:
            self._close_after = (status, message)
            self.conn.pause_reading()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._fields = bytearray()
        self._field_count = 0
        self._header_bytes = 0
        self._bodiless_bytes = 0
        self._body_bytes = 0
        self._upgrade = None
        self._in_headers = True
        self._began = True               # the header deadline is set after this read if needed

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4        # _count, inline: every field
        if self._header_bytes > self.limits.max_header_bytes:
            raise _Refused(431, "request header fields too large")
        if self._field_count >= self.limits.max_headers:
            raise _Refused(431, "too many header fields")
        self._field_count += 1
        if not self._in_headers and self.current is not None:     # a chunked body's trailers
            self.current.head.headers.append((name.decode("latin-1").lower(),
                                              value.decode("latin-1")))
            return
        fields = self._fields
        fields += _FIELD.pack(len(name), len(value))
        fields += name
        fields += value

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self.limits.max_header_bytes:
            raise _Refused(431, "request header fields too large")

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self.conn.clear_header_deadline()
        headers = decode_fields(self._fields)
        self._fields = bytearray()
        url = self._url
        if url[:1] == b"/" and b"?" not in url and b"#" not in url:
            parsed, path, query = None, url.decode("latin-1"), ""     # origin form, no query
        else:
            parsed = httptools.parse_url(url) if not url.startswith(b"*") else None
            path = (parsed.path or b"/").decode("latin-1") if parsed else "*"
            query = (parsed.query or b"").decode("latin-1") if parsed else ""
        host, length, upgrade, chunked, expect = "", None, "", False, False
        for k, v in headers:                     # one pass for the fields the framing needs
            if k == "host":
                host = host or v
            elif k == "content-length":
                length = v if length is None else length
            elif k == "transfer-encoding":
                chunked = True
            elif k == "expect":
                expect = expect or v.lower() == "100-continue"
            elif k == "upgrade":
                upgrade = upgrade or v
        if not host and parsed is not None and parsed.host:
            host = parsed.host.decode("latin-1")
        version = self.parser.get_http_version()
        if version == "1.1" and not host:
            raise _Refused(400, "missing Host header")
        if length is not None and not length.isdigit():
            raise _Refused(400, "bad Content-Length")
        if length is not None and int(length) > self.limits.max_body_bytes:
            raise _Refused(413, "request body too large")
        method = self.parser.get_method()
        has_body = chunked or (length is not None and int(length) > 0)
        head = RequestHead(_METHODS.get(method) or method.decode("latin-1"), path, query,
                           headers, version, self.conn.scheme, _authority(host), self.conn.peer,
                           has_body, host)
        if has_body:
            body = BodyBuffer(self.limits.body_buffer_bytes, self.conn.pause_reading,
                              self._body_consumed)
        else:
            body = NO_BODY
        self.current = H1Exchange(self, head, body, self.parser.should_keep_alive(), expect)
        if self.parser.should_upgrade():
            self._upgrade = upgrade.encode()
            return
        self.queue.append(self.current)
        if len(self.queue) > MAX_PIPELINED:
            self.conn.pause_reading()
        self._run()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body_bytes:
            self.current.body.fail(BodyTooLarge("request body too large"))
            raise _Refused(413, "request body too large")
        self.current.body.feed(body)

    def on_message_complete(self) -> None:
        if self.current is not None:
            self.current.body.finish()

    def _body_consumed(self, n: int) -> None:
        if len(self.queue) <= MAX_PIPELINED:
            self.conn.resume_reading()

    def _on_upgrade(self, rest: bytes) -> None:
        ex = self.current
        token = (self._upgrade or b"").decode("latin-1").lower()
        settings = ex.head.header("http2-settings") if ex is not None else None
        if "h2c" in token.split(",") or token.strip() == "h2c":
            if settings is None or ex.head.has_body or self.conn.scheme != "http" \
                    or self.active is not None or self.queue:
                self._fail(400, "h2c upgrade needs HTTP2-Settings, no body, nothing in flight")
                return
            self.conn.write(b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\n"
                            b"upgrade: h2c\r\n\r\n")
            ex.head.http_version = "2"
            self.conn.switch_to_h2((settings, ex.head), rest)
            return
        if ex is None or ex.head.has_body or self.active is not None or self.queue:
            self._fail(400, "an Upgrade request must have no body and nothing before it")
            return
        # Anything else (WebSocket...): the app decides; a 101 makes the connection a tunnel.
        ex.head.extra["upgrade"] = token
        ex.keep_alive = False
        self._tunnel = ex.tunnel_in = BodyBuffer(self.limits.body_buffer_bytes,
                                                 self.conn.pause_reading,
                                                 lambda n: self.conn.resume_reading())
        if rest:
            self._tunnel.feed(rest)
        self.queue.append(ex)
        self._run()

    # --- running the app ---
    def _run(self) -> None:
        """Answer the next request unless one is being answered. An app with a `start` method
        (the proxy) may answer it from callbacks, with no Task (its fast path); else, or for
        the rest of an exchange it hands back, a Task runs it."""
        if self.running is not None or self.active is not None:
            return
        start = getattr(self.conn.app, "start", None)
        if start is None or not self.queue or self.conn.closed or not self.conn.writable:
            self.running = self.conn.loop.create_task(self._serve_queue())
            return
        ex = self.active = self.queue.pop(0)
        try:
            work = start(ex, self._handed_back)
        except Exception as exc:                 # noqa: BLE001 - answered as a handler's crash
            work = raising(exc)
        if work is not None:
            self._serve_in_task(ex, work)

    def _serve_in_task(self, ex: H1Exchange, work: Awaitable[None]) -> None:
        """Run `work`, the handling of `ex`, then the queue, in a Task. A Task cancelled
        before its first step (the connection lost in the same turn of the loop) never starts
        its coroutine, so it never awaits `work`: closed then, not left to warn at collection."""
        task = self.running = self.conn.loop.create_task(self._serve_queue((ex, work)))
        close = getattr(work, "close", None)
        if close is not None:
            task.add_done_callback(lambda _: close())

    def _handed_back(self, ex: H1Exchange, rest: Awaitable[None] | None) -> None:
        """The app's `start` is done with `ex`: answered in full (`rest` None), or the rest of
        the exchange is `rest`, to run as any other request's handling."""
        if rest is not None:
            self._serve_in_task(ex, rest)
            return
        self.active = None
        if self._after(ex):
            if self.queue:
                self._run()
            else:
                self._wait_for_next()

    def _after(self, ex: H1Exchange) -> bool:
        """An exchange is over: close the connection unless it is kept alive (False then)."""
        if not ex.keep_alive or not ex.finished:
            self.conn.close()
            return False
        if len(self.queue) <= MAX_PIPELINED:
            self.conn.resume_reading()
        return not self.conn.closed

    def _wait_for_next(self) -> None:
        if self._close_after and not self.conn.closed:
            self.conn.write(error_response(*self._close_after))
            self.conn.close()
        elif not self.conn.closed:
            self.conn.set_header_deadline(self.limits.keepalive_timeout_s)

    async def _serve_queue(self, first: tuple[H1Exchange, Awaitable[None]] | None = None) -> None:
        try:
            while not self.conn.closed:
                if first is not None:
                    (ex, work), first = first, None
                elif self.queue:
                    ex, work = self.queue.pop(0), None
                else:
                    break
                self.active = ex
                await self._serve(ex, work)
                self.active = None
                if not self._after(ex):
                    return
            self._wait_for_next()
        finally:
            self.running = None
            self.active = None
            if self.queue and not self.conn.closed:
                self._run()

    async def _serve(self, ex: H1Exchange, work: Awaitable[None] | None = None) -> None:
        try:
            await (self.conn.app(ex) if work is None else work)
            if not ex.response_started:
                await ex.respond(500, b"no response\n")
            await ex.end()
        except ClientGone:
            self.conn.abort()
        except BodyTooLarge:
            if not ex.response_started:
                ex.keep_alive = False
                await _quiet(ex.respond(413, b"request body too large\n"))
            else:
                self.conn.abort()
        except Exception:
            log.exception("request handler failed")
            if not ex.response_started and not self.conn.closed:
                ex.keep_alive = False
                await _quiet(ex.respond(500, b"internal error\n"))
            else:
                self.conn.abort()

    # --- from the connection ---
    def idle(self) -> bool:
        return self.active is None and not self.queue

    def header_timeout(self) -> None:
        if self._in_headers and self.active is None and not self.queue:
            self.conn.write(error_response(408, "request header timeout"))
            self.conn.close()
        elif self.active is None and not self.queue:
            self.conn.close()                    # a kept-alive connection with nothing more

    def idle_timeout(self) -> None:
        self.conn.close()

    def connection_lost(self) -> None:
        for ex in ([self.active] if self.active else []) + list(self.queue):
            ex.body.fail(ClientGone("client closed the connection"))
        if self.current is not None:
            self.current.body.fail(ClientGone("client closed the connection"))
        if self._tunnel is not None:
            self._tunnel.fail(ClientGone("client closed the connection"))
        if self.running is not None:
            self.running.cancel()
        # Nothing is parsed any more: the parser (which holds this engine's callbacks) and the
        # exchange last parsed (which holds this engine) are let go, as the connection lets go
        # of this engine, so that reference counting frees them all (see ServerConnection).
        self.parser = self.current = None


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


async def _quiet(coro) -> None:
    try:
        await coro
    except (ClientGone, ConnectionError):
        pass
