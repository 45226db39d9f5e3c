"""Unary Master calls carried as messages of one long-lived stream (`Master.Calls`).

Why: on grpc.aio a call of its own costs the server ~370 µs of CPU and the caller ~240 µs (one
caller at a time; ~210 and ~160 at sixteen), the same request sent as a message of an open
stream ~150 and ~160 (~65 and ~70 at sixteen) — measured in docs/benchmarks.md. A master's
CPU is what bounds its reads.

Nothing else about a call changes. Each message carries what the call's own metadata would
(the bearer token, `gfs-act-for`), and the master resolves the caller from it for that message
alone (master/callstream.py), exactly as for a call of its own: a stream has no identity. The
reply carries the status code, details and trailing metadata the call would have ended with,
so a failed message raises a `grpc.RpcError` that the client's retry, redirect and error code
reads like any other (`StreamedCallError`). A stream that breaks fails the messages still
waiting on it with UNAVAILABLE — retried like a call to a master that went away, which the
exactly-once tagging of mutations makes safe — and the next call opens a new one. A master
that does not know `Calls` (an older version), or a stream that fails in a way a call of its own
would not, makes this client call that master one call at a time from then on.

`CallStream` serves asyncio callers (gfs/aio.py), `BlockingCallStream` threads (gfs/client.py:
gRPC's thread sends the batches, one thread per stream hands the replies to the waiting
callers). This module is the client's half and what both halves share (`unary_methods`); the
server's is master/callstream.py.
"""
from __future__ import annotations

import asyncio
import atexit
import functools
import itertools
import logging
import queue
import threading
import weakref

import grpc
from google.protobuf.message_factory import GetMessageClass

from proto import master_pb2 as pb

log = logging.getLogger(__name__)

METHOD = "/gfs.master.Master/Calls"
# A batch of calls (or of replies) stops growing past this many bytes, well under the 4 MiB a
# master accepts in one message (a call that alone is larger goes alone, as it would have).
BATCH_BYTES = 1 << 20
# Stream failures after which the calls are sent one call at a time instead: the master does
# not serve the stream, or it refused it in a way a master going away would not explain.
_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
              grpc.StatusCode.DEADLINE_EXCEEDED}
_CODES = {code.value[0]: code for code in grpc.StatusCode}


@functools.cache
def unary_methods() -> dict[str, tuple[type, type]]:
    """Master's unary methods: name -> (request class, response class). The methods a stream
    can carry (streaming ones cannot, nor `Calls` itself)."""
    service = pb.DESCRIPTOR.services_by_name["Master"]
    return {m.name: (GetMessageClass(m.input_type), GetMessageClass(m.output_type))
            for m in service.methods if not m.client_streaming and not m.server_streaming}


def status_code(value: int) -> grpc.StatusCode:
    """The grpc.StatusCode of a status number (UNKNOWN for a number gRPC does not define)."""
    return _CODES.get(value, grpc.StatusCode.UNKNOWN)


class StreamedCallError(grpc.RpcError):
    """A call carried by a stream that did not succeed: what `grpc.RpcError` of a call of its
    own offers (`code`, `details`, `trailing_metadata`)."""

    def __init__(self, code: grpc.StatusCode, details: str,
                 trailers: tuple[tuple[str, str], ...] = ()):
        super().__init__(f"{code.name}: {details}")
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailers


def _deadline_error(timeout: float) -> StreamedCallError:
    return StreamedCallError(grpc.StatusCode.DEADLINE_EXCEEDED, f"no reply within {timeout:.3g} s")


def _broken_error(address: str, err: grpc.RpcError) -> StreamedCallError:
    return StreamedCallError(grpc.StatusCode.UNAVAILABLE,
                             f"call stream to {address or 'the master'} broke: "
                             f"{err.code().name}: {err.details() or ''}")


def _falls_back(address: str, err: grpc.RpcError) -> bool:
    """Whether a stream failure means calling `address` one call at a time from now on."""
    if err.code() in _TRANSIENT:
        return False
    log.info("calls to %s go one call at a time: the call stream ended with %s: %s",
             address, err.code().name, err.details())
    return True


def _frame(call_id: int, method: str, request, timeout: float, pairs) -> pb.CallFrame:
    return pb.CallFrame(id=call_id, method=method, request=request.SerializeToString(),
                        timeout=timeout, metadata=pairs)


def _outcome(method: str, reply: pb.ReplyFrame):
    """The response a reply carries, or the StreamedCallError it ended with."""
    if reply.code:
        raise StreamedCallError(status_code(reply.code), reply.details,
                                tuple((p.key, p.value) for p in reply.trailers))
    return unary_methods()[method][1].FromString(reply.response)


def batch_size(frames, size_of) -> int:
    """How many of `frames`, from the first, make one batch (at least one; up to BATCH_BYTES)."""
    size, n = 0, 0
    for frame in frames:
        size += size_of(frame)
        if n and size > BATCH_BYTES:
            break
        n += 1
    return n


class _MetadataPairs:
    """A call's metadata as the frames carry it, built once per metadata tuple (views acting
    for many callers: only the latest few kept)."""

    def __init__(self):
        self._pairs: dict[tuple, list[pb.MetadataPair]] = {}

    def __call__(self, metadata: tuple) -> list[pb.MetadataPair]:
        pairs = self._pairs.get(metadata)
        if pairs is None:
            if len(self._pairs) > 64:
                self._pairs.clear()
            pairs = self._pairs[metadata] = [pb.MetadataPair(key=k, value=v)
                                             for k, v in metadata]
        return pairs


def _frame_bytes(frame: pb.CallFrame) -> int:
    return len(frame.request) + 64


def _expire(future: asyncio.Future, timeout: float) -> None:
    if not future.done():
        future.set_exception(_deadline_error(timeout))


class CallStream:
    """The `Master.Calls` stream to one master for asyncio callers, opened on first use on the
    running loop (and again after it broke); `call` sends one call over it and waits for its
    reply."""

    def __init__(self, channel: grpc.aio.Channel, address: str = ""):
        self.address = address
        self.unsupported = False            # calls go one call at a time: see the module doc
        self._open_call = channel.stream_stream(
            METHOD, request_serializer=pb.CallBatch.SerializeToString,
            response_deserializer=pb.ReplyBatch.FromString)
        self._stream: grpc.aio.StreamStreamCall | None = None
        self._tasks: tuple[asyncio.Task, ...] = ()
        self._pending: dict[int, asyncio.Future] = {}
        self._outbox: list[pb.CallFrame] = []
        self._wake = asyncio.Event()
        self._ids = itertools.count(1)
        self._pairs = _MetadataPairs()

    async def call(self, method: str, request, *, timeout: float,
                   metadata: tuple[tuple[str, str], ...] = ()):
        """`method`'s response to `request`, or the StreamedCallError it ended with (also
        DEADLINE_EXCEEDED after `timeout` seconds without a reply)."""
        if self._stream is None:
            self._open()
        loop = asyncio.get_running_loop()
        call_id = next(self._ids)
        future = self._pending[call_id] = loop.create_future()
        self._outbox.append(_frame(call_id, method, request, timeout, self._pairs(metadata)))
        self._wake.set()
        timer = loop.call_later(timeout, _expire, future, timeout)
        try:
            reply = await future
        finally:
            timer.cancel()
            self._pending.pop(call_id, None)
        return _outcome(method, reply)

    def _open(self) -> None:
        stream = self._stream = self._open_call()
        self._tasks = (asyncio.ensure_future(self._write(stream)),
                       asyncio.ensure_future(self._read(stream)))

    async def _write(self, stream) -> None:
        try:
            while True:
                if not self._outbox:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                n = batch_size(self._outbox, _frame_bytes)
                batch, self._outbox = self._outbox[:n], self._outbox[n:]
                await stream.write(pb.CallBatch(calls=batch))
        except asyncio.CancelledError:
            raise
        except grpc.RpcError as err:
            self._broken(stream, err)
        except Exception as err:            # e.g. the stream ended under the write
            self._broken(stream, StreamedCallError(grpc.StatusCode.UNAVAILABLE, str(err)))

    async def _read(self, stream) -> None:
        try:
            while True:
                batch = await stream.read()
                if batch is grpc.aio.EOF:
                    break
                pending = self._pending
                for reply in batch.replies:
                    future = pending.pop(reply.id, None)
                    if future is not None and not future.done():
                        future.set_result(reply)
            self._broken(stream, StreamedCallError(grpc.StatusCode.UNAVAILABLE,
                                                   "the master ended the call stream"))
        except asyncio.CancelledError:
            raise
        except grpc.RpcError as err:
            self._broken(stream, err)

    def _broken(self, stream, err: grpc.RpcError) -> None:
        """Fail every call waiting on `stream` (UNAVAILABLE: retried elsewhere or again) and
        forget it."""
        if stream is not self._stream:
            return
        self.unsupported = self.unsupported or _falls_back(self.address, err)
        self._stream = None
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._tasks = ()
        stream.cancel()
        self._fail_all(_broken_error(self.address, err))

    def _fail_all(self, failure: StreamedCallError) -> None:
        pending, self._pending, self._outbox = self._pending, {}, []
        for future in pending.values():
            if not future.done():
                future.set_exception(failure)

    async def close(self) -> None:
        stream, tasks = self._stream, self._tasks
        self._stream, self._tasks = None, ()
        for task in tasks:
            task.cancel()
        if stream is not None:
            stream.cancel()
        self._fail_all(StreamedCallError(grpc.StatusCode.CANCELLED, "the client was closed"))


class _Waiter:
    """One blocking caller's wait for its reply: a lock held until the reply (or the failure)
    is in (the cheapest hand-off between two threads in CPython)."""

    __slots__ = ("lock", "reply", "error")

    def __init__(self):
        self.lock = threading.Lock()
        self.lock.acquire()
        self.reply: pb.ReplyFrame | None = None
        self.error: StreamedCallError | None = None

    def settle(self, reply: pb.ReplyFrame | None, error: StreamedCallError | None) -> None:
        """Called once, by whoever took the waiter out of its stream's `pending`."""
        self.reply, self.error = reply, error
        self.lock.release()


class _Stream:
    """One open `Calls` stream of a BlockingCallStream: its outbox (the frames gRPC's thread
    sends), the calls waiting for replies, the gRPC call and the thread reading its replies."""

    def __init__(self):
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.pending: dict[int, _Waiter] = {}
        self.call = None
        self.reader: threading.Thread | None = None

    def requests(self):
        """The batches to send, as gRPC's sending thread asks for them; ends at None (the
        master then ends the stream once it has answered every call)."""
        while True:
            frame = self.outbox.get()
            if frame is None:
                return
            frames = [frame]
            size = _frame_bytes(frame)
            while size < BATCH_BYTES:
                try:
                    frame = self.outbox.get_nowait()
                except queue.Empty:
                    break
                if frame is None:
                    yield pb.CallBatch(calls=frames)
                    return
                frames.append(frame)
                size += _frame_bytes(frame)
            yield pb.CallBatch(calls=frames)


# Streams still open when the interpreter exits are closed first (atexit runs while threads
# still run): a stream's threads must not be inside gRPC when exit freezes them — one frozen
# holding the call's lock left the call's finalizer, and the process, waiting forever (seen as
# a `gfs put` that never exited, under load).
_OPEN: "weakref.WeakSet[BlockingCallStream]" = weakref.WeakSet()
CLOSE_WAIT_S = 2.0          # how long close() lets the calls in flight finish


@atexit.register
def _close_open_streams() -> None:
    for stream in list(_OPEN):
        stream.close()


class BlockingCallStream:
    """`CallStream` for threads (gfs/client.py): thread-safe; opened on first use and again
    after it broke."""

    def __init__(self, channel: grpc.Channel, address: str = ""):
        self.address = address
        self.unsupported = False
        self._open_call = channel.stream_stream(
            METHOD, request_serializer=pb.CallBatch.SerializeToString,
            response_deserializer=pb.ReplyBatch.FromString)
        self._lock = threading.Lock()
        self._stream: _Stream | None = None
        self._ids = itertools.count(1)
        self._pairs = _MetadataPairs()
        _OPEN.add(self)

    def call(self, method: str, request, *, timeout: float,
             metadata: tuple[tuple[str, str], ...] = ()):
        """As `CallStream.call`, blocking."""
        waiter = _Waiter()
        with self._lock:
            stream = self._stream
            if stream is None:
                stream = self._open()
            call_id = next(self._ids)
            stream.pending[call_id] = waiter
            pairs = self._pairs(metadata)
        stream.outbox.put(_frame(call_id, method, request, timeout, pairs))
        if not waiter.lock.acquire(timeout=timeout):
            if stream.pending.pop(call_id, None) is not None:    # no reply can settle it now
                raise _deadline_error(timeout)
            waiter.lock.acquire()            # the reader took it: its outcome is on the way
        if waiter.error is not None:
            raise waiter.error
        return _outcome(method, waiter.reply)

    def _open(self) -> _Stream:
        stream = self._stream = _Stream()
        stream.call = self._open_call(stream.requests())
        stream.reader = threading.Thread(target=self._read, args=(stream,), daemon=True,
                                         name=f"gfs-calls-{self.address}")
        stream.reader.start()
        return stream

    def _read(self, stream: _Stream) -> None:
        try:
            for batch in stream.call:
                pending = stream.pending
                for reply in batch.replies:
                    waiter = pending.pop(reply.id, None)
                    if waiter is not None:
                        waiter.settle(reply, None)
            err: grpc.RpcError = StreamedCallError(grpc.StatusCode.UNAVAILABLE,
                                                   "the master ended the call stream")
        except grpc.RpcError as failed:
            err = failed
        with self._lock:
            if self._stream is stream:
                self._stream = None
                self.unsupported = self.unsupported or _falls_back(self.address, err)
        self._end(stream, _broken_error(self.address, err))

    @staticmethod
    def _end(stream: _Stream, failure: StreamedCallError) -> None:
        stream.outbox.put(None)
        stream.call.cancel()
        for call_id in list(stream.pending):
            waiter = stream.pending.pop(call_id, None)
            if waiter is not None:
                waiter.settle(None, failure)

    def close(self) -> None:
        """End the stream: no more calls are sent, the master ends it once the calls in
        flight are answered (at most CLOSE_WAIT_S, then it is cancelled), and its reader
        thread is gone when this returns (see _OPEN)."""
        _OPEN.discard(self)
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is None:
            return
        stream.outbox.put(None)
        if stream.reader is not threading.current_thread():
            stream.reader.join(CLOSE_WAIT_S)
            if stream.reader.is_alive():
                stream.call.cancel()
                stream.reader.join(1.0)
        self._end(stream, StreamedCallError(grpc.StatusCode.CANCELLED, "the client was closed"))
