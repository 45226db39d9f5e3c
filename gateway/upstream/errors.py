"""How an upstream try failed, so the proxy knows whether it may try again."""
from __future__ import annotations

import asyncio
from typing import Callable, TypeVar

P = TypeVar("P", bound=asyncio.Protocol)


class UpstreamError(Exception):
    """A failure talking to an upstream. `sent` says whether any byte of the request may have
    reached it (then only an idempotent request without a body may be tried again)."""
    status = 502

    def __init__(self, message: str, sent: bool = True):
        super().__init__(message)
        self.sent = sent


class ConnectFailed(UpstreamError):
    def __init__(self, message: str):
        super().__init__(message, sent=False)


class UpstreamTimeout(UpstreamError):
    status = 504


class Overloaded(UpstreamError):
    """Too many requests already waiting for this upstream (the circuit breaker): 503."""
    status = 503

    def __init__(self, message: str):
        super().__init__(message, sent=False)


async def connect(factory: Callable[[], P], host: str, port: int, timeout: float) -> P:
    """A new connection with protocol `factory()`, or ConnectFailed (nothing was sent)."""
    loop = asyncio.get_running_loop()
    try:
        _, protocol = await asyncio.wait_for(loop.create_connection(factory, host, port), timeout)
    except asyncio.TimeoutError:
        raise ConnectFailed(f"connect to {host}:{port} timed out after {timeout:g}s") from None
    except OSError as err:
        raise ConnectFailed(f"connect to {host}:{port}: {err.strerror or err}") from None
    return protocol
