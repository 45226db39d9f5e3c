"""A gateway HTTP server (gateway/http) on its own event loop in a thread, for tests that talk
to it over real sockets."""
from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

from gateway.http.limits import Limits
from gateway.http.server import HttpServer


class ServerThread:
    def __init__(self, app, limits: Limits | None = None, tls=None):
        self.loop = asyncio.new_event_loop()
        self.server = HttpServer(app, limits, tls)
        self.port = 0
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.port = self.loop.run_until_complete(self.server.start("127.0.0.1", 0))[1]
            ready.set()
            self.loop.run_forever()
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)

    def call(self, fn):
        """Run fn() on the server's loop and return its result."""
        done = threading.Event()
        box = []
        self.loop.call_soon_threadsafe(lambda: (box.append(fn()), done.set()))
        done.wait(5)
        return box[0]

    def connect(self, timeout: float = 5.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


_LEFTOVER: dict[int, bytes] = {}


def read_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 response (Content-Length or chunked) from a blocking socket; bytes read past
    it are kept for the next call on the same socket."""
    status, headers, body, rest = _read_response(sock, _LEFTOVER.pop(sock.fileno(), b""))
    if rest:
        _LEFTOVER[sock.fileno()] = rest
    return status, headers, body


def _read_response(sock: socket.socket, buf: bytes):
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed before a response head: {buf!r}")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if status < 200:                                     # 1xx: a head only
        return status, headers, b"", rest
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(rest) < n:
            data = sock.recv(65536)
            if not data:
                break
            rest += data
        return status, headers, rest[:n], rest[n:]
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += sock.recv(65536)
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            while len(rest) < size + 2:
                rest += sock.recv(65536)
            if size == 0:
                return status, headers, body, rest
            body += rest[:size]
            rest = rest[size + 2:]
    return status, headers, rest, b""


def closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


async def serve_requests(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         answer) -> None:
    """One connection of a scripted keep-alive HTTP/1.1 upstream (an asyncio.start_server
    handler's body): `await answer(head, writer)` for each request head, until the client
    leaves or `answer` returns False (the connection is closed without an answer)."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if await answer(head, writer) is False:
                return
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def proxy_before(handle, **route):
    """A gateway Proxy on an HttpServer (on the running loop) routing every path to an
    HTTP/1.1 upstream served by `handle(reader, writer)`, with the route's other settings from
    `route`; yields (proxy, the gateway's port, the upstream's URL)."""
    from gateway.proxy import Proxy
    from gateway.routing.route import Route
    from gateway.table import ServingTable
    up_server = await asyncio.start_server(handle, "127.0.0.1", 0)
    up = f"http://127.0.0.1:{up_server.sockets[0].getsockname()[1]}"
    proxy = Proxy(ServingTable.build([Route.from_dict({"name": "web", "path": "/*",
                                                       "to": [up], **route})]))
    server = HttpServer(proxy, Limits())
    _, port = await server.start("127.0.0.1", 0)
    try:
        yield proxy, port, up
    finally:
        await server.close()
        proxy.pools.close()
        up_server.close()
        await up_server.wait_closed()
