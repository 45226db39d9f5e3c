"""Per-upstream connection pools: kept-alive HTTP/1.1 connections (bounded, closed when idle too
long), a few multiplexed HTTP/2 connections, a bound on requests waiting for a connection (beyond
it: 503 at once, the circuit breaker), and passive ejection after consecutive failures."""
from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.upstream.errors import Overloaded
from gateway.upstream.h1client import H1Upstream
from gateway.upstream.h2client import H2Upstream


@dataclass(frozen=True)
class PoolSettings:
    max_connections: int = 64          # HTTP/1.1 connections per upstream
    max_h2_connections: int = 4        # HTTP/2 connections per upstream
    max_pending: int = 256             # requests waiting for a connection; beyond: 503
    idle_timeout_s: float = 30.0       # a kept-alive connection unused this long is closed
    connect_timeout_s: float = 5.0
    eject_after: int = 5               # consecutive failures that take an upstream out...
    eject_s: float = 10.0              # ...for this long (then one request tries it again)
    buffer_bytes: int = 256 * 1024     # response bytes buffered before reading it pauses


class Backend:
    """One upstream address and its connections."""

    def __init__(self, url: str, settings: PoolSettings):
        parts = urlsplit(url)
        self.url = url
        self.scheme = parts.scheme               # http (HTTP/1.1) or h2c (HTTP/2)
        self.host, self.port = parts.hostname, parts.port
        self.settings = settings
        self.in_flight = 0
        self.failures = 0                        # consecutive
        self.ejected_until = 0.0
        self.healthy = True                      # what active health checks say (health.py)
        self.idle: list[H1Upstream] = []
        self.h1_open = 0
        self.h2: list[H2Upstream] = []
        self._h2_opening = 0
        self._waiters: deque[asyncio.Future] = deque()

    # --- health ---
    def available(self, now: float) -> bool:
        return self.healthy and now >= self.ejected_until

    def succeeded(self) -> None:
        self.failures = 0
        self.ejected_until = 0.0

    def failed(self) -> bool:
        """Count a failure; True if it ejected the upstream."""
        self.failures += 1
        if self.failures >= self.settings.eject_after:
            self.ejected_until = time.monotonic() + self.settings.eject_s
            self.failures = self.settings.eject_after - 1   # after the pause, one more failure
            return True                                     # ejects again
        return False

    @property
    def pending(self) -> int:
        return len(self._waiters)

    @property
    def open_connections(self) -> int:
        return self.h1_open + len(self.h2)

    # --- HTTP/1.1 ---
    def take_idle_h1(self) -> H1Upstream | None:
        """A kept-alive connection that is still open, without waiting; None if there is none."""
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()               # most recently used: warmest, least likely closed
            if not conn.closed and now - conn.idle_since < self.settings.idle_timeout_s:
                return conn
            self._drop_h1(conn)
        return None

    async def acquire_h1(self) -> H1Upstream:
        while True:
            conn = self.take_idle_h1()
            if conn is not None:
                return conn
            if self.h1_open < self.settings.max_connections:
                self.h1_open += 1
                try:
                    return await H1Upstream.open(self.host, self.port,
                                                 self.settings.connect_timeout_s,
                                                 self.settings.buffer_bytes)
                except BaseException:
                    self.h1_open -= 1
                    self._wake()
                    raise
            await self._wait()

    def release_h1(self, conn: H1Upstream) -> None:
        if conn.finished() and len(self.idle) < self.settings.max_connections:
            conn.idle_since = time.monotonic()
            conn.response = None
            self.idle.append(conn)
        else:
            conn.abort()
            self.h1_open -= 1
        self._wake()

    def _drop_h1(self, conn: H1Upstream) -> None:
        conn.abort()
        self.h1_open -= 1

    # --- HTTP/2 ---
    async def acquire_h2(self) -> H2Upstream:
        while True:
            self.h2 = [c for c in self.h2 if not c.closed]
            usable = [c for c in self.h2 if c.capacity > 0]
            if usable:
                return max(usable, key=lambda c: c.capacity)
            if len(self.h2) + self._h2_opening < self.settings.max_h2_connections:
                self._h2_opening += 1
                try:
                    conn = await H2Upstream.open(self.host, self.port,
                                                 self.settings.connect_timeout_s,
                                                 self.settings.buffer_bytes)
                finally:
                    self._h2_opening -= 1
                    self._wake()
                self.h2.append(conn)
                return conn
            await self._wait()

    def release_h2(self) -> None:
        self._wake()

    # --- waiting for a connection ---
    async def _wait(self) -> None:
        if len(self._waiters) >= self.settings.max_pending:
            raise Overloaded(f"{self.url}: {len(self._waiters)} requests already waiting")
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # --- housekeeping ---
    def sweep(self, now: float) -> None:
        """Close connections idle past the timeout."""
        keep = []
        for conn in self.idle:
            if conn.closed or now - conn.idle_since >= self.settings.idle_timeout_s:
                self._drop_h1(conn)
            else:
                keep.append(conn)
        self.idle = keep
        for conn in list(self.h2):
            if conn.closed:
                self.h2.remove(conn)
            elif not conn.streams and now - conn.idle_since >= self.settings.idle_timeout_s:
                conn.close()
                self.h2.remove(conn)

    def close(self) -> None:
        for conn in self.idle:
            self._drop_h1(conn)
        self.idle = []
        for conn in self.h2:
            conn.close()
        self.h2 = []


class Pools:
    """Every upstream the routes name, by URL: a config change keeps the pools of the upstreams
    it still names (no connection dropped) and closes the others once idle."""

    def __init__(self, settings: PoolSettings | None = None):
        self.settings = settings or PoolSettings()
        self.backends: dict[str, Backend] = {}
        self._sweeper: asyncio.Task | None = None

    def get(self, url: str) -> Backend:
        backend = self.backends.get(url)
        if backend is None:
            backend = self.backends[url] = Backend(url, self.settings)
        return backend

    def retain(self, urls: set[str]) -> None:
        for url in list(self.backends):
            backend = self.backends[url]
            if url not in urls and backend.in_flight == 0:
                backend.close()
                del self.backends[url]

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for backend in list(self.backends.values()):
                backend.sweep(now)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for backend in self.backends.values():
            backend.close()
