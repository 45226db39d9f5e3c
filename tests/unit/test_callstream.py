"""Unary Master calls carried over one stream (gfs/callstream.py, master/callstream.py): both
halves over a real grpc.aio server on loopback, with a stand-in service whose handlers use the
call context the way the masters' do. (Real masters serve the stream in every integration test:
the clients send their calls over it; tests/integration/test_masters.py checks callers apart.)"""
from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest

from gfs.callstream import BlockingCallStream, CallStream, StreamedCallError
from master import callstream as served
from proto import master_pb2 as pb
from proto import master_pb2_grpc as pb_grpc


class StandIn(served.CallsServicer, pb_grpc.MasterServicer):
    """Stat answers with who called (the `authorization` metadata of the call) and obeys
    paths: /slow waits, /missing and /redirect end as the masters' NOT_FOUND and NotLeader do,
    /bug raises, /gave-up ends as a cancelled call."""

    async def Stat(self, request, context):
        who = dict(context.invocation_metadata()).get("authorization", "anonymous")
        if request.path.startswith("/slow"):
            await asyncio.sleep(float(request.path.rsplit("-", 1)[-1]))
        if request.path == "/missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such file: /missing")
        if request.path == "/redirect":
            context.set_trailing_metadata((("gfs-leader", "10.0.0.9:7001"),))
            await context.abort(grpc.StatusCode.UNAVAILABLE, "this master is not the leader")
        if request.path == "/bug":
            raise RuntimeError("a bug")
        if request.path == "/gave-up":             # as abort_rpc does for a caller gone away
            raise asyncio.CancelledError("the client is gone")
        remaining = context.time_remaining()
        return pb.StatResponse(info=pb.FileInfo(path=f"{request.path}|{who}",
                                                size=int((remaining or 0) * 1000)))


class Server:
    """A grpc.aio server on its own loop thread, serving `servicer`."""

    def __init__(self, servicer):
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        async def start():
            self.server = grpc.aio.server()
            pb_grpc.add_MasterServicer_to_server(servicer, self.server)
            self.port = self.server.add_insecure_port("127.0.0.1:0")
            await self.server.start()
            started.set()

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(start(), self.loop)
        assert started.wait(10)
        self.address = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def server():
    s = Server(StandIn())
    yield s
    s.stop()


@pytest.fixture
def blocking(server):
    channel = grpc.insecure_channel(server.address)
    stream = BlockingCallStream(channel, server.address)
    yield stream
    stream.close()
    channel.close()


def stat(stream, path: str, timeout: float = 5.0, metadata=()):
    return stream.call("Stat", pb.StatRequest(path=path), timeout=timeout, metadata=metadata)


def test_each_call_carries_its_own_metadata_and_deadline(blocking):
    alice = (("authorization", "Bearer alice"),)
    bob = (("authorization", "Bearer bob"),)
    assert stat(blocking, "/a", metadata=alice).info.path == "/a|Bearer alice"
    assert stat(blocking, "/b", metadata=bob).info.path == "/b|Bearer bob"
    assert stat(blocking, "/c").info.path == "/c|anonymous"
    assert 2000 < stat(blocking, "/d", timeout=3.0).info.size <= 3000     # ms left, as sent


def test_errors_end_the_call_as_a_call_of_its_own_would(blocking):
    with pytest.raises(StreamedCallError) as err:
        stat(blocking, "/missing")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "no such file: /missing"
    with pytest.raises(StreamedCallError) as err:
        stat(blocking, "/redirect")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert dict(err.value.trailing_metadata()) == {"gfs-leader": "10.0.0.9:7001"}
    with pytest.raises(StreamedCallError) as err:
        stat(blocking, "/bug")
    assert err.value.code() == grpc.StatusCode.INTERNAL and "RuntimeError" in err.value.details()
    t0 = time.monotonic()
    with pytest.raises(StreamedCallError) as err:    # answered, not left to its deadline
        stat(blocking, "/gave-up", timeout=5)
    assert err.value.code() == grpc.StatusCode.CANCELLED and time.monotonic() - t0 < 1
    assert stat(blocking, "/after").info.path == "/after|anonymous"     # the stream goes on


def test_a_call_not_answered_in_time_ends_deadline_exceeded(blocking):
    t0 = time.monotonic()
    with pytest.raises(StreamedCallError) as err:
        stat(blocking, "/slow-1", timeout=0.2)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 0.9
    assert stat(blocking, "/fast").info.path == "/fast|anonymous"


def test_blocking_callers_share_one_stream_and_finish_in_any_order(blocking):
    results: dict[str, float] = {}

    def one(path: str) -> None:
        stat(blocking, path)
        results[path] = time.monotonic()

    threads = [threading.Thread(target=one, args=(p,)) for p in ("/slow-0.5", "/quick")]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(5)
    assert results["/quick"] < results["/slow-0.5"]


def test_async_calls_run_concurrently_over_one_stream(server):
    async def main():
        channel = grpc.aio.insecure_channel(server.address)
        stream = CallStream(channel, server.address)
        t0 = time.monotonic()
        answers = await asyncio.gather(*[
            stream.call("Stat", pb.StatRequest(path="/slow-0.3"), timeout=5,
                        metadata=(("authorization", f"Bearer t{i}"),)) for i in range(50)])
        elapsed = time.monotonic() - t0
        with pytest.raises(StreamedCallError) as err:
            await stream.call("Stat", pb.StatRequest(path="/slow-1"), timeout=0.1)
        await stream.close()
        await channel.close()
        return answers, elapsed, err.value.code()

    answers, elapsed, late = asyncio.run(main())
    assert sorted(a.info.path for a in answers) == sorted(f"/slow-0.3|Bearer t{i}"
                                                          for i in range(50))
    assert elapsed < 2.0                       # 50 calls of 0.3 s each, not one after another
    assert late == grpc.StatusCode.DEADLINE_EXCEEDED


def test_a_broken_stream_fails_its_calls_unavailable_and_the_next_call_opens_another():
    first = Server(StandIn())
    channel = grpc.insecure_channel(first.address)
    stream = BlockingCallStream(channel, first.address)
    try:
        failure: list[BaseException] = []

        def slow() -> None:
            try:
                stat(stream, "/slow-5")
            except StreamedCallError as err:
                failure.append(err)

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.3)
        first.stop()
        t.join(5)
        assert failure and failure[0].code() == grpc.StatusCode.UNAVAILABLE
        assert not stream.unsupported                # a master going away: try it again later
    finally:
        stream.close()
        channel.close()


def test_a_master_without_the_stream_is_called_one_call_at_a_time(blocking):
    older = Server(pb_grpc.MasterServicer())       # every method UNIMPLEMENTED, Calls too
    channel = grpc.insecure_channel(older.address)
    stream = BlockingCallStream(channel, older.address)
    try:
        with pytest.raises(StreamedCallError) as err:
            stat(stream, "/a")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE     # retried: by a call of its own
        assert stream.unsupported
    finally:
        stream.close()
        channel.close()
        older.stop()


def test_the_server_answers_bad_frames_and_bounds_what_runs_at_once(monkeypatch):
    monkeypatch.setattr(served, "MAX_RUNNING", 5)      # one batch: 6 at once
    handlers = served.handlers_of(StandIn())

    async def batches():
        yield pb.CallBatch(calls=[
            pb.CallFrame(id=1, method="Stat", request=b"\xff\xff\xff", timeout=5),
            pb.CallFrame(id=2, method="NoSuchMethod", request=b"", timeout=5),
            pb.CallFrame(id=3, method="Calls", request=b"", timeout=5),
            pb.CallFrame(id=4, method="Stat", request=pb.StatRequest(
                path="/slow-0.2").SerializeToString(), timeout=5),
            pb.CallFrame(id=5, method="Stat", request=pb.StatRequest(
                path="/slow-0.2").SerializeToString(), timeout=5),
            pb.CallFrame(id=6, method="Stat", request=pb.StatRequest(
                path="/slow-0.2").SerializeToString(), timeout=5)])

    async def main():
        return [r async for batch in served.serve_calls(handlers, batches())
                for r in batch.replies]

    replies = {r.id: r for r in asyncio.run(main())}
    code = {i: next(c for c in grpc.StatusCode if c.value[0] == r.code)
            for i, r in replies.items()}
    assert code[1] == grpc.StatusCode.INVALID_ARGUMENT and "StatRequest" in replies[1].details
    assert code[2] == code[3] == grpc.StatusCode.UNIMPLEMENTED
    assert code[4] == code[5] == grpc.StatusCode.OK
    assert code[6] == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_close_lets_calls_in_flight_finish_and_leaves_no_thread_behind(server):
    """close() half-closes the stream: a call in flight still gets its answer, and the stream's
    reader thread is gone when close() returns (a thread left inside gRPC when the interpreter
    exits can hang the exit); streams nobody closed are closed at exit."""
    from gfs import callstream
    channel = grpc.insecure_channel(server.address)
    stream = BlockingCallStream(channel, server.address)
    answers: list = []
    t = threading.Thread(target=lambda: answers.append(stat(stream, "/slow-0.3").info.path))
    t.start()
    time.sleep(0.1)
    reader = stream._stream.reader
    stream.close()
    t.join(5)
    assert answers == ["/slow-0.3|anonymous"]
    assert not reader.is_alive() and stream not in callstream._OPEN
    forgotten = BlockingCallStream(channel, server.address)
    assert stat(forgotten, "/x").info.path == "/x|anonymous"
    reader = forgotten._stream.reader
    callstream._close_open_streams()                 # what atexit runs
    assert not reader.is_alive() and forgotten._stream is None
    channel.close()
