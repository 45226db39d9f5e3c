"""What a closed client connection leaves behind (issue 17, bounded memory): nothing. A real
HttpServer on uvloop, real loopback sockets: slow clients (a head dribbled a line at a time, or
nothing at all) dropped by the header timeout, clients that hang up mid-body, kept-alive
clients that go away; afterwards no connection, engine, transport or timer of theirs is still
referenced, the server's set of connections is back to a small table, and the trimmer gives
the freed memory back once. RSS itself is measured in bench/gateway_memory.py, not here."""
from __future__ import annotations

import asyncio
import gc
import sys
import weakref

import pytest
import uvloop

from gateway.http.limits import Limits
from gateway.http.server import HttpServer
from gateway.memory import Trimmer, release_free_memory

# (a header timeout long enough that no connection times out before all 150 of the peak are
# open, even on a loaded machine: the check at the peak expects nothing gone yet)
LIMITS = Limits(header_timeout_s=2.0, idle_timeout_s=5.0, keepalive_timeout_s=5.0)
SLOW, NOTHING, HANG_UP, KEPT = 80, 80, 30, 30


async def app(ex) -> None:
    """Reads the whole body (the cut-short clients leave it waiting), answers its length."""
    size = 0
    while data := await ex.read():
        size += len(data)
    await ex.respond(200, b"%d\n" % size)


async def slow(port: int) -> bool:
    """Dribbles a few header lines (well inside the header timeout, so that none is written
    after the server's close: that would reset the connection and lose the 408), then waits;
    True when the server answered 408 and closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n")
    for i in range(3):
        await asyncio.sleep(0.05)
        writer.write(b"X-Slow-%d: %d\r\n" % (i, i))
    got = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return got.startswith(b"HTTP/1.1 408")


async def silent(port: int) -> bool:
    """Sends nothing; True when the server closed it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    closed = await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    return closed


async def hang_up(port: int) -> None:
    """A request body cut short: the app is waiting on it when the client goes."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n0123456789")
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()


async def kept(port: int) -> bytes:
    """Two requests on one kept-alive connection, then the client closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    got = b""
    while got.count(b"HTTP/1.1 200") < 2:
        got += await asyncio.wait_for(reader.read(4096), 5)
    writer.close()
    return got


def test_closed_connections_leave_nothing_referenced():
    async def go():
        server = HttpServer(app, LIMITS)
        held: list[weakref.ref] = []
        opened, closed = server.connection_opened, server.connection_closed

        def watch_open(conn):
            held.append(weakref.ref(conn))
            held.append(weakref.ref(conn.transport))
            opened(conn)

        def watch_close(conn):
            assert conn._tick is None                # out of the deadline timer
            for part in (conn.engine, conn.engine and conn.engine.running):
                if part is not None:
                    held.append(weakref.ref(part))
            closed(conn)
        server.connection_opened, server.connection_closed = watch_open, watch_close
        trims = []
        trimmer = Trimmer(server, trim=lambda: trims.append(len(server.connections)), drop=100)
        port = (await server.start("127.0.0.1", 0))[1]
        empty_set = sys.getsizeof(server.connections)
        clients = ([slow(port) for _ in range(SLOW)] + [silent(port) for _ in range(NOTHING)]
                   + [hang_up(port) for _ in range(HANG_UP)] + [kept(port) for _ in range(KEPT)])
        watcher = asyncio.ensure_future(asyncio.gather(*clients))
        while not watcher.done() and server.high_water < 150:
            await asyncio.sleep(0.02)
        assert not trimmer.check()                   # peak now: nothing has gone yet
        results = await asyncio.wait_for(watcher, 20)
        for _ in range(50):                          # the server's side of the last closes
            if not server.connections:
                break
            await asyncio.sleep(0.02)
        assert sum(results[:SLOW]) == SLOW           # every slow one got its 408...
        assert all(results[SLOW:SLOW + NOTHING])     # ...the silent ones were closed
        assert all(r.count(b"HTTP/1.1 200") == 2 for r in results[-KEPT:])
        assert server.connections == set()
        assert sys.getsizeof(server.connections) > empty_set     # the peak's table, still
        assert trimmer.check() and trims == [0]      # gone since the peak: a trim...
        assert trimmer.check() and trims == [0, 0]   # ...the last one for this fall...
        assert not trimmer.check()                   # ...and no other while nothing changes
        assert sys.getsizeof(server.connections) == empty_set
        await asyncio.sleep(0.05)
        gc.collect()
        alive = [ref() for ref in held if ref() is not None]
        assert not alive, f"{len(alive)} objects of closed connections still referenced: " \
                          f"{sorted({type(a).__name__ for a in alive})}"
        assert len(held) >= 2 * (SLOW + NOTHING + HANG_UP + KEPT)
        await server.close()
    uvloop.run(go())


def test_trims_during_a_fall_and_once_when_it_stops():
    class Server:
        def __init__(self):
            self.connections: set = set()
            self.peak = 0

        def settle(self) -> int:
            peak, self.peak = self.peak, len(self.connections)
            return peak

    server, trims = Server(), []
    trimmer = Trimmer(server, trim=lambda: trims.append(len(server.connections)), drop=10)

    def look(open_now: int, peak_between: int = 0) -> bool:
        server.connections = set(range(open_now))
        server.peak = max(peak_between, open_now)
        return trimmer.check()
    assert not look(30)
    assert not look(25)                              # 5 gone: not yet
    assert look(19) and trims == [19]                # 11 gone since the peak of 30
    assert not look(12)                              # 7 more, counted from 19: still falling
    assert look(12) and trims == [19, 12]            # the fall stopped: the last trim for it
    assert not look(12) and not look(14)             # nothing more while it does not fall
    assert look(3, peak_between=40) and trims[-1] == 3     # a peak between two looks counts
    assert look(3) and len(trims) == 4
    assert not look(3)


def test_trims_when_the_resident_size_has_grown_at_most_once_per_gap():
    """Large bodies leave freed buffers in the heap; with the connections steady, growth of
    the resident size alone brings a trim, but not more often than the gap allows."""
    class Server:
        connections: set = {1, 2}

        def settle(self) -> int:
            return 2
    state = {"rss": 100 << 20, "now": 0.0}
    trims = []

    def trim() -> bool:
        trims.append(state["now"])
        state["rss"] = 101 << 20                     # what a trim gives back
        return True
    trimmer = Trimmer(Server(), trim=trim, rss=lambda: state["rss"], growth=32 << 20,
                      growth_gap_s=10.0, clock=lambda: state["now"])

    def look(at: float, rss_mib: int) -> bool:
        state["now"], state["rss"] = at, rss_mib << 20
        return trimmer.check()
    assert not look(5, 200)                          # grown, but within the gap since the start
    assert look(10, 200) and trims == [10]
    assert not look(12, 140)                         # 39 MiB over the last trim's 101: too soon
    assert not look(25, 120)                         # past the gap, but grown only 19 MiB
    assert look(26, 134) and trims == [10, 26]       # 33 MiB


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_release_free_memory_calls_glibc():
    assert release_free_memory()


def test_a_closed_connection_is_freed_by_reference_counting_alone():
    """A connection answered on the proxy's fast path and closed leaves no reference cycle:
    its protocol object, engine and exchange go when the connection does, with the cyclic
    garbage collector off (it used to take ~6 % of the gateway's time under a new connection
    per request)."""
    from tests.unit.gateway_server import proxy_before, serve_requests

    async def answer(head: bytes, writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return True

    async def go():
        async with proxy_before(lambda r, w: serve_requests(r, w, answer)) as (proxy, port, _):
            await served_and_closed(proxy, port)

    async def served_and_closed(proxy, port: int):
        held: list[weakref.ref] = []
        start = proxy.start

        def watch_start(ex, handed_back):
            held.append(weakref.ref(ex))     # (a parser has no weak references: its engine
                                             # holding on to it would keep the engine)
            conn = ex._engine.conn
            held.extend((weakref.ref(conn), weakref.ref(ex._engine)))
            return start(ex, handed_back)
        proxy.start = watch_start
        gc.collect()
        gc.disable()
        try:
            for close in (b"", b"Connection: close\r\n"):   # the client or the gateway closes
                for _ in range(3):                           # (the first fills the pool)
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n" + close + b"\r\n")
                    got = await reader.readuntil(b"ok")
                    assert got.startswith(b"HTTP/1.1 200")
                    writer.close()
                    await writer.wait_closed()
            for _ in range(50):
                if not any(ref() is not None for ref in held):
                    break
                await asyncio.sleep(0.02)
            alive = [ref() for ref in held if ref() is not None]
            assert len(held) == 3 * 6
            assert not alive, f"{len(alive)} objects of closed connections wait for the " \
                              f"cyclic collector: {sorted({type(a).__name__ for a in alive})}"
        finally:
            gc.enable()
    uvloop.run(go())
