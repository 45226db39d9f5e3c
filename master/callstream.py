"""The master's half of `Master.Calls`: unary calls of the Master service arriving as messages
of one stream (why, and the client's half: gfs/callstream.py).

Each message is served by the same handler as the call it stands for, with a context that
offers what those handlers use of a call's: the metadata the message carries (so the caller is
resolved from its own token, message by message), the time left before the caller stops
waiting, trailing metadata, and `abort`. Calls of one stream run concurrently (a read waiting
for its round does not hold up the next) and their replies go back in batches, in the order
they finish. At most MAX_RUNNING calls of one stream run at once: beyond that a call is answered
RESOURCE_EXHAUSTED at once, never queued without bound.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator, Awaitable, Callable

import grpc

from gfs.callstream import batch_size, unary_methods
from gfs.errors import GfsError, InvalidArgument
from gfs.rpcguard import LIMITER, _bug_status, _count_refusal, _decoder, abort_rpc
from proto import master_pb2 as pb

log = logging.getLogger(__name__)

MAX_RUNNING = 1024


class StreamCounts:
    """What /metrics shows of the streams (master/node.py RaftCollector reads it at scrape
    time; only the event loop's thread writes it)."""
    open = 0            # streams open now
    calls = 0           # calls carried since start
    refused = 0         # of them answered RESOURCE_EXHAUSTED (MAX_RUNNING)
Handler = Callable[[object, "CallContext"], Awaitable[object]]


class CallAborted(grpc.aio.AbortError):
    """What `CallContext.abort` raises (as grpc.aio's does): the call's status."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(details)
        self.status, self.details = code, details


class CallContext:
    """The part of grpc.aio's ServicerContext the Master handlers use, for one call carried by
    a stream."""

    __slots__ = ("_metadata", "_deadline", "trailers")

    def __init__(self, metadata: tuple[tuple[str, str], ...], timeout: float):
        self._metadata = metadata
        self._deadline = time.monotonic() + timeout if timeout > 0 else None
        self.trailers: tuple = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def set_trailing_metadata(self, trailers) -> None:
        self.trailers = tuple(trailers)

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise CallAborted(code, details)


def handlers_of(service) -> dict[str, tuple[Handler, Callable[[bytes], object]]]:
    """name -> (the service's handler, the request decoder answering a malformed body
    INVALID_ARGUMENT) for every unary Master method the service implements."""
    table = {}
    for name, (request_cls, _) in unary_methods().items():
        handler = getattr(service, name, None)
        if handler is not None:
            table[name] = (handler, _decoder(f"/gfs.master.Master/{name}", request_cls.FromString))
    return table


def _reply(call_id: int, code: grpc.StatusCode, details: str,
           trailers: tuple = ()) -> pb.ReplyFrame:
    return pb.ReplyFrame(id=call_id, code=code.value[0], details=details,
                         trailers=[pb.MetadataPair(key=k, value=str(v)) for k, v in trailers])


async def _serve_one(handlers: dict, frame: pb.CallFrame) -> pb.ReplyFrame:
    found = handlers.get(frame.method)
    if found is None:
        return _reply(frame.id, grpc.StatusCode.UNIMPLEMENTED,
                      f"{frame.method!r} is not a unary Master method")
    handler, decode = found
    context = CallContext(tuple((p.key, p.value) for p in frame.metadata), frame.timeout)
    try:
        response = await handler(decode(frame.request), context)
    except InvalidArgument as err:
        _count_refusal("master", frame.method)
        return _reply(frame.id, grpc.StatusCode.INVALID_ARGUMENT, err.message)
    except CallAborted as aborted:
        return _reply(frame.id, aborted.status, aborted.details, context.trailers)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise                            # the stream is going away: no reply to send
        return _reply(frame.id, grpc.StatusCode.CANCELLED, "the call was cancelled")
    except Exception as exc:               # a bug (the handlers' wrapper logs their own)
        LIMITER.log(log, frame.method, exc)
        return _reply(frame.id, grpc.StatusCode.INTERNAL, _bug_status(exc))
    return pb.ReplyFrame(id=frame.id, response=response.SerializeToString())


async def serve_calls(handlers: dict, batches: AsyncIterator[pb.CallBatch]
                      ) -> AsyncIterator[pb.ReplyBatch]:
    """The replies to the calls arriving in `batches`, in batches, as the calls finish; ends
    when the caller has stopped sending and every call has its reply. A batch that is not a
    valid message raises the InvalidArgument the request guard decoded it with (the stream
    then ends with that status; the calls still running are cancelled)."""
    loop = asyncio.get_running_loop()
    done: list[pb.ReplyFrame] = []
    running: set[asyncio.Task] = set()
    wake = asyncio.Event()

    def finished(task: asyncio.Task) -> None:
        running.discard(task)
        if not task.cancelled():
            done.append(task.result())
        wake.set()

    async def receive() -> None:
        try:
            async for batch in batches:
                StreamCounts.calls += len(batch.calls)
                for frame in batch.calls:
                    if len(running) >= MAX_RUNNING:
                        StreamCounts.refused += 1
                        done.append(_reply(frame.id, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                           f"more than {MAX_RUNNING} calls of one stream at once"))
                        wake.set()
                        continue
                    task = loop.create_task(_serve_one(handlers, frame))
                    running.add(task)
                    task.add_done_callback(finished)
        finally:
            wake.set()

    receiving = loop.create_task(receive())
    StreamCounts.open += 1
    try:
        while True:
            await wake.wait()
            wake.clear()
            if done:
                yield pb.ReplyBatch(replies=_take(done))
                wake.set()                   # more may have finished meanwhile
                continue
            if receiving.done():
                receiving.result()           # the caller's stream failed: raise it
                if not running:
                    return
    finally:
        StreamCounts.open -= 1
        receiving.cancel()
        for task in list(running):
            task.cancel()


class CallsServicer:
    """Mixin for a Master servicer: serves `Calls` with the servicer's own unary handlers
    (put it before `MasterServicer` among the bases)."""

    _streamed: dict | None = None

    async def Calls(self, request_iterator, context):
        """Unary calls of this service as messages of one stream."""
        if self._streamed is None:
            self._streamed = handlers_of(self)
        try:
            async for replies in serve_calls(self._streamed, request_iterator):
                yield replies
        except GfsError as err:              # a batch that is not a message (rpcguard)
            await abort_rpc(context, err.grpc_code, err.message)


def _take(done: list[pb.ReplyFrame]) -> list[pb.ReplyFrame]:
    """The first replies of `done` up to one batch's bytes (gfs.callstream.batch_size; at
    least one), removed from it."""
    n = batch_size(done, lambda reply: len(reply.response) + len(reply.details) + 32)
    taken = done[:n]
    del done[:n]
    return taken
