"""gateway/http over real loopback sockets: HTTP/1.1 framing, limits, timeouts, backpressure,
HTTP/2 (prior knowledge and h2c Upgrade), and bad input that closes one connection only."""
from __future__ import annotations

import asyncio
import base64
import socket
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gateway.http.limits import Limits
from tests.unit.gateway_server import ServerThread, closed_by_peer, read_response

LIMITS = Limits(max_header_bytes=4096, max_body_bytes=100_000, body_buffer_bytes=16_384,
                write_buffer_bytes=16_384, header_timeout_s=0.5, idle_timeout_s=2.0,
                keepalive_timeout_s=0.6)


class App:
    """Echoes the request; /big writes 64 MiB; /noread answers without reading the body."""

    def __init__(self):
        self.written = 0
        self.max_buffered = 0

    async def __call__(self, ex):
        if ex.upgrade == "shout":                # a tunnel that answers in capitals
            await ex.start_response(101, [("connection", "upgrade"), ("upgrade", "shout")])
            while True:
                data = await ex.read_tunnel()
                if not data:
                    break
                await ex.write(data.upper())
            return
        if ex.head.path == "/big":
            await ex.start_response(200, [("content-type", "application/octet-stream")])
            chunk = b"x" * 65536
            for _ in range(1024):
                await ex.write(chunk)
                self.written += len(chunk)
            await ex.end()
            return
        if ex.head.path == "/noread":
            await asyncio.sleep(0.5)
            self.max_buffered = ex.body.buffered
            await ex.respond(200, b"ignored\n")
            return
        body = b""
        while True:
            data = await ex.read()
            if not data:
                break
            body += data
        await ex.respond(200, f"{ex.head.method} {ex.head.target} {ex.head.http_version} "
                              f"{ex.head.authority} {len(body)}".encode(),
                         [("x-trailer-test", "1")])


@pytest.fixture
def server():
    app = App()
    srv = ServerThread(app, LIMITS)
    srv.app = app
    yield srv
    srv.stop()


def get(sock, path="/", extra=b""):
    sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: Example.com:8080\r\n" + extra +
                 b"\r\n")
    return read_response(sock)


def test_keep_alive_and_pipelining(server):
    s = server.connect()
    assert get(s, "/a?x=1")[2] == b"GET /a?x=1 1.1 example.com 0"
    assert get(s, "/b")[2] == b"GET /b 1.1 example.com 0"
    s.sendall(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert read_response(s)[2].startswith(b"GET /1 ")
    assert read_response(s)[2].startswith(b"GET /2 ")


def test_bodies_content_length_chunked_and_expect_continue(server):
    s = server.connect()
    s.sendall(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
    assert read_response(s)[2].endswith(b" 5")
    s.sendall(b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
    assert read_response(s)[2].endswith(b" 7")
    s.sendall(b"PUT /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    s.sendall(b"abc")
    assert read_response(s)[2].endswith(b" 3")


def test_expect_continue_without_a_body_still_gets_its_100_first(server):
    """botocore (the AWS CLI) sends Expect: 100-continue with empty bodies and misread the
    connection's next response when the final answer came without a 100 first."""
    s = server.connect()
    for _ in range(2):                                   # and the connection stays usable
        s.sendall(b"PUT /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        status, headers, body = read_response(s)
        assert status == 100 and body == b""
        status, headers, body = read_response(s)
        assert status == 200 and body.endswith(b" 0") and "connection" not in headers
    s.sendall(b"PUT /p HTTP/1.0\r\nHost: h\r\nContent-Length: 0\r\n"
              b"Expect: 100-continue\r\n\r\n")
    assert read_response(s)[0] == 200                    # no 1xx for an HTTP/1.0 client


@pytest.mark.parametrize("request_bytes,status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),                                    # no Host
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 5000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X%d: 1\r\n" % i for i in range(150))
     + b"\r\n", 431),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100001\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 12x\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
     b"Content-Length: 3\r\n\r\nabc", 400),
])
def test_bad_requests_get_their_4xx_and_the_server_goes_on(server, request_bytes, status):
    s = server.connect()
    s.sendall(request_bytes)
    assert read_response(s)[0] == status
    assert closed_by_peer(s)
    assert get(server.connect())[0] == 200


@pytest.mark.parametrize("unfinished,status", [
    (b"GARBAGE HERE\r\nHost: h\r\n", 400),                           # no request line
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 5000, 431),           # past the limit
])
def test_an_unfinished_head_is_refused_at_once_when_it_cannot_be_a_request(
        server, unfinished, status):
    """A first head is kept as bytes until it is whole (no parser for a slowloris), but what
    can be refused already is refused then, not at the header timeout (a 408)."""
    s = server.connect()
    s.sendall(unfinished)
    start = time.monotonic()
    assert read_response(s)[0] == status
    assert time.monotonic() - start < LIMITS.header_timeout_s
    assert closed_by_peer(s)


def test_a_header_field_without_end_is_refused_past_the_limit(server):
    """On a kept-alive connection (the parser has the head, not the connection): httptools
    keeps an unfinished field's bytes, so the engine counts the reads that are all head."""
    s = server.connect()
    assert get(s)[0] == 200
    s.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nX: ")
    time.sleep(0.05)
    try:
        for _ in range(5):
            s.sendall(b"a" * 2000)
            time.sleep(0.02)
    except OSError:
        pass
    start = time.monotonic()
    assert read_response(s)[0] == 431
    assert time.monotonic() - start < LIMITS.header_timeout_s
    assert closed_by_peer(s)


def test_a_trailer_field_without_end_is_refused_past_the_limit(server):
    """After a chunked body's last chunk, httptools keeps an unfinished trailer field's bytes
    as it does a header's: the connection is dropped past the header limit, while every read
    would otherwise keep it from the idle timeout."""
    s = server.connect()
    s.sendall(b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"5\r\nhello\r\n0\r\nX-Trailer: ")
    time.sleep(0.05)
    start = time.monotonic()
    try:
        for _ in range(10):
            s.sendall(b"a" * 1000)
            time.sleep(0.02)
    except OSError:
        pass                                     # refused already
    assert closed_by_peer(s, 5)
    assert time.monotonic() - start < LIMITS.idle_timeout_s
    chunked = server.connect()                   # a real trailer still goes through
    chunked.sendall(b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n")
    status, _, body = read_response(chunked)
    assert status == 200 and body.endswith(b" 5")


def test_a_head_sent_a_byte_at_a_time_is_answered(server):
    s = server.connect()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for byte in b"GET /dribbled HTTP/1.1\r\nHost: h\r\n\r\n":
        s.sendall(bytes([byte]))
        time.sleep(0.001)
    status, _, body = read_response(s)
    assert status == 200 and b"/dribbled" in body


def test_upgrade_makes_a_tunnel(server):
    s = server.connect()
    s.sendall(b"GET /t HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: shout\r\n\r\nearly")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101 ")
    got = b""
    while len(got) < 5:
        got += s.recv(100)
    assert got == b"EARLY"                   # bytes sent with the request go through too
    s.sendall(b"more")
    assert s.recv(100) == b"MORE"
    s.shutdown(socket.SHUT_WR)
    assert closed_by_peer(s)
    s = server.connect()                       # a plain request upgrading to nothing known
    s.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: other\r\n\r\n")
    status, headers, _ = read_response(s)
    assert status == 200 and headers["connection"] == "close"


def test_chunked_body_past_the_limit_is_413(server):
    s = server.connect()
    s.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    try:
        for _ in range(20):
            s.sendall(b"2710\r\n" + b"z" * 10000 + b"\r\n")
    except OSError:
        pass
    assert read_response(s)[0] == 413
    assert closed_by_peer(s)


def test_slowloris_gets_408_and_idle_keepalive_is_closed(server):
    s = server.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n")
    start = time.monotonic()
    for _ in range(3):
        time.sleep(0.2)
        try:
            s.sendall(b"X-Slow: 1\r\n")          # a byte now and then must not keep it open
        except OSError:
            break
    assert read_response(s)[0] == 408
    assert time.monotonic() - start < 2.0
    quiet = server.connect()
    start = time.monotonic()
    assert closed_by_peer(quiet, 5) and time.monotonic() - start < 2.0   # never sent a byte
    kept = server.connect()
    assert get(kept)[0] == 200
    start = time.monotonic()
    assert closed_by_peer(kept, 5) and time.monotonic() - start < 2.0    # keep-alive timeout


def test_slow_reader_pauses_the_writer(server):
    s = server.connect()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.sendall(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
    time.sleep(0.8)
    first = server.app.written
    time.sleep(0.5)
    # the writer waits for the client instead of buffering 64 MiB
    assert server.app.written == first
    assert first < 8 * 1024 * 1024
    got = 0
    s.settimeout(10)
    while got < 64 * 1024 * 1024:
        data = s.recv(1 << 20)
        if not data:
            break
        got += len(data)
    assert got >= 64 * 1024 * 1024


def test_unread_body_is_bounded_and_connection_closed(server):
    s = server.connect()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    s.sendall(b"POST /noread HTTP/1.1\r\nHost: h\r\nContent-Length: 90000\r\n\r\n")
    s.setblocking(False)
    sent = 0
    deadline = time.monotonic() + 0.4
    while time.monotonic() < deadline and sent < 90000:
        try:
            sent += s.send(b"q" * 4096)
        except BlockingIOError:
            time.sleep(0.01)
    s.setblocking(True)
    s.settimeout(5)
    status, headers, _ = read_response(s)
    assert status == 200 and headers.get("connection") == "close"
    assert server.app.max_buffered <= LIMITS.body_buffer_bytes + 65536


def h2_client():
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding="utf-8"))
    conn.initiate_connection()
    return conn


def h2_exchange(sock, conn, sid):
    """Run until stream `sid` ends; return (headers, body). Other streams' events are kept."""
    done = _H2_DONE.setdefault(id(conn), {})
    sock.sendall(conn.data_to_send())
    while sid not in done or not done[sid][2]:
        raw = sock.recv(65536)
        if not raw:
            raise ConnectionError("closed")
        for ev in conn.receive_data(raw):
            sid_ev = getattr(ev, "stream_id", None)
            entry = done.setdefault(sid_ev, [{}, b"", False]) if sid_ev else None
            if isinstance(ev, h2.events.ResponseReceived):
                entry[0] = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                entry[1] += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, sid_ev)
            elif isinstance(ev, h2.events.StreamEnded):
                entry[2] = True
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
    return done[sid][0], done[sid][1]


_H2_DONE: dict[int, dict] = {}


def test_h2_prior_knowledge_many_streams(server):
    s = server.connect()
    conn = h2_client()
    for sid in (1, 3, 5):
        conn.send_headers(sid, [(":method", "POST"), (":path", f"/s{sid}"), (":scheme", "http"),
                                (":authority", "h2.example")])
        conn.send_data(sid, b"x" * sid, end_stream=True)
    for sid in (1, 3, 5):
        headers, body = h2_exchange(s, conn, sid)
        assert headers[":status"] == "200"
        assert body == f"POST /s{sid} 2 h2.example {sid}".encode()


def test_h2c_upgrade(server):
    s = server.connect()
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding="utf-8"))
    settings_header = conn.initiate_upgrade_connection()
    s.sendall(b"GET /up HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
              b"Upgrade: h2c\r\nHTTP2-Settings: " + settings_header + b"\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    headers, body = h2_exchange(s, conn, 1)
    assert headers[":status"] == "200" and body == b"GET /up 2 h 0"


def test_h2_garbage_gets_goaway_and_server_goes_on(server):
    s = server.connect()
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x04\x00\x00\x00\x00\x00\x00zzzz")  # DATA on stream 0
    got = b""
    s.settimeout(5)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                break
            got += data
    except (ConnectionResetError, socket.timeout):
        pass
    assert b"\x07" in got[:200]                          # a GOAWAY frame (type 7) came back
    headers, body = h2_exchange_new(server)
    assert headers[":status"] == "200"


def h2_exchange_new(server):
    s = server.connect()
    conn = h2_client()
    conn.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "http"),
                          (":authority", "h")], end_stream=True)
    return h2_exchange(s, conn, 1)


def test_h2_rapid_reset_leaves_no_streams_behind(server):
    """Streams reset as fast as they are opened (CVE-2023-44487's pattern): each is let go at
    once, even when its Task had not run yet — the engine keeps none of them."""
    s = server.connect()
    conn = h2_client()
    for sid in range(1, 400, 2):
        conn.send_headers(sid, [(":method", "POST"), (":path", "/noread"), (":scheme", "http"),
                                (":authority", "h")])
        conn.reset_stream(sid)
    s.sendall(conn.data_to_send())
    conn.send_headers(401, [(":method", "GET"), (":path", "/after"), (":scheme", "http"),
                            (":authority", "h")], end_stream=True)
    headers, body = h2_exchange(s, conn, 401)            # the connection goes on
    assert headers[":status"] == "200" and body == b"GET /after 2 h 0"

    def open_streams():
        return [len(c.engine.streams) + len(c.engine.tasks)
                for c in server.server.connections if c.engine is not None]
    for _ in range(50):
        if open_streams() == [0]:
            break
        time.sleep(0.02)
    assert open_streams() == [0]


def test_h2_a_flood_of_resets_is_told_to_calm_down_and_disconnected(server):
    """More streams reset while being served than a client has any use for (200 per 2 s: twice
    the streams it may have open): GOAWAY ENHANCE_YOUR_CALM, and the connection closes."""
    s = server.connect()
    conn = h2_client()
    for sid in range(1, 2001, 2):                        # 1,000 streams opened and reset
        conn.send_headers(sid, [(":method", "POST"), (":path", "/noread"), (":scheme", "http"),
                                (":authority", "h")])
        conn.reset_stream(sid)
    s.sendall(conn.data_to_send())
    codes = []
    while True:
        try:
            raw = s.recv(65536)
        except ConnectionResetError:
            break
        if not raw:
            break
        try:
            events = conn.receive_data(raw)
        except h2.exceptions.ProtocolError:
            break
        codes += [e.error_code for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert codes == [h2.errors.ErrorCodes.ENHANCE_YOUR_CALM]
    headers, _ = h2_exchange_new(server)                 # everyone else is served
    assert headers[":status"] == "200"


def test_h2_header_list_too_large(server):
    s = server.connect()
    conn = h2_client()
    conn.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "http"),
                          (":authority", "h"), ("x-big", "v" * 5000)], end_stream=True)
    headers, _ = h2_exchange(s, conn, 1)
    assert headers[":status"] == "431"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.sampled_from([b"", b"GET / HTTP/1.1\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                               b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"]),
       junk=st.binary(max_size=300))
def test_fuzzed_bytes_never_stop_the_server(server, prefix, junk):
    s = server.connect(timeout=3)
    try:
        s.sendall(prefix + junk)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(3)
        while s.recv(65536):
            pass
    except OSError:
        pass
    finally:
        s.close()
    assert get(server.connect())[0] == 200
