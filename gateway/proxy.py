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
from gateway.http.exchange import BodyTooLarge, ClientGone, Exchange, raising
from gateway.metrics import GatewayMetrics
from gateway.routing.cidr import client_address
from gateway.routing.trie import normalize_path
from gateway.table import CompiledRoute, ServingTable
from gateway.upstream.errors import Overloaded, UpstreamError, UpstreamTimeout
from gateway.upstream.h1client import H1Upstream
from gateway.upstream.pool import Backend, Pools
from gateway.upstream.response import UpstreamResponse

log = logging.getLogger("gateway.proxy")
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
GRPC_UNAVAILABLE, GRPC_DEADLINE, GRPC_PERMISSION, GRPC_UNAUTHENTICATED, GRPC_UNIMPLEMENTED = \
    14, 4, 7, 16, 12
_STATUS_TEXT = {code: str(code) for code in range(100, 600)}
HTTP_TO_GRPC = {401: GRPC_UNAUTHENTICATED, 403: GRPC_PERMISSION, 404: GRPC_UNIMPLEMENTED,
                504: GRPC_DEADLINE}
Builtin = Callable[[Exchange], Awaitable[None]]
Authenticator = Callable[[str, str], str]       # (token, scope) -> identity, or raises Refused


class Refused(Exception):
    """The request may not pass: `status` and a one-line reason for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _Request:
    """What the proxy knows of one request while it answers it (for its log line and metrics)."""
    __slots__ = ("start", "table", "client_ip", "grpc", "route", "upstream", "error", "trace")

    def __init__(self, start: float, table: ServingTable, client_ip: str, grpc: bool):
        self.start, self.table, self.client_ip, self.grpc = start, table, client_ip, grpc
        self.route = self.upstream = self.error = self.trace = ""


class _Plan:
    """Where a request goes: the route, the target on the upstream, the headers to send, or
    the built-in target that answers it."""
    __slots__ = ("compiled", "target", "headers", "builtin")

    def __init__(self, compiled: CompiledRoute, target: str,
                 headers: list[tuple[str, str]] | None, builtin: Builtin | None):
        self.compiled, self.target, self.headers, self.builtin = \
            compiled, target, headers, builtin


class _Sent:
    """An attempt already on its way: the fast path's, handed over to `_forward` when its
    response is not a small whole one (or its time ran out)."""
    __slots__ = ("conn", "resp", "deadline")

    def __init__(self, conn: H1Upstream, resp: UpstreamResponse, deadline: float):
        self.conn, self.resp, self.deadline = conn, resp, deadline


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
        req = self._begin(ex)
        await self._answer(ex, req, self._handle(ex, req))

    def start(self, ex: Exchange, handed_back: Callable[[Exchange, Awaitable[None] | None], None]
              ) -> Awaitable[None] | None:
        """The HTTP/1.1 engine's way in. Returns the request's handling to run in a Task (what
        `__call__` would do), or None when the fast path took it: a request without a body to
        an HTTP/1.1 upstream with a kept-alive connection free is sent at once, and a response
        that arrives whole and small is written back from the upstream connection's callback
        — no Task, no timer but the response deadline, no turn of the event loop between
        the upstream's bytes and the client's. `handed_back(ex, rest)` is called once
        it is over (rest None) or with the rest of the exchange (the response is big or
        streams, the upstream failed or is late: `_forward` goes on from the attempt made)."""
        req = self._begin(ex)
        head = ex.head
        if head.has_body or ex.upgrade or req.grpc:
            return self._answer(ex, req, self._handle(ex, req))
        try:
            plan = self._plan(ex, req)
        except Refused as refused:
            return self._answer(ex, req, raising(refused))
        compiled = plan.compiled
        if plan.builtin is not None:
            return self._answer(ex, req, self._dispatch(ex, req, plan))
        backend = self._pick(ex, req, compiled, [self.pools.get(u) for u in compiled.route.to],
                             set())
        # Not ahead of requests already waiting for a connection (more requests at once than
        # the pool has connections): a freed connection is theirs, or the fast path could take
        # it before the request woken for it runs, again and again.
        conn = backend.take_idle_h1() if backend.scheme == "http" and not backend.pending \
            else None
        if conn is None:                         # the pick stands (a balancer's turn is taken)
            return self._answer(ex, req, self._forward(ex, req, plan, backend))
        req.upstream = backend.url
        backend.in_flight += 1
        loop = ex.loop
        deadline = loop.time() + compiled.route.timeout_s       # as _try's
        resp = self._send_h1(ex, conn, plan.target, plan.headers)

        def hand_over() -> None:
            sent = _Sent(conn, resp, deadline)
            handed_back(ex, self._answer(ex, req, self._forward(ex, req, plan, backend, sent)))

        def head_arrived() -> None:
            if resp.head_error is not None or not resp.body.complete:
                hand_over()
                return
            try:
                body = resp.body.take_all()
                whole = resp.whole
                if whole is None or not ex.answer_relayed(resp.status, *whole):
                    ex.answer_now(resp.status, downstream_response_headers(resp.headers), body,
                                  downstream_response_headers(resp.trailers) or None)
                backend.succeeded()
            except Exception:          # a bug: logged; the client's connection closes (unfinished)
                log.exception("answering %s from the upstream's callback failed", backend.url)
                conn.abort()
            finally:
                backend.release_h1(conn)
                backend.in_flight -= 1
                try:
                    self._record(ex, req)
                finally:
                    handed_back(ex, None)

        conn.watch(head_arrived, deadline, hand_over)
        return None

    def _begin(self, ex: Exchange) -> _Request:
        table = self.table
        head = ex.head
        peer_ip = head.peer[0]
        client_ip = client_address(peer_ip, head.header("x-forwarded-for"), table.trusted) \
            if len(table.trusted) else peer_ip
        grpc = (head.header("content-type") or "").startswith("application/grpc")
        return _Request(time.monotonic(), table, client_ip, grpc)

    async def _answer(self, ex: Exchange, req: _Request, work: Awaitable[None]) -> None:
        """Run a request's handling; answer what it raises; count and log it."""
        try:
            await work
        except Refused as refused:
            req.error = str(refused)
            await self._error(ex, refused.status, str(refused), req.grpc)
        except BodyTooLarge:
            raise                                    # the HTTP layer answers 413
        except UpstreamError as err:
            req.error = str(err)
            if not ex.response_started:
                await self._error(ex, err.status, f"upstream: {err}", req.grpc)
            else:
                ex.abort()
        finally:
            self._record(ex, req)

    def _record(self, ex: Exchange, req: _Request) -> None:
        """The request's metrics and access log line."""
        elapsed = time.monotonic() - req.start
        status = _STATUS_TEXT.get(ex.status) or str(ex.status or 499)
        self.metrics.requests.observe(req.route or "-", status, elapsed)
        if self.access_log is not None:
            head = ex.head
            self.access_log.request(
                req.client_ip, head.method, head.authority, head.path, head.http_version,
                int(status), req.route, req.upstream, ex.bytes_in, ex.bytes_out,
                round(elapsed * 1000, 2), req.trace, req.error)

    async def _handle(self, ex: Exchange, req: _Request) -> None:
        await self._dispatch(ex, req, self._plan(ex, req))

    def _plan(self, ex: Exchange, req: _Request) -> _Plan:
        """Filters, route, token: where the request goes, or Refused."""
        head = ex.head
        table = req.table
        client_ip = req.client_ip
        if not table.global_filter.allows(client_ip):
            raise Refused(403, "forbidden: address not allowed")
        path = normalize_path(head.path)
        if path is None:
            raise Refused(400, "bad request path")
        match = table.match(head.authority, path)
        if match is None:
            raise Refused(404, "no route")
        compiled = table.routes[match.route.name]
        route = compiled.route
        req.route = route.name
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
            req.upstream = route.to[0]
            return _Plan(compiled, target, None, builtin)
        peer_trusted = bool(len(table.trusted) and table.trusted.longest(head.peer[0]))
        headers, req.trace = upstream_request_headers(
            head.headers, head.peer[0], peer_trusted, head.scheme, head.authority, identity,
            req.grpc)
        if ex.upgrade:
            if any(not url.startswith("http://") for url in route.to):
                raise Refused(502, "an Upgrade needs http:// upstreams")
            headers += [("connection", "upgrade"), ("upgrade", ex.upgrade)]
            if head.http_version == "2" and ex.upgrade == "websocket":
                key = head.extra["websocket_key"] = websocket.new_key()
                headers = [(k, v) for k, v in headers if k != websocket.KEY_HEADER]
                headers.append((websocket.KEY_HEADER, key))
        return _Plan(compiled, target, headers, None)

    async def _dispatch(self, ex: Exchange, req: _Request, plan: _Plan) -> None:
        if plan.builtin is not None:
            await plan.builtin(ex)
        else:
            await self._forward(ex, req, plan)

    def _authenticate(self, authorization: str | None, scope: str) -> str:
        if self.authenticate is None:
            raise Refused(503, "this route needs a token and the gateway has no permission feed")
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Refused(401, "a bearer token is required")
        return self.authenticate(authorization[7:].strip(), scope)

    def _pick(self, ex: Exchange, req: _Request, compiled: CompiledRoute,
              backends: list[Backend], tried: set[str]) -> Backend:
        hash_value = ex.head.header(compiled.hash_header) if compiled.hash_header else None
        return compiled.balancer.pick(backends, req.client_ip, hash_value, tried) \
            or compiled.balancer.pick(backends, req.client_ip, hash_value)

    async def _forward(self, ex: Exchange, req: _Request, plan: _Plan,
                       first: Backend | None = None, sent: _Sent | None = None) -> None:
        """Attempts, one upstream after another while a try again is safe. `first`: the
        upstream the first attempt goes to, already picked; `sent`: that attempt, made."""
        compiled = plan.compiled
        route = compiled.route
        head = ex.head
        backends = [self.pools.get(url) for url in route.to]
        replayable = head.method in IDEMPOTENT and not head.has_body
        tried: set[str] = set()
        last: UpstreamError | None = None
        for attempt in range(1 + route.retries):
            backend = first if attempt == 0 and first is not None else \
                self._pick(ex, req, compiled, backends, tried)
            if attempt and not backend.available(time.monotonic()):
                break                            # a try again only goes to a healthy upstream
            tried.add(backend.url)
            req.upstream = backend.url
            try:
                await self._try(ex, backend, route.timeout_s, plan.target, plan.headers,
                                sent if attempt == 0 else None)
                return
            except UpstreamError as err:
                last = err
                self.metrics.upstream_errors.labels(backend.url, type(err).__name__).inc()
                if not isinstance(err, Overloaded) and backend.failed():
                    self.metrics.ejections.labels(backend.url).inc()
                if ex.response_started or (err.sent and not replayable):
                    raise
        raise last

    @staticmethod
    def _send_h1(ex: Exchange, conn: H1Upstream, target: str,
                 headers: list[tuple[str, str]]) -> UpstreamResponse:
        head = ex.head
        h1_headers = [("host", head.raw_authority)]
        h1_headers += [(k, v) for k, v in headers if k != "host"]
        if not head.has_body:
            return conn.send(head.method, target, h1_headers, None, None,
                             tunnel=ex.read_tunnel if ex.upgrade else None)
        length = head.header("content-length")
        return conn.send(head.method, target, h1_headers, ex.read,
                         int(length) if length and length.isdigit() else None)

    async def _try(self, ex: Exchange, backend: Backend, timeout_s: float, target: str,
                   headers: list[tuple[str, str]], sent: _Sent | None = None) -> None:
        head = ex.head
        loop = asyncio.get_running_loop()
        if sent is None:
            backend.in_flight += 1               # (the fast path counted its own attempt)
        try:
            if backend.scheme == "h2c":
                conn = await backend.acquire_h2()
                try:
                    resp = await conn.send(head.method, "http", head.raw_authority, target,
                                           headers, ex.read if head.has_body else None)
                    await self._relay(ex, resp, loop.time() + timeout_s, timeout_s,
                                      on_abort=lambda: conn.reset(resp))
                finally:
                    backend.release_h2()
            else:
                conn = sent.conn if sent is not None else await backend.acquire_h1()
                ok = False
                try:
                    if sent is not None:
                        resp, deadline = sent.resp, sent.deadline
                    else:
                        resp = self._send_h1(ex, conn, target, headers)
                        deadline = loop.time() + timeout_s
                    await self._relay(ex, resp, deadline, timeout_s, on_abort=conn.abort)
                    ok = True
                finally:
                    if not ok:
                        conn.abort()
                    backend.release_h1(conn)
            backend.succeeded()
        finally:
            backend.in_flight -= 1

    async def _relay(self, ex: Exchange, resp, deadline: float, timeout_s: float,
                     on_abort) -> None:
        """The response to the client; its head must come by `deadline` (the loop's clock:
        `timeout_s` after the request was sent)."""
        if not resp.head_done:
            try:
                async with asyncio.timeout_at(deadline):
                    await resp.wait_head()
            except TimeoutError:
                on_abort()
                raise UpstreamTimeout(f"no response head within {timeout_s:g}s") from None
        if resp.head_error is not None:          # the upstream's failure
            raise resp.head_error
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
