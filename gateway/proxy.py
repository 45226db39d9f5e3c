"""The proxy loop: a request is filtered (global CIDR lists), routed (the trie), filtered again
(the route's lists), authenticated when the route asks for a token, sent to an upstream picked by
the route's policy (tried again on another only when that is safe), and its response streamed
back with trailers. Every request gets one access log line and its metrics."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from gateway import websocket
from gateway.accesslog import AccessLog
from gateway.headers import downstream_response_headers, upstream_request_headers
from gateway.http.exchange import BodyTooLarge, ClientGone, Exchange
from gateway.metrics import GatewayMetrics
from gateway.routing.cidr import client_address
from gateway.routing.trie import normalize_path
from gateway.table import CompiledRoute, ServingTable
from gateway.upstream.errors import Overloaded, UpstreamError, UpstreamTimeout
from gateway.upstream.h1client import H1Upstream
from gateway.upstream.pool import Backend, Pools

log = logging.getLogger("gateway.proxy")
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
GRPC_UNAVAILABLE, GRPC_DEADLINE, GRPC_PERMISSION, GRPC_UNAUTHENTICATED, GRPC_UNIMPLEMENTED = \
    14, 4, 7, 16, 12
HTTP_TO_GRPC = {401: GRPC_UNAUTHENTICATED, 403: GRPC_PERMISSION, 404: GRPC_UNIMPLEMENTED,
                504: GRPC_DEADLINE}
Builtin = Callable[[Exchange], Awaitable[None]]
Authenticator = Callable[[str, str], str]       # (token, scope) -> identity, or raises Refused


class Refused(Exception):
    """The request may not pass: `status` and a one-line reason for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Proxy:
    def __init__(self, table: ServingTable, pools: Pools | None = None,
                 metrics: GatewayMetrics | None = None, access_log: AccessLog | None = None,
                 builtins: dict[str, Builtin] | None = None,
                 authenticate: Authenticator | None = None, upstream_idle_s: float = 60.0):
        self.table = table
        self.pools = pools or Pools()
        self.metrics = metrics or GatewayMetrics()
        self.access_log = access_log
        self.builtins = builtins or {}
        self.authenticate = authenticate
        self.upstream_idle_s = upstream_idle_s

    def apply(self, table: ServingTable) -> None:
        """Serve `table` from the next request on; requests in flight finish on the old one."""
        self.table = table
        self.pools.retain(table.upstream_urls())

    async def __call__(self, ex: Exchange) -> None:
        start = time.monotonic()
        table = self.table
        head = ex.head
        info = {"route": "", "upstream": "", "error": ""}
        peer_ip = head.peer[0]
        client_ip = client_address(peer_ip, head.header("x-forwarded-for"), table.trusted)
        grpc = (head.header("content-type") or "").startswith("application/grpc")
        try:
            await self._handle(ex, table, client_ip, grpc, info)
        except Refused as refused:
            info["error"] = str(refused)
            await self._error(ex, refused.status, str(refused), grpc)
        except BodyTooLarge:
            raise                                    # the HTTP layer answers 413
        except UpstreamError as err:
            info["error"] = str(err)
            if not ex.response_started:
                await self._error(ex, err.status, f"upstream: {err}", grpc)
            else:
                ex.abort()
        finally:
            elapsed = time.monotonic() - start
            status = ex.status or 499
            route = info["route"] or "-"
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.seconds.labels(route).observe(elapsed)
            if self.access_log is not None:
                self.access_log.write(
                    client=client_ip, method=head.method, host=head.authority,
                    path=head.path, proto=head.http_version, status=status, route=info["route"],
                    upstream=info["upstream"], bytes_in=ex.bytes_in, bytes_out=ex.bytes_out,
                    ms=round(elapsed * 1000, 2), trace=info.get("trace", ""),
                    **({"error": info["error"]} if info["error"] else {}))

    async def _handle(self, ex: Exchange, table: ServingTable, client_ip: str, grpc: bool,
                      info: dict) -> None:
        head = ex.head
        if not table.global_filter.allows(client_ip):
            raise Refused(403, "forbidden: address not allowed")
        path = normalize_path(head.path)
        if path is None:
            raise Refused(400, "bad request path")
        match = table.table.lookup(head.authority, path)
        if match is None:
            raise Refused(404, "no route")
        compiled = table.routes[match.route.name]
        route = compiled.route
        info["route"] = route.name
        if not compiled.filter.allows(client_ip):
            raise Refused(403, "forbidden: address not allowed on this route")
        identity = None
        if route.require_token:
            identity = self._authenticate(head.header("authorization"), route.require_token)
        target = match.rest if route.strip_prefix else path
        if head.query:
            target += "?" + head.query
        if route.to[0].startswith("builtin:"):
            builtin = self.builtins.get(route.to[0][len("builtin:"):])
            if builtin is None:
                raise Refused(502, f"built-in target {route.to[0]} is not served here")
            info["upstream"] = route.to[0]
            await builtin(ex)
            return
        peer_trusted = bool(table.trusted.longest(head.peer[0]))
        headers, trace = upstream_request_headers(
            head.headers, head.peer[0], peer_trusted, head.scheme, head.authority, identity, grpc)
        info["trace"] = trace
        if ex.upgrade:
            if any(not url.startswith("http://") for url in route.to):
                raise Refused(502, "an Upgrade needs http:// upstreams")
            headers += [("connection", "upgrade"), ("upgrade", ex.upgrade)]
            if head.http_version == "2" and ex.upgrade == "websocket":
                key = head.extra["websocket_key"] = websocket.new_key()
                headers = [(k, v) for k, v in headers if k != websocket.KEY_HEADER]
                headers.append((websocket.KEY_HEADER, key))
        await self._forward(ex, compiled, target, headers, client_ip, info)

    def _authenticate(self, authorization: str | None, scope: str) -> str:
        if self.authenticate is None:
            raise Refused(503, "this route needs a token and the gateway has no permission feed")
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Refused(401, "a bearer token is required")
        return self.authenticate(authorization[7:].strip(), scope)

    async def _forward(self, ex: Exchange, compiled: CompiledRoute, target: str,
                       headers: list[tuple[str, str]], client_ip: str, info: dict) -> None:
        route = compiled.route
        head = ex.head
        backends = [self.pools.get(url) for url in route.to]
        hash_value = head.header(compiled.hash_header) if compiled.hash_header else None
        replayable = head.method in IDEMPOTENT and not head.has_body
        tried: set[str] = set()
        last: UpstreamError | None = None
        for attempt in range(1 + route.retries):
            backend = compiled.balancer.pick(backends, client_ip, hash_value, tried) \
                or compiled.balancer.pick(backends, client_ip, hash_value)
            if attempt and not backend.available(time.monotonic()):
                break                            # a try again only goes to a healthy upstream
            tried.add(backend.url)
            info["upstream"] = backend.url
            try:
                await self._try(ex, backend, route.timeout_s, target, headers)
                return
            except UpstreamError as err:
                last = err
                self.metrics.upstream_errors.labels(backend.url, type(err).__name__).inc()
                if not isinstance(err, Overloaded) and backend.failed():
                    self.metrics.ejections.labels(backend.url).inc()
                if ex.response_started or (err.sent and not replayable):
                    raise
        raise last

    async def _try(self, ex: Exchange, backend: Backend, timeout_s: float, target: str,
                   headers: list[tuple[str, str]]) -> None:
        head = ex.head
        body = ex.read if head.has_body else None
        backend.in_flight += 1
        try:
            if backend.scheme == "h2c":
                conn = await backend.acquire_h2()
                try:
                    resp = await conn.send(head.method, "http", head.raw_authority, target,
                                           headers, body)
                    await self._relay(ex, resp, timeout_s, on_abort=lambda: conn.reset(resp))
                finally:
                    backend.release_h2()
            else:
                conn = await backend.acquire_h1()
                ok = False
                try:
                    length = head.header("content-length")
                    h1_headers = [("host", head.raw_authority)] + [
                        (k, v) for k, v in headers if k != "host"]
                    resp = await conn.send(head.method, target, h1_headers, body,
                                           int(length) if length and length.isdigit() else None,
                                           tunnel=ex.read_tunnel if ex.upgrade else None)
                    await self._relay(ex, resp, timeout_s, on_abort=conn.abort)
                    ok = True
                finally:
                    if not ok:
                        conn.abort()
                    backend.release_h1(conn)
            backend.succeeded()
        finally:
            backend.in_flight -= 1

    async def _relay(self, ex: Exchange, resp, timeout_s: float, on_abort) -> None:
        if not resp.head_ready.done():
            try:
                async with asyncio.timeout(timeout_s):
                    await asyncio.shield(resp.head_ready)
            except TimeoutError:
                on_abort()
                raise UpstreamTimeout(f"no response head within {timeout_s:g}s") from None
        resp.head_ready.result()                 # the upstream's failure, if it failed
        try:
            headers = downstream_response_headers(resp.headers)
            if ex.upgrade and ex.head.http_version == "2" and 200 <= resp.status < 300:
                # An HTTP/2 client reads any 2xx as its tunnel being open (RFC 8441 5).
                raise UpstreamError(f"the upstream answered {resp.status} instead of "
                                    f"switching to {ex.upgrade}")
            if resp.status == 101:               # the tunnel: both sides must see the switch
                key = ex.head.extra.get("websocket_key")
                if key and not websocket.accepted(key, resp.headers):
                    raise UpstreamError("the upstream's Sec-WebSocket-Accept does not match "
                                        "the key sent")
                headers += [("connection", "upgrade"), ("upgrade", ex.upgrade)]
            await ex.start_response(resp.status, headers, end=resp.head_only)
            if resp.head_only:
                return
            while True:
                if resp.body.ready:              # no wait, no timer
                    data = await resp.body.read()
                else:
                    try:
                        async with asyncio.timeout(self.upstream_idle_s):
                            data = await resp.body.read()
                    except TimeoutError:
                        raise UpstreamTimeout(
                            f"upstream silent for {self.upstream_idle_s:g}s mid-body") from None
                if not data:
                    break
                await ex.write(data)
            await ex.end(downstream_response_headers(resp.trailers) or None)
        except ClientGone:
            on_abort()
            raise
        except UpstreamError:
            on_abort()
            raise

    async def _error(self, ex: Exchange, status: int, message: str, grpc: bool) -> None:
        if ex.response_started:
            ex.abort()
            return
        if grpc and ex.head.http_version == "2":
            # gRPC clients read errors from trailers: a trailers-only response with the status
            # that fits (UNAVAILABLE for an upstream failure, as grpc maps 502/503 itself).
            code = HTTP_TO_GRPC.get(status, GRPC_UNAVAILABLE)
            await ex.start_response(200, [("content-type", "application/grpc"),
                                          ("grpc-status", str(code)),
                                          ("grpc-message", message[:200])], end=True)
            return
        await ex.respond(status, (message + "\n").encode())
