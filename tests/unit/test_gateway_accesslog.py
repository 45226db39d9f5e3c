"""The gateway's access log (gateway/accesslog.py): lines batched per FLUSH_S or BUFFER_BYTES,
every line written, in order, as JSON."""
from __future__ import annotations

import asyncio
import io
import json

from gateway.accesslog import AccessLog


class Stream(io.StringIO):
    def __init__(self):
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def lines(stream: Stream) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_lines_go_out_together_after_the_interval():
    async def go():
        stream = Stream()
        log = AccessLog(stream, flush_s=0.05)
        for i in range(100):
            log.write(status=200, n=i)
        assert stream.writes == 0                # nothing yet: one write per interval
        await asyncio.sleep(0.1)
        assert stream.writes == 1
        assert [line["n"] for line in lines(stream)] == list(range(100))
        assert all(line["status"] == 200 and line["ts"] > 0 for line in lines(stream))
        log.write(status=404, n=100)             # a later line: a timer of its own
        await asyncio.sleep(0.1)
        assert stream.writes == 2 and lines(stream)[-1]["n"] == 100
    asyncio.run(go())


def test_a_full_buffer_is_written_at_once_and_flush_writes_the_rest():
    async def go():
        stream = Stream()
        log = AccessLog(stream, flush_s=60, buffer_bytes=1000)
        for i in range(40):
            log.write(path="/" + "x" * 40, n=i)
        assert stream.writes >= 1 and len(lines(stream)) < 40
        log.flush()                              # what the worker does when it stops
        assert [line["n"] for line in lines(stream)] == list(range(40))
        log.flush()
        assert len(lines(stream)) == 40          # nothing twice
    asyncio.run(go())


def test_outside_an_event_loop_and_on_a_closed_stream():
    stream = Stream()
    AccessLog(stream).write(n=1)                 # no loop: written at once
    assert lines(stream) == [{"n": 1, "ts": lines(stream)[0]["ts"]}]
    closed = Stream()
    closed.close()
    AccessLog(closed).write(n=2)                 # never raises into a request


def test_a_request_line_is_the_same_json_as_the_general_one():
    async def go():
        stream = Stream()
        log = AccessLog(stream, flush_s=60)
        args = ("203.0.113.9", "GET", "api.example.com", '/caf\u00e9/"q"\\x', "1.1", 200, "api",
                "http://10.0.0.5:8080", 0, 128, 0.12, "00-" + "a" * 32 + "-" + "b" * 16 + "-01")
        names = ("client", "method", "host", "path", "proto", "status", "route", "upstream",
                 "bytes_in", "bytes_out", "ms", "trace")
        log.request(*args)
        log.write(**dict(zip(names, args)))
        log.request(*args, error="upstream: refused\n")
        log.request(args[0], args[1], None, *args[3:])      # another type: the general way
        log.flush()
        text = stream.getvalue().splitlines()
        assert text[0].rsplit(',"ts"', 1)[0] == text[1].rsplit(',"ts"', 1)[0]
        first, _, failed, odd = [json.loads(line) for line in text]
        assert list(first) == [*names, "ts"] and first["path"] == args[3]
        assert "error" not in first and failed["error"] == "upstream: refused\n"
        assert odd["host"] is None and odd["status"] == 200
    asyncio.run(go())
