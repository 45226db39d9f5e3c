"""gRPC through the gateway: a real grpcio client and server, HTTP/2 both sides, with trailers,
status codes, deadlines and streaming; over clear text and over TLS (ALPN h2) with two workers."""
from __future__ import annotations

import http.client
import os
import ssl
import time
from concurrent import futures

import grpc
import pytest

from gfs.auth.tls import make_local_ca
from tests.integration.gateway_procs import GatewayProc


def _echo(request, context):
    context.set_trailing_metadata((("x-served-by", "echo"),))
    meta = dict(context.invocation_metadata())
    return b"echo:" + request + b":" + meta.get("x-gfs-user", "-").encode()


def _slow(request, context):
    time.sleep(1.5)
    return b"late"


def _fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


def _upper(requests, context):
    for message in requests:
        yield message.upper()


def _count(request, context):
    for i in range(int(request)):
        yield str(i).encode()


def _total(requests, context):
    return str(sum(len(m) for m in requests)).encode()


@pytest.fixture(scope="module")
def grpc_upstream():
    handler = grpc.method_handlers_generic_handler("test.Echo", {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "Slow": grpc.unary_unary_rpc_method_handler(_slow),
        "Fail": grpc.unary_unary_rpc_method_handler(_fail),
        "Upper": grpc.stream_stream_rpc_method_handler(_upper),
        "Count": grpc.unary_stream_rpc_method_handler(_count),
        "Total": grpc.stream_unary_rpc_method_handler(_total),
    })
    server = grpc.server(futures.ThreadPoolExecutor(8),
                         options=[("grpc.max_receive_message_length", 16 << 20)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"h2c://127.0.0.1:{port}"
    server.stop(0)


def _calls(channel: grpc.Channel) -> None:
    echo = channel.unary_unary("/test.Echo/Echo")
    reply, call = echo.with_call(b"hi", timeout=10, metadata=(("x-gfs-user", "forged"),))
    assert reply == b"echo:hi:-"                           # the identity header never passes
    assert ("x-served-by", "echo") in tuple(call.trailing_metadata())
    big = os.urandom(4 << 20)
    assert echo(big, timeout=20).startswith(b"echo:" + big[:100])
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary("/test.Echo/Fail")(b"x", timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "no such thing"
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary("/test.Echo/Slow")(b"x", timeout=0.3)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert list(channel.stream_stream("/test.Echo/Upper")(iter([b"a", b"b", b"c"]), timeout=10)) \
        == [b"A", b"B", b"C"]
    assert len(list(channel.unary_stream("/test.Echo/Count")(b"2000", timeout=20))) == 2000
    parts = (os.urandom(100_000) for _ in range(40))
    assert channel.stream_unary("/test.Echo/Total")(parts, timeout=20) == b"4000000"
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary("/other.Service/Call")(b"x", timeout=10)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED       # no route


def test_grpc_through_the_gateway(tmp_path, grpc_upstream):
    routes = [{"name": "grpc", "path": "/test.Echo/*", "to": [grpc_upstream]}]
    with GatewayProc(tmp_path / "gw", routes) as gw:
        options = [("grpc.max_send_message_length", 16 << 20),
                   ("grpc.max_receive_message_length", 16 << 20)]
        with grpc.insecure_channel(f"127.0.0.1:{gw.port}", options=options) as channel:
            _calls(channel)
        assert 'gfs_gateway_requests_total{route="grpc",status="200"}' in gw.metrics()


def test_grpc_and_https_over_tls_with_two_workers(tmp_path, grpc_upstream):
    tls = make_local_ca(tmp_path / "tls", ["127.0.0.1"])
    routes = [{"name": "grpc", "path": "/test.Echo/*", "to": [grpc_upstream]},
              {"name": "status", "path": "/-/metrics", "to": ["builtin:metrics"]}]
    with GatewayProc(tmp_path / "gw", routes, workers=2, tls=(tls.cert, tls.key)) as gw:
        assert gw.status(0)["pid"] != gw.status(1)["pid"]
        creds = grpc.ssl_channel_credentials(open(tls.ca, "rb").read())
        options = [("grpc.max_send_message_length", 16 << 20),
                   ("grpc.max_receive_message_length", 16 << 20),
                   ("grpc.ssl_target_name_override", "localhost")]
        with grpc.secure_channel(f"localhost:{gw.port}", creds, options=options) as channel:
            _calls(channel)
        ctx = ssl.create_default_context(cafile=tls.ca)
        conn = http.client.HTTPSConnection("localhost", gw.port, context=ctx, timeout=10)
        conn.request("GET", "/-/metrics")
        resp = conn.getresponse()
        assert resp.status == 200 and b"gfs_gateway_requests_total" in resp.read()
        assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
