"""gateway/upstream alone: the balancer's policies, passive ejection, and the pools against a
real local HTTP/1.1 server (keep-alive reuse, the pending bound, idle closing)."""
from __future__ import annotations

import asyncio
import time

import pytest

from gateway.upstream.balance import Balancer
from gateway.upstream.errors import ConnectFailed, Overloaded
from gateway.upstream.pool import Backend, PoolSettings
from tests.unit.gateway_server import serve_requests


def backends(n: int, **settings) -> list[Backend]:
    return [Backend(f"http://127.0.0.1:{9000 + i}", PoolSettings(**settings)) for i in range(n)]


def test_round_robin_least_conn_and_hashing():
    bs = backends(3)
    rr = Balancer("round-robin")
    assert [rr.pick(bs, "", None).url for _ in range(6)] == [b.url for b in bs] * 2
    bs[0].in_flight, bs[1].in_flight, bs[2].in_flight = 5, 1, 3
    assert Balancer("least-conn").pick(bs, "", None) is bs[1]
    bs[0].in_flight = 1                                  # ties take turns
    lc = Balancer("least-conn")
    assert {lc.pick(bs, "", None).url for _ in range(4)} == {bs[0].url, bs[1].url}
    by_ip = Balancer("hash:ip")
    picks = {ip: by_ip.pick(bs, ip, None) for ip in (f"10.0.0.{i}" for i in range(50))}
    assert len({b.url for b in picks.values()}) == 3                 # spread
    assert all(by_ip.pick(bs, ip, None) is b for ip, b in picks.items())   # stable
    # rendezvous hashing: taking one upstream out moves only its own keys
    rest = [b for b in bs if b is not bs[0]]
    assert all(by_ip.pick(rest, ip, None) is b for ip, b in picks.items() if b is not bs[0])
    by_header = Balancer("hash:header:x-user")
    assert by_header.pick(bs, "1.1.1.1", "alice") is by_header.pick(bs, "2.2.2.2", "alice")


def test_ejection_and_return():
    bs = backends(2, eject_after=3, eject_s=0.2)
    rr = Balancer("round-robin")
    assert not bs[0].failed() and not bs[0].failed()
    assert bs[0].failed()                                  # the third in a row ejects
    assert {rr.pick(bs, "", None).url for _ in range(4)} == {bs[1].url}
    assert rr.pick(bs, "", None, exclude={bs[1].url}) is bs[0]   # all else tried: the ejected
    time.sleep(0.25)
    assert {rr.pick(bs, "", None).url for _ in range(4)} == {b.url for b in bs}
    assert bs[0].failed()                                  # one more failure after the pause
    bs[0].succeeded()
    assert bs[0].available(time.monotonic())
    bs[1].healthy = False                                  # active checks say down
    assert {rr.pick(bs, "", None).url for _ in range(4)} == {bs[0].url}


async def _server(delay: float = 0.0):
    """A keep-alive HTTP/1.1 server answering 'ok' after `delay`; counts connections."""
    state = {"connections": 0}

    async def handle(reader, writer):
        state["connections"] += 1
        await serve_requests(reader, writer, answer)

    async def answer(head: bytes, writer) -> bool:
        await asyncio.sleep(delay)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        return True
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], state


async def _answering(answer) -> tuple[asyncio.AbstractServer, int]:
    """A local HTTP/1.1 server whose requests `answer(head, writer)` answers; and its port."""
    server = await asyncio.start_server(lambda r, w: serve_requests(r, w, answer),
                                        "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _get(backend: Backend) -> bytes:
    conn = await backend.acquire_h1()
    resp = conn.send("GET", "/", [("host", "x")], None, None)
    await resp.wait_head()
    body = b""
    while True:
        data = await resp.body.read()
        if not data:
            break
        body += data
    backend.release_h1(conn)
    return body


def test_pool_reuses_bounds_and_sweeps():
    async def main():
        server, port, state = await _server(delay=0.2)
        b = Backend(f"http://127.0.0.1:{port}",
                    PoolSettings(max_connections=2, max_pending=2, idle_timeout_s=0.3))
        assert await _get(b) == b"ok" and await _get(b) == b"ok"
        assert state["connections"] == 1 and len(b.idle) == 1        # kept alive, reused
        results = await asyncio.gather(*(_get(b) for _ in range(6)), return_exceptions=True)
        assert sum(r == b"ok" for r in results) == 4                 # 2 connections + 2 waiting
        assert sum(isinstance(r, Overloaded) for r in results) == 2  # beyond: 503 at once
        assert b.h1_open == 2 and state["connections"] == 2
        await asyncio.sleep(0.4)
        b.sweep(time.monotonic())
        assert b.h1_open == 0 and not b.idle                          # idle ones closed
        server.close()
        await server.wait_closed()
        dead = Backend(f"http://127.0.0.1:{port}", PoolSettings(connect_timeout_s=1))
        with pytest.raises(ConnectFailed):
            await dead.acquire_h1()
        assert dead.h1_open == 0
    asyncio.run(main())


def test_response_head_waits_and_failures():
    from gateway.http.exchange import BodyBuffer
    from gateway.upstream.errors import UpstreamError
    from gateway.upstream.response import UpstreamResponse

    def response():
        return UpstreamResponse(BodyBuffer(1 << 16, lambda: None, lambda n: None))

    async def scenario():
        loop = asyncio.get_running_loop()
        resp = response()
        with pytest.raises(TimeoutError):                # a waiter given up on ...
            await asyncio.wait_for(resp.wait_head(), 0.05)
        assert not resp.head_done
        loop.call_later(0.02, resp.set_head, 200, [("content-length", "0")])
        await resp.wait_head()                           # ... does not stop the next one
        assert resp.head_done and resp.status == 200 and resp.head_error is None
        failed = response()
        loop.call_later(0.02, failed.fail, UpstreamError("gone"))
        with pytest.raises(UpstreamError, match="gone"):
            await failed.wait_head()
        late = response()                                # a failure after the head: the body's
        late.set_head(200, [])
        late.fail(UpstreamError("mid-body"))
        await late.wait_head()
        with pytest.raises(UpstreamError, match="mid-body"):
            await late.body.read()

    asyncio.run(scenario())


def test_watched_responses_their_deadlines_and_whole_ones():
    """One upstream connection, one timer kept from request to request: a response watched
    with a far deadline that comes in time leaves the timer set; the next request's deadline
    is still kept exactly (late at its own deadline, not the first one's), and a nearer
    deadline sets the timer sooner. A response that came whole in one read is kept as it
    came; one whose body came later is not."""
    from gateway.upstream.h1client import H1Upstream

    async def answer_after(head: bytes, writer) -> bool:
        path = head.split(b" ", 2)[1]
        if path == b"/split":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"ok")
            return True
        if path in (b"/interim", b"/interim-apart", b"/head-apart"):
            parts = [b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n",
                     b"HTTP/1.1 200 OK\r\nX-A:  spaced \r\nX-B:\r\n",
                     b"Content-Length: 2\r\n\r\nok"]
            if path == b"/head-apart":
                parts = parts[1:]
            if path == b"/interim":
                parts = [b"".join(parts)]
            for part in parts:
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(0.02)
            return True
        await asyncio.sleep(float(path[1:].decode()))
        writer.write(b"HTTP/1.1 200 OK\r\nServer: Up\r\nContent-Length: 2\r\n\r\nok")
        return True

    async def scenario():
        server, port = await _answering(answer_after)
        conn = await H1Upstream.open("127.0.0.1", port, 5, 1 << 16)
        loop = asyncio.get_running_loop()

        async def watched(path: str, within: float) -> tuple[str, float, object]:
            done = loop.create_future()
            start = loop.time()
            resp = conn.send("GET", path, [("host", "x")], None, None)
            conn.watch(lambda: done.set_result("head"), start + within,
                       lambda: done.set_result("late"))
            what = await done
            return what, loop.time() - start, resp

        what, _, resp = await watched("/0", 10.0)
        assert what == "head" and resp.status == 200
        assert resp.whole == (b"HTTP/1.1 200 OK\r\nServer: Up\r\nContent-Length: 2\r\n\r\nok", 46)
        assert resp.headers == [("server", "Up"), ("content-length", "2")]
        what, took, _ = await watched("/0.5", 0.2)           # nearer than the timer set
        assert what == "late" and 0.15 < took < 0.4
        conn.abort()
        conn = await H1Upstream.open("127.0.0.1", port, 5, 1 << 16)
        assert (await watched("/0", 0.1))[0] == "head"       # the timer stays, for 0.1 s
        what, took, _ = await watched("/0.6", 0.4)           # later than the timer set
        assert what == "late" and 0.35 < took < 0.6, took
        conn.abort()
        conn = await H1Upstream.open("127.0.0.1", port, 5, 1 << 16)
        what, _, resp = await watched("/split", 5.0)
        assert what == "head" and resp.whole is None         # the body in a later read
        # 1xx heads before the response, in its read or apart; a head in two reads
        for path in ("/interim", "/interim-apart", "/head-apart"):
            await asyncio.sleep(0.1)                         # (the body of /split, read)
            what, _, resp = await watched(path, 5.0)
            assert what == "head" and resp.status == 200 and resp.whole is None, path
            assert resp.headers == [("x-a", "spaced"), ("x-b", ""),
                                    ("content-length", "2")], path
            assert await resp.body.read() == b"ok"
        conn.abort()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())


def test_an_upstream_head_larger_than_the_buffer_is_refused():
    """The reads of a response head are kept until it is whole: an upstream that never ends
    its head is cut off once it has sent more than the connection's buffer (a 502 for the
    client), instead of being held in memory without bound."""
    from gateway.upstream.errors import UpstreamError
    from gateway.upstream.h1client import H1Upstream

    async def endless_head(head: bytes, writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(200):
            writer.write(b"X-Filler-%d: %s\r\n" % (i, b"f" * 1000))
            await writer.drain()
        await asyncio.sleep(5)
        return False

    async def scenario():
        server, port = await _answering(endless_head)
        conn = await H1Upstream.open("127.0.0.1", port, 5, 1 << 16)
        resp = conn.send("GET", "/", [("host", "x")], None, None)
        with pytest.raises(UpstreamError, match="head larger than 65536 bytes"):
            await asyncio.wait_for(resp.wait_head(), 5)
        assert conn.closed
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())
