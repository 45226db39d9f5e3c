"""TCP balancing: each accepted connection is spliced to one backend, byte for byte.

The two sides are asyncio protocols joined back to back: what one receives is written to the
other, and when a side's write buffer passes its high-water mark the other side stops reading
until it drains — so a slow reader holds the sender back instead of growing memory (at most
about two write buffers per connection). A connection that cannot reach its chosen backend
(refused, or not accepted within the connect timeout) is tried on the next one before any byte
moved; once bytes moved, a failure is the client's to see (reset), never replayed."""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from gateway.http.proxyproto import v2_header
from gateway.l4.backends import L4Backend

log = logging.getLogger("gateway.lb")

WRITE_HIGH = 256 << 10            # bytes buffered toward one side before the other pauses
PENDING_MAX = 256 << 10           # client bytes held while its backend connection is made


class _Side(asyncio.Protocol):
    """One end of a spliced connection."""

    def __init__(self, on_closed: Callable[["_Side", Exception | None], None],
                 on_made: Callable[["_Side"], None] | None = None):
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.backend: L4Backend | None = None
        self.task: asyncio.Task | None = None     # a client's: connecting to its backend
        self.eof = False
        self._on_closed, self._on_made = on_closed, on_made
        self._held: list[bytes] = []          # received before the peer existed
        self._held_bytes = 0
        self.bytes_in = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport                # type: ignore[assignment]
        self.transport.set_write_buffer_limits(high=WRITE_HIGH)
        if self._on_made is not None:
            self._on_made(self)

    def join(self, peer: "_Side") -> None:
        self.peer = peer
        for data in self._held:
            peer.transport.write(data)
        self._held.clear()
        if self.eof and peer.transport.can_write_eof():
            peer.transport.write_eof()

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self.peer is not None:
            self.peer.transport.write(data)
            return
        self._held.append(data)
        self._held_bytes += len(data)
        if self._held_bytes >= PENDING_MAX:
            self.transport.pause_reading()        # resumed when the backend is joined

    def eof_received(self) -> bool:
        self.eof = True
        if self.peer is not None and not self.peer.transport.is_closing():
            if self.peer.transport.can_write_eof():
                self.peer.transport.write_eof()   # half-close passes through
        if self.peer is not None and self.peer.eof:
            self.transport.close()
        return True                               # keep our sending half open

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and not self.peer.transport.is_closing():
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_closed(self, exc)


class TcpBalancer:
    """Accepts clients on `listen` and splices each to a backend chosen by `pick`."""

    def __init__(self, backends: list[L4Backend],
                 pick: Callable[[list[L4Backend], str, set[str]], L4Backend | None],
                 connect_timeout_s: float, proxy_protocol: bool, metrics, retry_s: float | None):
        self.backends, self.pick = backends, pick
        self.connect_timeout_s = connect_timeout_s
        self.proxy_protocol = proxy_protocol
        self.metrics = metrics
        self.retry_s = retry_s                    # None: active checks bring a backend back
        self.server: asyncio.base_events.Server | None = None
        self.open = 0

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._accept, host, port, reuse_address=True,
                                               backlog=1024)
        return self.server.sockets[0].getsockname()[:2]

    def _accept(self) -> _Side:
        return _Side(self._client_closed, self._client_made)

    def _client_made(self, client: _Side) -> None:
        self.open += 1
        client.task = asyncio.get_running_loop().create_task(self._connect(client))

    async def _connect(self, client: _Side) -> None:
        loop = asyncio.get_running_loop()
        peer = client.transport.get_extra_info("peername")
        sock = client.transport.get_extra_info("sockname")
        tried: set[str] = set()
        while True:
            backend = self.pick(self.backends, peer[0], tried)
            if backend is None:
                self.metrics.refused.inc()
                log.warning("no backend reachable for %s:%d (tried %s)", peer[0], peer[1],
                            ", ".join(sorted(tried)) or "none")
                client.transport.abort()
                return
            tried.add(backend.url)
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    _, upstream = await loop.create_connection(
                        lambda: _Side(self._upstream_closed), backend.host, backend.port)
            except (OSError, TimeoutError) as err:
                self.metrics.connect_failures.labels(backend.url).inc()
                backend.failed(f"connect: {err or 'timed out'}", self.retry_s)
                continue
            backend.in_flight += 1
            upstream.backend = client.backend = backend
            self.metrics.connections.labels(backend.url).inc()
            if client.transport.is_closing():     # the client left meanwhile
                upstream.transport.close()
                return
            if self.proxy_protocol:
                upstream.transport.write(v2_header(peer[:2], sock[:2]))
            upstream.join(client)                 # what the backend sent already, first
            client.join(upstream)
            client.transport.resume_reading()
            return

    def _client_closed(self, client: _Side, exc: Exception | None) -> None:
        self.open -= 1
        if client.peer is not None:
            self._close(client.peer, exc)
        elif client.task is not None:
            client.task.cancel()

    def _upstream_closed(self, upstream: _Side, exc: Exception | None) -> None:
        backend = upstream.backend
        if backend is not None:
            backend.in_flight -= 1
            self.metrics.bytes.labels("down").inc(upstream.bytes_in)
            if upstream.peer is not None:
                self.metrics.bytes.labels("up").inc(upstream.peer.bytes_in)
        if upstream.peer is not None:
            self._close(upstream.peer, exc)

    @staticmethod
    def _close(side: _Side, exc: Exception | None) -> None:
        """The other side ended: end this one too — a reset as a reset, a close after flushing
        what is buffered."""
        if side.transport is None or side.transport.is_closing():
            return
        if exc is not None:
            side.transport.abort()
        else:
            side.transport.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

