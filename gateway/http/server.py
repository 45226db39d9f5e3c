"""Listening: the asyncio server that makes a ServerConnection per client, and TLS with ALPN."""
from __future__ import annotations

import asyncio
import socket
import ssl

from gateway.http.connection import App, ServerConnection
from gateway.http.deadlines import DeadlineWheel
from gfs.errors import FailedPrecondition
from gateway.http.limits import Limits


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """Server TLS offering HTTP/2 and HTTP/1.1 by ALPN."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as err:
        raise FailedPrecondition(f"cannot load the TLS certificate {cert_file} and key "
                                 f"{key_file}: {err}") from None
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


class HttpServer:
    """One listening socket (shared with other workers by SO_REUSEPORT when asked)."""

    def __init__(self, app: App, limits: Limits | None = None,
                 tls: ssl.SSLContext | None = None, proxy_from=None):
        """`proxy_from`: see ServerConnection (clear-text listeners only: with TLS the PROXY
        header would have to come before the handshake, which the TLS layer does not allow)."""
        if proxy_from is not None and tls is not None:
            raise ValueError("the PROXY protocol is supported on clear-text listeners only")
        self.proxy_from = proxy_from
        self.app = app
        self.limits = limits or Limits()
        self.tls = tls
        self.connections: set[ServerConnection] = set()
        self.high_water = 0                      # most open at once since the last settle()
        self._table_size = 0                     # most in the set since it was last copied
        self.server: asyncio.base_events.Server | None = None
        self.deadlines: DeadlineWheel | None = None   # every connection's timeouts, one timer

    def _protocol(self) -> ServerConnection:
        return ServerConnection(self.app, self.limits, "https" if self.tls else "http",
                                registry=self,
                                proxy_from=self.proxy_from, deadlines=self.deadlines)

    def connection_opened(self, conn: ServerConnection) -> None:
        self.connections.add(conn)
        if len(self.connections) > self.high_water:
            self.high_water = len(self.connections)
            self._table_size = max(self._table_size, self.high_water)

    def connection_closed(self, conn: ServerConnection) -> None:
        self.connections.discard(conn)

    def settle(self) -> int:
        """The most connections open at once since the last call (starting again from those
        open now). A set keeps the table of its largest size: once it holds under a quarter of
        that, it is copied at its present size, so 10,000 gone connections do not leave a
        512 KiB table behind."""
        peak, now = self.high_water, len(self.connections)
        if now * 4 < self._table_size and self._table_size > 64:
            self.connections = set(self.connections)
            self._table_size = now
        self.high_water = now
        return peak

    async def start(self, host: str, port: int, reuse_port: bool = False) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self.deadlines = self.deadlines or DeadlineWheel(loop)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
        except OSError as err:
            sock.close()
            raise FailedPrecondition(f"cannot listen on {host}:{port}: "
                                     f"{err.strerror or err}") from None
        sock.setblocking(False)
        self.server = await loop.create_server(self._protocol, sock=sock, ssl=self.tls,
                                               backlog=4096,
                                               ssl_handshake_timeout=self.limits.header_timeout_s
                                               if self.tls else None)
        return sock.getsockname()[:2]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.close()
        if self.server is not None:
            await self.server.wait_closed()
        if self.deadlines is not None:
            self.deadlines.close()
