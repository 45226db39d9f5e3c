"""ServerConnection against a transport that records each send. Write coalescing: the small
writes of one turn of the event loop leave in one send, large ones at once, nothing queued is
lost on close or kept on abort, and the queue never grows past COALESCE_BYTES. And an
exchange's handling handed to a Task that never ran is closed, not left behind."""
from __future__ import annotations

import asyncio

from gateway.http.connection import COALESCE_BYTES, ServerConnection
from gateway.http.limits import Limits


class RecordingTransport(asyncio.Transport):
    def __init__(self):
        super().__init__()
        self.sends: list[bytes] = []
        self.closed = False
        self.aborted = False

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 5555) if name == "peername" else default

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def write(self, data):
        self.sends.append(bytes(data))

    def writelines(self, list_of_data):
        self.sends.append(b"".join(list_of_data))

    def close(self):
        self.closed = True

    def abort(self):
        self.aborted = True


async def _noop_app(ex):
    pass


def connected() -> tuple[ServerConnection, RecordingTransport]:
    conn = ServerConnection(_noop_app, Limits())
    transport = RecordingTransport()
    conn.connection_made(transport)
    return conn, transport


def test_small_writes_of_one_turn_leave_in_one_send():
    async def go():
        conn, t = connected()
        conn.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
        conn.write(b"body")
        assert t.sends == []                       # still this turn of the loop
        await asyncio.sleep(0)
        assert t.sends == [b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody"]
        conn.write(b"next")
        await asyncio.sleep(0)
        assert t.sends[1:] == [b"next"]
        conn.close()
    asyncio.run(go())


def test_large_writes_go_at_once_and_the_queue_stays_bounded():
    async def go():
        conn, t = connected()
        big = b"x" * COALESCE_BYTES
        conn.write(big)                            # nothing queued: straight through
        assert t.sends == [big]
        piece = b"y" * (COALESCE_BYTES // 4)
        for _ in range(4):
            conn.write(piece)                      # the fourth reaches the bound: sent now
        assert t.sends == [big, piece * 4]
        conn.write(b"z")
        conn.write(big)                            # queued bytes keep their order
        assert t.sends[2] == b"z" + big
        conn.close()
    asyncio.run(go())


def test_close_sends_what_is_queued_and_abort_drops_it():
    async def go():
        conn, t = connected()
        conn.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        conn.close()
        assert t.sends == [b"HTTP/1.1 408 Request Timeout\r\n\r\n"] and t.closed
        await asyncio.sleep(0)
        assert len(t.sends) == 1                   # the scheduled flush found nothing

        conn, t = connected()
        conn.write(b"half a response")
        conn.abort()
        await asyncio.sleep(0)
        assert t.sends == [] and t.aborted
        conn.write(b"after")                       # a closed connection takes nothing
        await asyncio.sleep(0)
        assert t.sends == []
    asyncio.run(go())


def test_connection_lost_drops_the_queue():
    async def go():
        conn, t = connected()
        conn.write(b"never sent")
        conn.connection_lost(None)
        await asyncio.sleep(0)
        assert t.sends == []
    asyncio.run(go())


class _HandsBack:
    """An app answering from callbacks that hands the rest of each exchange back as a
    coroutine (as the proxy does when it must wait for an upstream)."""

    def __init__(self):
        self.works = []

    async def __call__(self, ex):
        pass

    def start(self, ex, handed_back):
        async def rest():
            await ex.respond(200, b"ok")
        work = rest()
        self.works.append(work)
        return work


def test_work_handed_to_a_task_cancelled_before_it_ran_is_closed():
    """The connection is lost in the same turn of the loop as the request arrived: the Task
    that was to run the handed-back coroutine is cancelled before its first step and never
    awaits it; the coroutine is closed (before: left to warn 'never awaited' when collected)."""
    import inspect

    async def go():
        app = _HandsBack()
        conn = ServerConnection(app, Limits())
        conn.connection_made(RecordingTransport())
        conn.data_received(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        assert len(app.works) == 1
        conn.connection_lost(None)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert inspect.getcoroutinestate(app.works[0]) == inspect.CORO_CLOSED
    asyncio.run(go())
