"""Active health checks: every `interval_s`, a GET of the route's health path on each upstream
over a fresh connection (HTTP/1.1, or HTTP/2 for h2c:// upstreams). `fall` failures in a row
take the upstream out of balancing until `rise` successes in a row bring it back. A 2xx or 3xx
within `timeout_s` is a success."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from gateway.upstream.errors import UpstreamError
from gateway.upstream.h1client import H1Upstream
from gateway.upstream.h2client import H2Upstream
from gateway.upstream.pool import Backend

log = logging.getLogger("gateway.health")


@dataclass(frozen=True)
class HealthSettings:
    interval_s: float = 2.0
    timeout_s: float = 1.0
    fall: int = 3
    rise: int = 2

    def for_route(self, route) -> "HealthSettings":
        """These settings with what `route` sets for itself (its zero fields keep ours)."""
        interval = route.health_interval_s or self.interval_s
        return HealthSettings(interval_s=interval, timeout_s=min(self.timeout_s, interval),
                              fall=route.health_fall or self.fall,
                              rise=route.health_rise or self.rise)


async def probe(backend: Backend, path: str, timeout_s: float) -> bool:
    """One check: does the upstream answer GET `path` with 2xx/3xx in time?"""
    conn = None
    try:
        async with asyncio.timeout(timeout_s):
            host = f"{backend.host}:{backend.port}"
            if backend.scheme == "h2c":
                conn = await H2Upstream.open(backend.host, backend.port, timeout_s, 65536)
                resp = await conn.send("GET", "http", host, path, [("user-agent", "gfs-gateway")],
                                       None)
            else:
                conn = await H1Upstream.open(backend.host, backend.port, timeout_s, 65536)
                resp = conn.send("GET", path, [("host", host), ("user-agent", "gfs-gateway"),
                                               ("connection", "close")], None, None)
            await resp.wait_head()
            return 200 <= resp.status < 400
    except (UpstreamError, TimeoutError, OSError):
        return False
    finally:
        if conn is not None:
            conn.abort()


class HealthChecker:
    """Checks the upstreams of every route that has a health path; `update` after a route
    change (checks of upstreams no longer named stop, and their state is forgotten)."""

    def __init__(self):
        self._tasks: dict[str, asyncio.Task] = {}
        self._how: dict[str, tuple[str, HealthSettings]] = {}

    def update(self, targets: dict[Backend, tuple[str, HealthSettings]]) -> None:
        """`targets`: backend -> (health path, how to check it)."""
        wanted = {b.url: (b, how) for b, how in targets.items()}
        for url in list(self._tasks):
            if url not in wanted or self._how[url] != wanted[url][1]:
                self._tasks.pop(url).cancel()
                self._how.pop(url, None)
        for url, (backend, how) in wanted.items():
            if url not in self._tasks:
                self._how[url] = how
                self._tasks[url] = asyncio.get_running_loop().create_task(
                    self._watch(backend, *how))

    async def _watch(self, backend: Backend, path: str, s: HealthSettings) -> None:
        passes = fails = 0
        try:
            while True:
                ok = await probe(backend, path, s.timeout_s)
                passes, fails = (passes + 1, 0) if ok else (0, fails + 1)
                if backend.healthy and fails >= s.fall:
                    backend.healthy = False
                    log.warning("upstream %s is down (%d failed checks of %s)", backend.url,
                                fails, path)
                elif not backend.healthy and passes >= s.rise:
                    backend.healthy = True
                    backend.succeeded()
                    log.warning("upstream %s is up again", backend.url)
                await asyncio.sleep(s.interval_s)
        finally:
            backend.healthy = True               # no longer checked: passive ejection only

    def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
