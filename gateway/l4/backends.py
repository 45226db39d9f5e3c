"""The L4 balancer's backends: addresses with a health state and a count of what they carry.

A backend leaves balancing at once when a connection to it is refused or times out (a killed
gateway refuses at once on its host), and after `fall` failed active checks in a row; it comes
back after `rise` good checks in a row. An active check is a TCP connect — with a PROXY v2 LOCAL
header when the balancer speaks the PROXY protocol, so the gateway knows it is no client's.
UDP backends have no connection to check: they are judged passively (ICMP "port unreachable"
takes one out) and retried after `retry_s`."""
from __future__ import annotations

import asyncio
import logging
import time

from gateway.http.proxyproto import v2_local_header
from gateway.upstream.health import HealthSettings

log = logging.getLogger("gateway.lb")

CHECKS = HealthSettings(interval_s=0.5, timeout_s=0.5, fall=2, rise=2)   # the L4 defaults


class L4Backend:
    """One HOST:PORT behind the balancer. Has what gateway.upstream.balance.Balancer picks by."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.url = f"{host}:{port}"
        self.healthy = True
        self.ejected_until = 0.0
        self.in_flight = 0           # open TCP connections, or UDP sessions

    def available(self, now: float) -> bool:
        return self.healthy and now >= self.ejected_until

    def failed(self, why: str, retry_s: float | None) -> None:
        """A connection (or datagram) to it failed: out of balancing until active checks see
        it healthy again (`retry_s` None) or for `retry_s` (UDP: no active checks)."""
        if self.available(time.monotonic()):
            log.warning("backend %s is down (%s)", self.url, why)
        if retry_s is None:
            self.healthy = False
        else:
            self.ejected_until = time.monotonic() + retry_s

    def __repr__(self) -> str:
        return f"L4Backend({self.url})"


def parse_backends(text: str) -> list[L4Backend]:
    """`host:port,host:port,...` ([v6]:port too); ValueError with what is wrong."""
    out = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"backend {item!r} is not HOST:PORT")
        out.append(L4Backend(host.strip("[]"), int(port)))
    if not out:
        raise ValueError("no backends given")
    if len({b.url for b in out}) != len(out):
        raise ValueError("a backend is named twice")
    return out


async def probe(backend: L4Backend, timeout_s: float, proxy_protocol: bool) -> bool:
    """One active check: can a TCP connection be made (and, with the PROXY protocol, its
    LOCAL header be written) in time?"""
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(backend.host, backend.port)
            if proxy_protocol:
                writer.write(v2_local_header())
                await writer.drain()
        return True
    except (OSError, TimeoutError):
        return False
    finally:
        if writer is not None:
            writer.close()


async def watch(backend: L4Backend, settings: HealthSettings, proxy_protocol: bool) -> None:
    """Check `backend` until cancelled, moving it in and out of balancing."""
    passes = fails = 0
    was_healthy = backend.healthy
    while True:
        ok = await probe(backend, settings.timeout_s, proxy_protocol)
        if was_healthy and not backend.healthy:
            passes = 0                        # taken out by a failed connection meanwhile
        passes, fails = (passes + 1, 0) if ok else (0, fails + 1)
        if backend.healthy and fails >= settings.fall:
            backend.healthy = False
            log.warning("backend %s is down (%d failed checks)", backend.url, fails)
        elif not backend.healthy and passes >= settings.rise:
            backend.healthy = True
            log.warning("backend %s is up again", backend.url)
        was_healthy = backend.healthy
        await asyncio.sleep(settings.interval_s)
