"""UDP balancing: datagrams from one client address form a session bound to one backend (a
connected socket of its own, so the backend's answers find their way back to that client).
Sessions end after `idle_s` without traffic; at most `max_sessions` live at once (the least
recently used is dropped first), so memory stays bounded whatever the clients send. A backend
answering with ICMP "port unreachable" sits out `retry_s`, and its sessions move on their
next datagram."""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Callable

from gateway.l4.backends import L4Backend

log = logging.getLogger("gateway.lb")

QUEUE_MAX = 64                    # datagrams held per session while its socket is opened


class _Session(asyncio.DatagramProtocol):
    def __init__(self, front: "UdpBalancer", client: tuple, backend: L4Backend):
        self.front, self.client, self.backend = front, client, backend
        self.transport: asyncio.DatagramTransport | None = None
        self.queue: list[bytes] = []
        self.last = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport                # type: ignore[assignment]
        for data in self.queue:
            self.transport.sendto(data)
        self.queue.clear()

    def send(self, data: bytes) -> None:
        self.last = time.monotonic()
        if self.transport is not None:
            self.transport.sendto(data)
        elif len(self.queue) < QUEUE_MAX:
            self.queue.append(data)
        else:
            self.front.metrics.udp_dropped.inc()

    def datagram_received(self, data: bytes, addr) -> None:
        self.last = time.monotonic()
        self.front.reply(data, self.client)

    def error_received(self, exc: Exception) -> None:
        self.backend.failed(f"udp: {exc}", self.front.retry_s)
        self.front.end(self.client)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class UdpBalancer(asyncio.DatagramProtocol):
    def __init__(self, backends: list[L4Backend],
                 pick: Callable[[list[L4Backend], str, set[str]], L4Backend | None],
                 metrics, retry_s: float, idle_s: float = 30.0, max_sessions: int = 10_000):
        self.backends, self.pick, self.metrics = backends, pick, metrics
        self.retry_s, self.idle_s, self.max_sessions = retry_s, idle_s, max_sessions
        self.sessions: OrderedDict[tuple, _Session] = OrderedDict()
        self.transport: asyncio.DatagramTransport | None = None
        self._sweeper: asyncio.Task | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self._sweeper = loop.create_task(self._sweep())
        return self.transport.get_extra_info("sockname")[:2]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport                # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr) -> None:
        session = self.sessions.get(addr)
        if session is None:
            session = self._open(addr)
            if session is None:
                self.metrics.udp_dropped.inc()
                return
        else:
            self.sessions.move_to_end(addr)
        session.send(data)

    def _open(self, client: tuple) -> _Session | None:
        backend = self.pick(self.backends, client[0], set())
        if backend is None:
            return None
        while len(self.sessions) >= self.max_sessions:
            self.end(next(iter(self.sessions)))
        session = _Session(self, client, backend)
        self.sessions[client] = session
        backend.in_flight += 1
        self.metrics.connections.labels(backend.url).inc()
        asyncio.get_running_loop().create_task(self._connect(session))
        return session

    async def _connect(self, session: _Session) -> None:
        backend = session.backend
        try:
            await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: session, remote_addr=(backend.host, backend.port))
        except OSError as err:
            backend.failed(f"udp: {err}", self.retry_s)
            self.end(session.client)
            return
        if self.sessions.get(session.client) is not session:   # ended meanwhile
            session.close()

    def reply(self, data: bytes, client: tuple) -> None:
        if self.transport is not None:
            self.transport.sendto(data, client)

    def end(self, client: tuple) -> None:
        session = self.sessions.pop(client, None)
        if session is not None:
            session.backend.in_flight -= 1
            session.close()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(self.idle_s, 5.0))
            cutoff = time.monotonic() - self.idle_s
            for client in [c for c, s in self.sessions.items() if s.last < cutoff]:
                self.end(client)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for client in list(self.sessions):
            self.end(client)
        if self.transport is not None:
            self.transport.close()
