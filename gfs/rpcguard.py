"""What every gfs gRPC server does with requests it cannot use: a precise status, a bounded log.

- A request body that is not a valid message of the method's request type (random bytes, a
  truncated message, a string field that is not UTF-8) is answered INVALID_ARGUMENT naming the
  method and the message type, and logs nothing. Left to grpc, the same body is answered
  INTERNAL or UNKNOWN with a full traceback in the daemon's log for every request.
  `RequestGuard` (threaded servers) and `AsyncRequestGuard` (asyncio servers) are server
  interceptors that take over decoding from grpc for every method.
- An exception that is not a GfsError is a bug in gfs, not bad input: it is answered INTERNAL
  and logged with its traceback, but one identical traceback (same method, exception type and
  place) at most once per `TracebackLimiter.window` seconds, so a client repeating a request that
  trips the bug cannot fill the disk with copies of it. The services' own wrappers do this for
  the methods they wrap (and count the status in their metrics); the guards do it for every
  method, wrapped or not.

Oversized messages never reach any of this: grpc refuses a message over the server's
`grpc.max_receive_message_length` with RESOURCE_EXHAUSTED itself.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import OrderedDict
from typing import Any, AsyncIterator, Callable

import asyncio

import grpc
from google.protobuf.message import DecodeError
from grpc._cython.cygrpc import ExecuteBatchError     # grpcio pinned (requirements)

from gfs.errors import InvalidArgument
from gfs.metrics import RPC_REQUESTS

Deserializer = Callable[[bytes], Any]


async def abort_rpc(context: grpc.aio.ServicerContext, code: grpc.StatusCode,
                    details: str) -> None:
    """`context.abort` for grpc.aio handlers (raises, as it does). When the call is already
    over on the client's side (it left, or its deadline passed) grpc cannot send the status and
    fails with ExecuteBatchError, after marking the call aborted — and a second abort then fails
    with "Abort already called!"; both used to be logged as bugs with their tracebacks. That
    case ends the handler as a cancelled call (which grpc does not log)."""
    try:
        await context.abort(code, details)
    except ExecuteBatchError:
        raise asyncio.CancelledError("the client is gone: the status could not be sent") \
            from None


def _decoder(method: str, deserialize: Deserializer) -> Callable[[bytes], Any]:
    """`deserialize` raising InvalidArgument (one line, no traceback) for a malformed body."""
    name = method.rsplit("/", 1)[-1]

    def decode(body: bytes) -> Any:
        try:
            return deserialize(body)
        except (DecodeError, UnicodeDecodeError, ValueError) as err:
            raise InvalidArgument(f"{name}: the request body ({len(body)} bytes) is not a valid "
                                  f"{_type_name(deserialize)} message: {_first_line(err)}") \
                from None
    return decode


def _type_name(deserialize: Deserializer) -> str:
    owner = getattr(deserialize, "__self__", None)       # Message.FromString is a classmethod
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return getattr(descriptor, "full_name", "request")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def _count_refusal(daemon: str, method: str) -> None:
    """Count a request refused before its handler ran, as the handlers count theirs."""
    RPC_REQUESTS.labels(daemon, method.rsplit("/", 1)[-1], "INVALID_ARGUMENT").inc()


# --- threaded servers ------------------------------------------------------------------------

def _aborted(context) -> bool:
    """Did the handler end the call itself (context.abort raises a bare Exception)?"""
    return context.code() not in (None, grpc.StatusCode.OK)


def _bug_status(exc: BaseException) -> str:
    return f"internal error: {type(exc).__name__}: {_first_line(exc)}"


class _Guard:
    """What both guards share: the daemon's name (metrics) and logger, and taking a handler
    apart."""

    def __init__(self, daemon: str, logger: logging.Logger | None = None):
        self.daemon = daemon
        self.log = logger or logging.getLogger(__name__)
        self._guarded: dict[str, tuple[Any, Any]] = {}   # method -> (its handler, guarded)

    def _guarded_handler(self, handler, handler_call_details):
        """The guarded version of `handler` (`_guard`), made once per method: a service's
        handlers are made once, and rebuilding the closures around them for every call cost
        every RPC a few µs. (Only methods the server has are remembered: a bounded map.)"""
        method = handler_call_details.method
        known = self._guarded.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        guarded = self._guard(handler, handler_call_details)
        self._guarded[method] = (handler, guarded)
        return guarded

    @staticmethod
    def _parts(handler, handler_call_details) -> tuple[str, Callable[[bytes], Any], str, Any]:
        """(method path, decode, handler kind such as "unary_stream", the handler's behavior)."""
        method = handler_call_details.method
        kind = (("stream" if handler.request_streaming else "unary") + "_"
                + ("stream" if handler.response_streaming else "unary"))
        return (method, _decoder(method, handler.request_deserializer), kind,
                getattr(handler, kind))


class RequestGuard(_Guard, grpc.ServerInterceptor):
    """For every method of a threaded server: decode the request body in the handler's thread
    (a malformed body gets INVALID_ARGUMENT and no log line, instead of grpc's INTERNAL and a
    traceback), and answer an exception that escapes the handler INTERNAL with a rate-limited
    traceback (grpc would log every one). A malformed message of a client stream surfaces as
    InvalidArgument raised by the request iterator, which the service's own error handling
    turns into the status. `daemon` labels the metrics."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        return self._guarded_handler(handler, handler_call_details)

    def _guard(self, handler, handler_call_details):
        method, decode, kind, inner = self._parts(handler, handler_call_details)

        def request_of(body_or_bodies, context):
            if handler.request_streaming:
                return map(decode, body_or_bodies)
            try:
                return decode(body_or_bodies)
            except InvalidArgument as err:
                _count_refusal(self.daemon, method)
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, err.message)   # raises

        def bug(context, exc: Exception) -> None:
            if _aborted(context) or isinstance(exc, grpc.RpcError):
                raise exc                               # the call ended (or was cancelled)
            LIMITER.log(self.log, method, exc)
            context.abort(grpc.StatusCode.INTERNAL, _bug_status(exc))

        if handler.response_streaming:
            def behavior(request, context):
                request = request_of(request, context)
                try:
                    yield from inner(request, context)
                except Exception as exc:
                    bug(context, exc)
        else:
            def behavior(request, context):
                request = request_of(request, context)
                try:
                    return inner(request, context)
                except Exception as exc:
                    bug(context, exc)
        return handler._replace(request_deserializer=None, **{kind: behavior})


# --- asyncio servers -------------------------------------------------------------------------

class AsyncRequestGuard(_Guard, grpc.aio.ServerInterceptor):
    """`RequestGuard` for grpc.aio servers."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        return self._guarded_handler(handler, handler_call_details)

    def _guard(self, handler, handler_call_details):
        method, decode, kind, inner = self._parts(handler, handler_call_details)

        async def decoded(requests: AsyncIterator[bytes]) -> AsyncIterator[Any]:
            async for body in requests:
                yield decode(body)

        async def request_of(body_or_bodies, context):
            if handler.request_streaming:
                return decoded(body_or_bodies)
            try:
                return decode(body_or_bodies)
            except InvalidArgument as err:
                _count_refusal(self.daemon, method)
                await abort_rpc(context, grpc.StatusCode.INVALID_ARGUMENT, err.message)  # raises

        async def bug(context, exc: Exception) -> None:
            if isinstance(exc, grpc.aio.AbortError):
                raise exc
            LIMITER.log(self.log, method, exc)
            await abort_rpc(context, grpc.StatusCode.INTERNAL, _bug_status(exc))

        if handler.response_streaming:
            async def behavior(request, context):
                request = await request_of(request, context)
                try:
                    async for response in inner(request, context):
                        yield response
                except Exception as exc:
                    await bug(context, exc)
        else:
            async def behavior(request, context):
                request = await request_of(request, context)
                try:
                    return await inner(request, context)
                except Exception as exc:
                    await bug(context, exc)
        return handler._replace(request_deserializer=None, **{kind: behavior})


# --- unexpected exceptions -------------------------------------------------------------------

class TracebackLimiter:
    """Log an unexpected exception with its traceback, at most once per `window` seconds for
    each (method, exception type, raising line); repeats in between are counted, not logged,
    and the next logged occurrence says how many were left out. Remembers at most `keys`
    distinct tracebacks (the least recently seen are forgotten)."""

    def __init__(self, window: float = 60.0, keys: int = 256,
                 clock: Callable[[], float] = time.monotonic):
        self.window = window
        self.keys = keys
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: OrderedDict[tuple, list] = OrderedDict()    # key -> [last logged, skipped]

    def log(self, logger: logging.Logger, method: str, exc: BaseException) -> bool:
        """Log `exc` raised by RPC `method` unless an identical one was logged within the
        window; returns whether it was logged."""
        key = (method, type(exc).__qualname__, _origin(exc))
        now = self.clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry[0] < self.window:
                entry[1] += 1
                self._seen.move_to_end(key)
                return False
            skipped = entry[1] if entry is not None else 0
            self._seen[key] = [now, 0]
            self._seen.move_to_end(key)
            while len(self._seen) > self.keys:
                self._seen.popitem(last=False)
        more = f" ({skipped} identical failures not logged in the last {self.window:g} s)" \
            if skipped else ""
        logger.error("%s failed: %s: %s%s", method, type(exc).__name__, _first_line(exc), more,
                     exc_info=(type(exc), exc, exc.__traceback__),
                     extra={"fields": {"rpc": method, "suppressed": skipped}})
        return True


def _origin(exc: BaseException) -> tuple[str, int]:
    """Where `exc` was raised: the innermost frame of its traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    return (frames[-1].filename, frames[-1].lineno) if frames else ("", 0)


LIMITER = TracebackLimiter()
