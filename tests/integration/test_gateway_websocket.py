"""WebSockets through the gateway (`gfs gateway` process) to a real WebSocket server (the
`websockets` library) behind it: a real WebSocket client over HTTP/1.1 Upgrade, and an HTTP/2
client opening the WebSocket with RFC 8441's extended CONNECT (the gateway speaks the HTTP/1.1
handshake to the upstream for it)."""
from __future__ import annotations

import os
import socket
import struct
import threading

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
import websockets.sync.client
import websockets.sync.server

from gateway import websocket
from tests.integration.gateway_procs import GatewayProc, spawn_upstream, stop


@pytest.fixture(scope="module")
def ws_upstream():
    def echo(conn) -> None:
        for message in conn:
            conn.send(message)
    server = websockets.sync.server.serve(echo, "127.0.0.1", 0, max_size=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.socket.getsockname()[1]}"
    server.shutdown()
    thread.join(timeout=10)


def routes(upstream: str) -> list[dict]:
    return [{"name": "chat", "path": "/chat", "to": [upstream]}]


def test_the_accept_value_is_rfc_6455s():
    assert websocket.accept_for("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert websocket.accepted("dGhlIHNhbXBsZSBub25jZQ==",
                              [("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")])
    assert not websocket.accepted(websocket.new_key(),
                                  [("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")])


def test_a_websocket_over_http1_upgrade(tmp_path, ws_upstream):
    with GatewayProc(tmp_path / "gw", routes(ws_upstream)) as gw:
        with websockets.sync.client.connect(f"ws://127.0.0.1:{gw.port}/chat",
                                            max_size=None, open_timeout=10) as ws:
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"
            blob = os.urandom(1 << 20)
            ws.send(blob)
            assert ws.recv(timeout=30) == blob


# --- a minimal WebSocket framing for the HTTP/2 client (RFC 6455 5.2) ---

def client_frame(opcode: int, payload: bytes) -> bytes:
    """A final, masked frame (clients must mask)."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def server_frame(buf: bytearray) -> tuple[int, bytes] | None:
    """The first whole (unmasked) frame in `buf`, removed from it; None when incomplete."""
    if len(buf) < 2:
        return None
    opcode, n, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
    assert not buf[1] & 0x80, "a server frame must not be masked"
    if n == 126:
        if len(buf) < 4:
            return None
        n, at = struct.unpack("!H", buf[2:4])[0], 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, at = struct.unpack("!Q", buf[2:10])[0], 10
    if len(buf) < at + n:
        return None
    payload = bytes(buf[at:at + n])
    del buf[:at + n]
    return opcode, payload


class H2WebSocket:
    """An HTTP/2 connection to the gateway with one extended-CONNECT WebSocket stream."""

    def __init__(self, port: int, path: str, protocol: str = "websocket"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                       header_encoding="utf-8"))
        self.h2.initiate_connection()
        self.sock.sendall(self.h2.data_to_send())
        self.port = port
        self.path = path
        self.protocol = protocol
        self.sid = 1
        self.status: int | None = None
        self.response_headers: dict[str, str] = {}
        self.incoming = bytearray()
        self.ended = False

    def _pump(self) -> None:
        data = self.sock.recv(1 << 20)
        assert data, "the gateway closed the connection"
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                self.response_headers = dict(event.headers)
                self.status = int(self.response_headers[":status"])
            elif isinstance(event, h2.events.DataReceived):
                self.incoming += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                self.ended = True
        out = self.h2.data_to_send()
        if out:
            self.sock.sendall(out)

    def open(self) -> None:
        while self.h2.remote_settings.enable_connect_protocol != 1:
            self._pump()                      # the server's SETTINGS must allow it (RFC 8441 3)
        self.h2.send_headers(self.sid, [(":method", "CONNECT"), (":protocol", self.protocol),
                                        (":scheme", "http"), (":path", self.path),
                                        (":authority", f"127.0.0.1:{self.port}"),
                                        ("sec-websocket-version", "13")])
        self.sock.sendall(self.h2.data_to_send())
        while self.status is None and not self.ended:
            self._pump()

    def send(self, opcode: int, payload: bytes) -> None:
        self.send_raw(client_frame(opcode, payload))

    def send_raw(self, payload: bytes) -> None:
        data = memoryview(payload)
        while data:
            window = min(self.h2.local_flow_control_window(self.sid),
                         self.h2.max_outbound_frame_size)
            if window <= 0:
                self._pump()
                continue
            self.h2.send_data(self.sid, bytes(data[:window]))
            self.sock.sendall(self.h2.data_to_send())
            data = data[window:]

    def recv(self) -> tuple[int, bytes]:
        while (frame := server_frame(self.incoming)) is None:
            assert not self.ended, "the stream ended"
            self._pump()
        return frame


def test_a_websocket_over_http2_extended_connect(tmp_path, ws_upstream):
    with GatewayProc(tmp_path / "gw", routes(ws_upstream)) as gw:
        ws = H2WebSocket(gw.port, "/chat")
        ws.open()
        assert ws.status == 200, ws.response_headers           # 2xx, not 101 (RFC 8441 5)
        assert "sec-websocket-accept" not in ws.response_headers
        ws.send(0x1, b"hello over h2")
        assert ws.recv() == (0x1, b"hello over h2")
        blob = os.urandom(1 << 20)                 # past every flow-control window
        ws.send(0x2, blob)
        assert ws.recv() == (0x2, blob)
        ws.send(0x8, struct.pack("!H", 1000))      # close: the server answers with its close
        opcode, payload = ws.recv()
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1000
        ws.sock.close()


def test_an_upstream_that_does_not_switch_is_a_502_not_an_open_tunnel(tmp_path):
    """A plain HTTP upstream answers the WebSocket GET with 200 and a page: an HTTP/2 client
    would read a 200 as its tunnel being open, so the gateway answers 502; an upstream that is
    not there is a 502 too."""
    proc, port = spawn_upstream("plain")
    try:
        with GatewayProc(tmp_path / "gw", [
                {"name": "plain", "path": "/chat", "to": [f"http://127.0.0.1:{port}"]},
                {"name": "none", "path": "/none", "to": ["http://127.0.0.1:9"]}]) as gw:
            for path in ("/chat", "/none"):
                ws = H2WebSocket(gw.port, path)
                ws.open()
                assert ws.status == 502, (path, ws.response_headers)
                ws.sock.close()
    finally:
        stop(proc)


def test_extended_connect_tunnels_other_protocols_too(tmp_path):
    """`:protocol echo` to an upstream that switches to it: the stream carries its bytes."""
    proc, port = spawn_upstream("echo")
    try:
        with GatewayProc(tmp_path / "gw", [{"name": "echo", "path": "/t",
                                            "to": [f"http://127.0.0.1:{port}"]}]) as gw:
            ws = H2WebSocket(gw.port, "/t", protocol="echo")
            ws.open()
            assert ws.status == 200
            payload = os.urandom(300_000)
            ws.send_raw(payload)
            while len(ws.incoming) < len(payload):
                ws._pump()
            assert bytes(ws.incoming) == payload
            ws.sock.close()
    finally:
        stop(proc)
