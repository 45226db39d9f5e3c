"""The asyncio protocol under every client connection: write flow control, read pausing, the
deadlines that drop slow or idle clients, and the choice of HTTP/1.1 or HTTP/2 for the
connection (ALPN over TLS, the HTTP/2 preface in clear text, or an h2c Upgrade later)."""
from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, Protocol

from gateway.http.deadlines import DeadlineWheel
from gateway.http.exchange import ClientGone, Exchange
from gateway.http.h1 import HEAD_TOO_LARGE, HEAD_WAIT, H1Engine, error_response, first_head
from gateway.http.limits import Limits

App = Callable[[Exchange], Awaitable[None]]
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
COALESCE_BYTES = 64 * 1024      # writes smaller than this wait for the end of the loop's turn


class Registry(Protocol):
    """Who keeps a server's open connections (the HttpServer)."""

    def connection_opened(self, conn: "ServerConnection") -> None: ...

    def connection_closed(self, conn: "ServerConnection") -> None: ...


class ServerConnection(asyncio.Protocol):
    """One client connection. The protocol engine (h1.H1Engine or h2.H2Engine) parses and
    frames; this class owns the transport and time.

    Slots, and no engine until a first head is whole (see h1.first_head): what an open
    connection costs is most of what 10,000 slow clients cost (bench/gateway_memory.py)."""

    __slots__ = ("app", "limits", "scheme", "transport", "peer", "engine", "closed", "_writable",
                 "_write_waiters", "_reading_paused", "_pending", "_deadline_header",
                 "_deadline_idle", "_deadlines", "_tick", "_tick_at", "_registry",
                 "_proxy_from", "_awaiting_proxy", "_out", "_out_size", "_flush_handle",
                 "batching", "loop", "__weakref__")

    def __init__(self, app: App, limits: Limits, scheme: str = "http",
                 registry: Registry | None = None, proxy_from=None,
                 deadlines: DeadlineWheel | None = None):
        """`registry`: told of the connection when it opens and when it closes. `proxy_from`: a
        PrefixTrie of the peers (L4 balancers) whose connections start with a PROXY protocol
        header naming the client; None: nobody's do. `deadlines`: the timer the server's
        connections share (one of its own if None)."""
        self.app = app
        self.limits = limits
        self.scheme = scheme
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.engine = None
        self.closed = False
        self._writable = True                    # False while the transport's buffer is full
        self._write_waiters: list[asyncio.Future] | None = None   # made only when one waits
        self._reading_paused = False
        self._pending = b""                      # first bytes, until an engine is made
        self._deadline_header = 0.0              # monotonic; 0 = none
        self._deadline_idle = 0.0
        self._deadlines = deadlines
        self._tick: int | None = None            # where the deadline timer has us filed
        self._tick_at = 0.0                      # for which deadline
        self._registry = registry
        self._proxy_from = proxy_from
        self._awaiting_proxy = False
        self._out: list[bytes] | None = None     # small writes of this turn of the loop
        self._out_size = 0
        self._flush_handle: asyncio.Handle | None = None
        self.batching = False                    # a writer that flushes itself when done
        self.loop: asyncio.AbstractEventLoop | None = None      # set by connection_made

    # --- asyncio.Protocol ---
    def connection_made(self, transport: asyncio.Transport) -> None:
        # Kept: on Python 3.11 every asyncio.get_running_loop() is a getpid() system call (the
        # wheel's loop: no call at all per connection).
        if self._deadlines is None:
            self._deadlines = DeadlineWheel(asyncio.get_running_loop())
        self.loop = self._deadlines.loop
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if not isinstance(peer, tuple):
            peer = ("", 0)
        self.peer = peer if len(peer) == 2 else (peer[0], peer[1])    # IPv6: 4 items
        self._awaiting_proxy = bool(self._proxy_from is not None and
                                    self._proxy_from.longest(self.peer[0]))
        transport.set_write_buffer_limits(high=self.limits.write_buffer_bytes)
        if self._registry is not None:
            self._registry.connection_opened(self)
        self.touch()
        self.set_header_deadline()
        if self.scheme == "https":
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
                self._start_h2(b"")

    def data_received(self, data: bytes) -> None:
        self.touch()
        if self._awaiting_proxy:
            data = self._proxy_header(data)
            if not data:
                return
        if self.engine is None:
            pending = self._pending = self._pending + data
            if H2_PREFACE.startswith(pending[:len(H2_PREFACE)]):
                if len(pending) < len(H2_PREFACE):
                    return                       # could still be the HTTP/2 preface
            else:
                head = first_head(pending, self.limits.max_header_bytes)
                if head is HEAD_WAIT:
                    return                       # an HTTP/1.1 head still coming
                if head is HEAD_TOO_LARGE:
                    self._pending = b""
                    self.write(error_response(431, "request header fields too large"))
                    self.close()
                    return
            data, self._pending = pending, b""
            if data.startswith(H2_PREFACE):
                self._start_h2(data)
                return
            self.engine = H1Engine(self)
        self.engine.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._discard_out()
        self._wake_writers()
        if self._tick is not None:
            self._deadlines.remove(self)
        if self.engine is not None:
            self.engine.connection_lost()
        if self._registry is not None:
            self._registry.connection_closed(self)
        # The engine and this object refer to each other: let go of it here, so that both go
        # when their last reference does, not at the next pass of the cyclic garbage collector
        # (which took ~6 % of the gateway's time under a new connection per request).
        self.engine = None

    @property
    def writable(self) -> bool:
        """The client is keeping up: the transport's buffer is below its mark."""
        return self._writable

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._wake_writers()

    def _wake_writers(self) -> None:
        self._writable = True
        waiters, self._write_waiters = self._write_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def _proxy_header(self, data: bytes) -> bytes:
        """Take the PROXY header off the front; what follows it (b"" while it is incomplete)."""
        from gateway.http.proxyproto import ProxyHeaderError, V2_MAX, parse
        buf = self._pending + data
        try:
            got = parse(buf)
        except ProxyHeaderError:
            self.abort()                          # a trusted balancer never sends this
            return b""
        if got is None:
            if len(buf) > V2_MAX:
                self.abort()
            self._pending = buf
            return b""
        address, used = got
        if address is not None:
            self.peer = address
        self._awaiting_proxy = False
        self._pending = b""
        return buf[used:]

    # --- for the engines ---
    def _start_h2(self, data: bytes, upgrade: tuple | None = None) -> None:
        from gateway.http.h2 import H2Engine
        self.engine = H2Engine(self, upgrade=upgrade)
        if data:
            self.engine.data_received(data)

    def switch_to_h2(self, upgrade: tuple, rest: bytes) -> None:
        """An HTTP/1.1 request asked for `Upgrade: h2c`; `upgrade` is (settings, head)."""
        self._start_h2(rest, upgrade=upgrade)

    def write(self, data: bytes) -> None:
        """Queue `data` for the client. Small writes made in one turn of the event loop (a
        response head and its body; the frames of many HTTP/2 streams) go out together in one
        send at the end of the turn; past COALESCE_BYTES they go at once."""
        if self.closed:
            return
        self._deadline_idle = time.monotonic() + self.limits.idle_timeout_s
        out = self._out
        if not out and len(data) >= COALESCE_BYTES:
            self.transport.write(data)
            return
        if out is None:
            out = self._out = []
        out.append(data)
        self._out_size += len(data)
        if self._out_size >= COALESCE_BYTES:
            self.flush()
        elif self._flush_handle is None and not self.batching:
            self._flush_handle = self.loop.call_soon(self.flush)

    def write_now(self, data: bytes) -> None:
        """`data` to the transport at once, after whatever this turn queued before it."""
        if self.closed:
            return
        self._deadline_idle = time.monotonic() + self.limits.idle_timeout_s
        if self._out:
            self._out.append(data)
            self.flush()
        else:
            self.transport.write(data)

    def flush(self) -> None:
        """Hand the queued writes to the transport now."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._out and not self.closed:
            out = self._out
            self._out, self._out_size = None, 0
            self.transport.writelines(out)

    def _discard_out(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._out, self._out_size = None, 0

    async def drain(self) -> None:
        """Wait while the client is slower than us (the transport's buffer is past its mark)."""
        if self.closed:
            raise ClientGone("connection closed")
        if not self._writable:
            # A future per waiter, made only now: an idle connection holds no Event (and its
            # 600-byte deque), and one cancelled waiter does not cancel the others.
            waiter = self.loop.create_future()
            if self._write_waiters is None:
                self._write_waiters = []
            self._write_waiters.append(waiter)
            try:
                await waiter
            finally:
                if self._write_waiters is not None and waiter in self._write_waiters:
                    self._write_waiters.remove(waiter)
            if self.closed:
                raise ClientGone("connection closed")

    def pause_reading(self) -> None:
        if not self._reading_paused and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.flush()
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        if not self.closed:
            self._discard_out()
            self.closed = True
            self.transport.abort()

    # --- deadlines: filed in the shared timer at the nearest one, looked at again then ---
    def touch(self) -> None:
        self._deadline_idle = time.monotonic() + self.limits.idle_timeout_s
        self._arm()

    def set_header_deadline(self, seconds: float | None = None) -> None:
        self._deadline_header = time.monotonic() + (
            self.limits.header_timeout_s if seconds is None else seconds)
        self._arm()

    def clear_header_deadline(self) -> None:
        self._deadline_header = 0.0

    def _arm(self) -> None:
        if self.closed:
            return
        header, nearest = self._deadline_header, self._deadline_idle   # idle: always set
        if header and header < nearest:
            nearest = header
        if self._tick is not None and nearest >= self._tick_at:
            return                     # the timer goes off sooner and re-files for the rest
        self._tick_at = nearest
        self._deadlines.file(self, nearest)

    def _check(self) -> None:
        if self.closed:
            return
        now = time.monotonic()
        if self._deadline_header and now >= self._deadline_header:
            if self.engine is not None:
                self.engine.header_timeout()
            elif self._pending and not self._awaiting_proxy:   # a first head, unfinished
                self.write(error_response(408, "request header timeout"))
                self.close()
            else:
                self.abort()
            return
        # Idle: nothing in flight, or a response blocked on a client that stopped reading. A
        # request waiting on its upstream is the upstream timeouts' business, not this one's.
        stuck = not self._writable
        if now >= self._deadline_idle and (self.engine is None or stuck or self.engine.idle()):
            if self.engine is not None:
                self.engine.idle_timeout()
            else:
                self.abort()
            return
        if now >= self._deadline_idle:                 # busy: look again later
            self._deadline_idle = now + self.limits.idle_timeout_s
        self._arm()
