"""gateway/l4/backends alone: parsing backend lists, and active checks moving a backend out of
and back into balancing against a real listening socket."""
from __future__ import annotations

import asyncio
import socket

import pytest

from gateway.l4.backends import L4Backend, parse_backends, watch
from gateway.upstream.health import HealthSettings


def test_parse_backends():
    bs = parse_backends("a:1, [::1]:2,b:65535")
    assert [(b.host, b.port) for b in bs] == [("a", 1), ("::1", 2), ("b", 65535)]
    for bad, why in [("", "no backends"), ("a", "not HOST:PORT"), ("a:0", "not HOST:PORT"),
                     ("a:70000", "not HOST:PORT"), (":80", "not HOST:PORT"),
                     ("a:1,a:1", "named twice")]:
        with pytest.raises(ValueError, match=why):
            parse_backends(bad)


def test_checks_take_a_dead_backend_out_and_bring_it_back():
    async def main():
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        backend = L4Backend("127.0.0.1", port)        # bound, not listening: refused
        task = asyncio.get_running_loop().create_task(
            watch(backend, HealthSettings(interval_s=0.02, timeout_s=0.5, fall=2, rise=2), True))
        for _ in range(200):
            if not backend.healthy:
                break
            await asyncio.sleep(0.01)
        assert not backend.healthy
        listener.listen()
        for _ in range(200):
            if backend.healthy:
                break
            await asyncio.sleep(0.01)
        assert backend.healthy
        backend.failed("connect refused", None)       # passive: out until checks pass again
        assert not backend.available(0)
        for _ in range(200):
            if backend.healthy:
                break
            await asyncio.sleep(0.01)
        assert backend.healthy
        task.cancel()
        listener.close()
    asyncio.run(main())
