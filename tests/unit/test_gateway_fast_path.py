"""The proxy's fast path (gateway/proxy.py `Proxy.start`) over real loopback sockets: a small
response arriving whole is written back from the upstream connection's callback with no Task;
everything else — a body that comes in pieces, a big one, an upstream that is late or closes
without an answer — is handed over to the general path mid-flight and answered as before."""
from __future__ import annotations

import asyncio

import uvloop

from tests.unit.gateway_server import proxy_before, serve_requests

BIG = bytes(range(256)) * 4096                     # 1 MiB


class Upstream:
    """A scripted keep-alive HTTP/1.1 upstream; counts the requests for each path."""

    def __init__(self):
        self.seen: dict[str, int] = {}
        self.connections = 0

    async def handle(self, reader, writer):
        self.connections += 1
        await serve_requests(reader, writer, self.answer)

    async def answer(self, head: bytes, writer) -> bool:
        path = head.split(b" ", 2)[1].decode()
        self.seen[path] = self.seen.get(path, 0) + 1
        if path == "/whole":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-up: 1\r\n"
                         b"connection: keep-alive\r\n\r\nwhole")
        elif path == "/split":                    # the body in a later read than the head
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"split-body")
        elif path == "/big":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(BIG) + BIG)
        elif path == "/late":
            await asyncio.sleep(1.0)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlate")
        elif path == "/close-once" and self.seen[path] == 1:
            return False                          # no answer: a GET is tried again
        else:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        return True


async def read_response(reader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ")[1])
    headers = dict(line.lower().split(": ", 1) for line in head[1:] if line)
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def scenario():
    upstream = Upstream()
    async with proxy_before(upstream.handle, timeout_s=0.3, retries=1) as (proxy, port, up):
        await fast_and_handed_over(upstream, proxy, port, up)


async def fast_and_handed_over(upstream: Upstream, proxy, port: int, up: str):
    loop = asyncio.get_running_loop()
    tasks = 0
    default_factory = loop.get_task_factory()

    def counting(lp, coro):
        nonlocal tasks
        tasks += 1
        return default_factory(lp, coro) if default_factory else asyncio.Task(coro, loop=lp)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def get(path: str):
        writer.write(f"GET {path} HTTP/1.1\r\nHost: example.com\r\n\r\n".encode())
        return await read_response(reader)
    try:
        assert (await get("/first"))[0] == 200     # the pool's first connection: the slow path
        loop.set_task_factory(counting)
        for _ in range(20):
            status, headers, body = await get("/whole")
            assert (status, body) == (200, b"whole")
            assert headers["x-up"] == "1" and "connection" not in headers
        assert tasks == 0, f"{tasks} Tasks for 20 small responses on the fast path"
        assert upstream.connections == 1               # one kept-alive upstream connection
        loop.set_task_factory(default_factory)

        assert await get("/split") == (200, {"content-length": "10"}, b"split-body")
        status, _, body = await get("/big")
        assert status == 200 and body == BIG
        status, _, body = await get("/late")
        assert status == 504 and b"no response head within 0.3s" in body
        assert upstream.seen["/late"] == 2              # idempotent: tried once more
        assert await get("/close-once") == (200, {"content-length": "2"}, b"ok")
        assert upstream.seen["/close-once"] == 2
        # two requests in one write: answered in order on the same connection
        writer.write(b"GET /whole HTTP/1.1\r\nHost: a\r\n\r\nGET /split HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await read_response(reader))[2] == b"whole"
        assert (await read_response(reader))[2] == b"split-body"
        assert (await get("/whole"))[2] == b"whole"     # and the connection goes on
        counts = proxy.metrics.requests.count("web", "200")
        assert counts == 1 + 20 + 2 + 1 + 3          # all but the late one (a 504)
        backend = proxy.pools.get(up)
        assert backend.in_flight == 0
    finally:
        writer.close()


def test_small_whole_responses_need_no_task_and_the_rest_is_handed_over():
    uvloop.run(scenario())


async def a_bug_while_answering(monkeypatch):
    from gateway.http.h1 import H1Exchange
    upstream = Upstream()
    async with proxy_before(upstream.handle) as (proxy, port, up):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await read_response(reader))[2] == b"ok"       # a kept-alive upstream now

        def broken(self, *args):
            raise RuntimeError("a bug")
        monkeypatch.setattr(H1Exchange, "answer_relayed", broken)
        monkeypatch.setattr(H1Exchange, "answer_now", broken)
        writer.write(b"GET /whole HTTP/1.1\r\nHost: a\r\n\r\n")
        assert await reader.read() == b""          # closed, not left hanging
        backend = proxy.pools.get(up)
        assert backend.in_flight == 0 and backend.h1_open == 0  # nothing held
        monkeypatch.undo()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /whole HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await read_response(reader))[2] == b"whole"     # and it serves on
        writer.close()


def test_a_bug_while_answering_closes_that_connection_and_holds_nothing(monkeypatch, caplog):
    uvloop.run(asyncio.wait_for(a_bug_while_answering(monkeypatch), 30))
    assert "answering http://127.0.0.1" in caplog.text and "a bug" in caplog.text


async def relayed_heads():
    async def answer(head: bytes, writer) -> bool:
        path = head.split(b" ", 2)[1]
        if path == b"/names-a-field":                    # Connection names an end-to-end field
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n"
                         b"X-Kept: 2\r\nContent-Length: 2\r\n\r\nok")
        elif path == b"/empty":
            writer.write(b"HTTP/1.1 204 No Content\r\nX-Up: 1\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 201 Created\r\nX-Up-Case: Kept\r\nConnection: keep-alive\r\n"
                         b"Keep-Alive: timeout=5\r\nContent-Length: 4\r\n\r\nbody")
        return True
    async with proxy_before(lambda r, w: serve_requests(r, w, answer)) as (proxy, port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def raw(request: bytes) -> bytes:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")]
            if not length or request.startswith(b"HEAD"):
                return head
            return head + await reader.readexactly(length[0])

        await raw(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")     # a kept-alive upstream now
        relayed = await raw(b"GET /r HTTP/1.1\r\nHost: a\r\n\r\n")
        # as the upstream spelled it, hop-by-hop fields gone, the body as it came
        assert relayed == (b"HTTP/1.1 201 Created\r\nX-Up-Case: Kept\r\nContent-Length: 4"
                           b"\r\n\r\nbody")
        decoded = await raw(b"GET /names-a-field HTTP/1.1\r\nHost: a\r\n\r\n")
        assert b"x-kept: 2" in decoded and b"x-hop" not in decoded.lower()
        assert decoded.endswith(b"\r\n\r\nok")
        empty = await raw(b"GET /empty HTTP/1.1\r\nHost: a\r\n\r\n")
        assert empty.startswith(b"HTTP/1.1 204") and b"x-up: 1" in empty
        head = await raw(b"HEAD /r HTTP/1.1\r\nHost: a\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 201") and b"content-length: 4" in head
        await raw(b"GET /r HTTP/1.1\r\nHost: a\r\n\r\n")     # (a HEAD's upstream closes)
        # the client asks to close: told so, and the connection closes after the response
        writer.write(b"GET /r HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        closing = await reader.read()
        assert closing == (b"HTTP/1.1 201 Created\r\nX-Up-Case: Kept\r\nContent-Length: 4"
                           b"\r\nconnection: close\r\n\r\nbody")
        assert proxy.metrics.requests.count("web", "201") == 5


def test_a_whole_response_is_relayed_as_it_came_less_its_hop_by_hop_fields():
    uvloop.run(asyncio.wait_for(relayed_heads(), 30))


async def behind_waiting_requests():
    upstream = Upstream()
    async with proxy_before(upstream.handle) as (proxy, port, up):
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def get(path: str):
            writer.write(f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
            return await read_response(reader)
        assert (await get("/first"))[2] == b"ok"       # a kept-alive upstream connection now
        backend = proxy.pools.get(up)
        assert backend.idle and not backend.pending
        tasks = 0
        default_factory = loop.get_task_factory()

        def counting(lp, coro, **kwargs):          # the gateway's Tasks (not this test's)
            nonlocal tasks
            tasks += "/gateway/" in coro.cr_code.co_filename
            return default_factory(lp, coro, **kwargs) if default_factory else \
                asyncio.Task(coro, loop=lp, **kwargs)
        loop.set_task_factory(counting)
        try:
            assert (await get("/whole"))[2] == b"whole"
            assert tasks == 0                          # nobody waiting: the fast path
            waiting = loop.create_future()             # a request waiting for a connection
            backend._waiters.append(waiting)
            assert backend.pending == 1
            assert (await get("/whole"))[2] == b"whole"
            assert tasks == 1                          # not taken ahead of it: the general path
        finally:
            loop.set_task_factory(default_factory)
            backend._waiters.clear()
        writer.close()


def test_the_fast_path_does_not_take_a_connection_ahead_of_waiting_requests():
    uvloop.run(asyncio.wait_for(behind_waiting_requests(), 30))
