"""gfs.rpcguard: malformed request bodies get INVALID_ARGUMENT from in-process gRPC servers
(threaded and asyncio), and repeated identical tracebacks are logged once per window."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent import futures

import grpc
import pytest

from gfs.errors import InvalidArgument
from gfs.rpcguard import AsyncRequestGuard, RequestGuard, TracebackLimiter
from proto import chunkserver_pb2 as cpb

SERVICE = "test.Echo"
JUNK = b"\x0a\xff\xff\xff\xff\x0f"          # field 1, length far past the end


def _handlers(seen: list):
    def unary(request, context):
        seen.append(request)
        return cpb.DeleteResponse(deleted=request.handle == 7)

    def client_stream(requests, context):
        try:
            return cpb.WriteResponse(length=sum(len(r.data) for r in requests))
        except InvalidArgument as err:              # what the gfs services' wrappers do
            seen.append(err.message)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, err.message)

    def boom(request, context):
        raise RuntimeError(f"bug {request.handle}")

    return _method_handlers(unary, client_stream, boom)


def _method_handlers(unary, client_stream, boom) -> dict:
    """Unary: DeleteRequest -> DeleteResponse; Stream: WriteRequest... -> WriteResponse;
    Boom: a handler with a bug."""
    return {
        "Boom": grpc.unary_unary_rpc_method_handler(
            boom, request_deserializer=cpb.DeleteRequest.FromString,
            response_serializer=cpb.DeleteResponse.SerializeToString),
        "Unary": grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=cpb.DeleteRequest.FromString,
            response_serializer=cpb.DeleteResponse.SerializeToString),
        "Stream": grpc.stream_unary_rpc_method_handler(
            client_stream, request_deserializer=cpb.WriteRequest.FromString,
            response_serializer=cpb.WriteResponse.SerializeToString),
    }


def _call(channel, name: str, request, streaming: bool = False):
    kind = channel.stream_unary if streaming else channel.unary_unary
    return kind(f"/{SERVICE}/{name}")(request, timeout=5)


def test_threaded_server_answers_invalid_argument_without_a_log_line(caplog):
    seen: list = []
    server = grpc.server(futures.ThreadPoolExecutor(2), interceptors=[RequestGuard("test")])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE,
                                                                          _handlers(seen))])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with caplog.at_level(logging.DEBUG), \
                grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            assert _call(ch, "Unary", cpb.DeleteRequest(handle=7).SerializeToString()) \
                == cpb.DeleteResponse(deleted=True).SerializeToString()
            with pytest.raises(grpc.RpcError) as err:
                _call(ch, "Unary", JUNK)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "Unary" in err.value.details() and "gfs.chunkserver.DeleteRequest" \
                in err.value.details()
            good = cpb.WriteRequest(data=b"abc").SerializeToString()
            assert _call(ch, "Stream", iter([good, good]), streaming=True) \
                == cpb.WriteResponse(length=6).SerializeToString()
            with pytest.raises(grpc.RpcError) as err:
                _call(ch, "Stream", iter([good, JUNK]), streaming=True)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "gfs.chunkserver.WriteRequest" in err.value.details()
            assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
            _assert_bug_logged_once(ch.unary_unary(f"/{SERVICE}/Boom"), caplog, "threaded")
        assert [r for r in seen if not isinstance(r, str)] == [cpb.DeleteRequest(handle=7)]
    finally:
        server.stop(0).wait()


def test_asyncio_server_answers_invalid_argument_without_a_log_line(caplog):
    async def unary(request, context):
        return cpb.DeleteResponse(deleted=request.handle == 7)

    async def stream(requests, context):
        n = 0
        try:
            async for r in requests:
                n += len(r.data)
        except InvalidArgument as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, err.message)
        return cpb.WriteResponse(length=n)

    async def boom(request, context):
        raise RuntimeError(f"bug {request.handle}")

    handlers = _method_handlers(unary, stream, boom)

    async def main():
        async with _guarded_aio_server(handlers) as port:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                ok = await ch.unary_unary(f"/{SERVICE}/Unary")(
                    cpb.DeleteRequest(handle=7).SerializeToString(), timeout=5)
                assert cpb.DeleteResponse.FromString(ok).deleted
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await ch.unary_unary(f"/{SERVICE}/Unary")(JUNK, timeout=5)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "gfs.chunkserver.DeleteRequest" in err.value.details()
                good = cpb.WriteRequest(data=b"ab").SerializeToString()
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await ch.stream_unary(f"/{SERVICE}/Stream")(iter([good, JUNK]), timeout=5)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
            with grpc.insecure_channel(f"127.0.0.1:{port}") as sync_channel:
                await asyncio.to_thread(_assert_bug_logged_once,
                                        sync_channel.unary_unary(f"/{SERVICE}/Boom"), caplog,
                                        "asyncio")

    with caplog.at_level(logging.DEBUG):
        asyncio.run(main())


def _assert_bug_logged_once(call, caplog, kind: str) -> None:
    """A handler's bug: INTERNAL every time, its traceback logged once for 30 calls."""
    for i in range(30):
        with pytest.raises(grpc.RpcError) as err:
            call(cpb.DeleteRequest(handle=i).SerializeToString(), timeout=5)
        assert err.value.code() == grpc.StatusCode.INTERNAL, kind
        assert "RuntimeError: bug" in err.value.details()
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(logged) == 1 and logged[0].exc_info, (kind, caplog.text)
    assert "/test.Echo/Boom failed: RuntimeError" in logged[0].getMessage()


def _raise(kind=ValueError, text="boom"):
    try:
        raise kind(text)
    except Exception as exc:
        return exc


def test_traceback_limiter_logs_one_identical_traceback_per_window(caplog):
    now = [100.0]
    limiter = TracebackLimiter(window=60, clock=lambda: now[0])
    log = logging.getLogger("test.limiter")
    with caplog.at_level(logging.ERROR, logger="test.limiter"):
        assert limiter.log(log, "Stat", _raise())
        assert not any(limiter.log(log, "Stat", _raise()) for _ in range(500))
        assert limiter.log(log, "List", _raise())                # another method
        assert limiter.log(log, "Stat", _raise(KeyError))        # another exception type
        now[0] += 61
        assert limiter.log(log, "Stat", _raise())
    assert len(caplog.records) == 4
    assert all(r.exc_info for r in caplog.records)               # each with its traceback
    assert "500 identical failures not logged" in caplog.records[-1].getMessage()
    assert "ValueError: boom" in caplog.records[0].getMessage()


def test_traceback_limiter_remembers_a_bounded_number_of_tracebacks():
    limiter = TracebackLimiter(window=60, keys=3, clock=lambda: 0.0)
    log = logging.getLogger("test.limiter.bounded")
    for i in range(10):
        limiter.log(log, f"M{i}", _raise())
    assert len(limiter._seen) == 3


def test_an_abort_after_the_client_left_is_not_logged_as_a_bug(caplog):
    """A handler still running when its client's deadline passed, which then fails: grpc
    cannot send the status any more (ExecuteBatchError, and a second abort "Abort already
    called!"). That is a client gone, not a bug in gfs: nothing of it is logged, and the
    server goes on serving."""
    from gfs.errors import FailedPrecondition
    from master.service import abort_with

    async def late(request, context):
        try:
            await asyncio.sleep(0.8)
        except asyncio.CancelledError:       # grpc cancelled it: still run to the failure
            await asyncio.sleep(0.05)
        if request.handle == 1:
            await abort_with(context, FailedPrecondition("too late to say"))
        raise RuntimeError("a bug, after the client left")

    handlers = _method_handlers(late, late, late)

    async def main():
        async with _guarded_aio_server(handlers) as port:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                for handle in (1, 2):
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await ch.unary_unary(f"/{SERVICE}/Unary")(
                            cpb.DeleteRequest(handle=handle).SerializeToString(), timeout=0.2)
                    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                await asyncio.sleep(1.2)             # both handlers have failed by now
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await ch.unary_unary(f"/{SERVICE}/Unary")(JUNK, timeout=5)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    with caplog.at_level(logging.DEBUG):
        asyncio.run(main())
    text = caplog.text
    assert "ExecuteBatchError" not in text and "UsageError" not in text, text
    assert "Unexpected" not in text, text


@contextlib.asynccontextmanager
async def _guarded_aio_server(handlers: dict):
    """A grpc.aio server of `handlers` behind AsyncRequestGuard on a loopback port: its port."""
    server = grpc.aio.server(interceptors=[AsyncRequestGuard("test")])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(0)
