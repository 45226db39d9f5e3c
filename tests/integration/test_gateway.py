"""The gateway end to end: `gfs gateway` processes in front of real upstream processes (HTTP/1.1)
and a real grpcio server (HTTP/2 with trailers), driven by real clients."""
from __future__ import annotations

import concurrent.futures
import hashlib
import http.client
import json
import os
import signal
import socket
import time

import pytest

from tests.integration.gateway_procs import GatewayProc, spawn_upstream, stop
from tests.integration.polling import wait_for


@pytest.fixture(scope="module")
def upstreams():
    procs = [spawn_upstream("a"), spawn_upstream("b")]
    yield [f"http://127.0.0.1:{port}" for _, port in procs]
    for proc, _ in procs:
        stop(proc)


def request(port, method, path, body=None, headers=None, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    if own:
        conn.close()
    return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), data


def test_routing_filters_and_forwarded_headers(tmp_path, upstreams):
    routes = [
        {"name": "api", "host": "api.example.com", "path": "/v1/*", "to": [upstreams[0]],
         "strip_prefix": True},
        {"name": "users", "path": "/users/{id}", "to": [upstreams[1]]},
        {"name": "closed", "path": "/closed/*", "to": [upstreams[1]], "deny": ["127.0.0.0/8"]},
    ]
    with GatewayProc(tmp_path / "gw", routes) as gw:
        status, _, body = request(gw.port, "GET", "/v1/echo?q=1",
                                  headers={"Host": "api.example.com",
                                           "X-Forwarded-For": "6.6.6.6",
                                           "X-Gfs-User": "root", "Connection": "keep-alive"})
        assert status == 200
        seen = json.loads(body)
        hdrs = dict(seen["headers"])
        assert seen["name"] == "a" and seen["path"] == "/echo?q=1"      # prefix stripped
        assert hdrs["x-forwarded-for"] == "127.0.0.1"     # the client's own XFF is not trusted
        assert "x-gfs-user" not in hdrs                   # never passed from a client
        assert hdrs["host"] == "api.example.com"
        assert hdrs["traceparent"].startswith("00-")       # added
        trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        seen = json.loads(request(gw.port, "GET", "/users/42", headers={"traceparent": trace})[2])
        assert seen["name"] == "b" and dict(seen["headers"])["traceparent"] == trace
        assert request(gw.port, "GET", "/users/42/x")[0] == 404
        assert request(gw.port, "GET", "/v1/echo")[0] == 404          # other host: no route
        assert request(gw.port, "GET", "/closed/x")[0] == 403
        # normalized before routing: an encoded detour still meets the route's deny list
        assert request(gw.port, "GET", "/users/%2e%2e/closed/x")[0] == 403
        metrics = gw.metrics()
        assert 'gfs_gateway_requests_total{route="api",status="200"} 1.0' in metrics
        assert 'gfs_gateway_requests_total{route="closed",status="403"} 2.0' in metrics
        log = wait_for(lambda: (lambda lines: lines if len(lines) >= 6 else None)(
            gw.access_lines()), 5, "the access log's batch", 0.05)
        assert log[0]["route"] == "api" and log[0]["upstream"] == upstreams[0]
        assert log[0]["status"] == 200 and log[0]["client"] == "127.0.0.1"


def test_trusted_proxy_xff_and_global_filter(tmp_path, upstreams):
    routes = [{"name": "all", "path": "/*", "to": [upstreams[0]]}]
    with GatewayProc(tmp_path / "gw", routes, "--trusted-proxies", "127.0.0.0/8",
                     "--deny", "10.9.0.0/16") as gw:
        seen = json.loads(request(gw.port, "GET", "/echo",
                                  headers={"X-Forwarded-For": "203.0.113.9"})[2])
        assert dict(seen["headers"])["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
        assert request(gw.port, "GET", "/echo", headers={"X-Forwarded-For": "10.9.1.1"})[0] == 403
        # a body whose end is the upstream closing: complete, and chunked on to the client
        status, headers, body = request(gw.port, "GET", "/nolength/70000")
        assert status == 200 and body == b"n" * 70000
        # the log lines are written in batches (every 0.5 s)
        wait_for(lambda: len(gw.access_lines()) == 3, 5, "the access log lines", 0.05)
        assert gw.access_lines()[1]["client"] == "10.9.1.1"


def test_streaming_bodies_both_ways_stay_out_of_memory(tmp_path, upstreams):
    routes = [{"name": "all", "path": "/*", "to": [upstreams[0]]}]
    with GatewayProc(tmp_path / "gw", routes) as gw:
        request(gw.port, "GET", "/echo")
        warm = gw.rss_kib()
        size = 128 * 1024 * 1024
        piece = os.urandom(1 << 20)

        def body():
            for _ in range(size // len(piece)):
                yield piece
        digest = hashlib.sha256()
        for _ in range(size // len(piece)):
            digest.update(piece)
        status, _, data = request(gw.port, "POST", "/upload", body=body())   # sent chunked
        assert status == 200
        assert json.loads(data) == {"name": "a", "length": size, "sha256": digest.hexdigest(),
                                    "path": "/upload"}
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
        conn.request("GET", f"/bytes/{size}")
        resp = conn.getresponse()
        got = 0
        while True:
            chunk = resp.read(1 << 20)
            if not chunk:
                break
            got += len(chunk)
        assert got == size
        grown = gw.rss_kib() - warm
        assert grown < 64 * 1024, f"gateway RSS grew {grown} KiB moving 2 x 128 MiB"


def test_retries_ejection_and_the_pending_bound(tmp_path, upstreams):
    dead = "http://127.0.0.1:%d" % _dead_port()
    routes = [{"name": "two", "path": "/*", "to": [dead, upstreams[0]], "retries": 1},
              {"name": "onlydead", "path": "/dead/*", "to": [dead], "retries": 0},
              {"name": "slow", "path": "/slow/*", "to": [upstreams[1]], "retries": 0}]
    with GatewayProc(tmp_path / "gw", routes, "--max-connections", "1",
                     "--max-pending", "1") as gw:
        for _ in range(8):     # round-robin sends half to the dead one: each is tried again
            assert request(gw.port, "GET", "/echo")[0] == 200
        assert request(gw.port, "POST", "/dead/x", body=b"x")[0] == 502
        metrics = gw.metrics()
        assert "gfs_gateway_upstream_ejections_total{upstream=\"%s\"}" % dead in metrics
        # one connection per upstream and one waiter: the rest is refused at once with 503
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            codes = sorted(pool.map(lambda _: request(gw.port, "GET", "/slow/1.5")[0], range(6)))
        assert codes.count(200) >= 2 and 503 in codes, codes


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]                # nothing listens there once closed


def test_route_changes_apply_within_a_second_without_dropping_connections(tmp_path, upstreams):
    with GatewayProc(tmp_path / "gw", [{"name": "a", "path": "/*", "to": [upstreams[0]]}]) as gw:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        assert json.loads(request(gw.port, "GET", "/echo", conn=conn)[2])["name"] == "a"
        gw.write_routes([{"name": "b", "path": "/*", "to": [upstreams[1]]}])
        start = time.monotonic()
        wait_for(lambda: json.loads(request(gw.port, "GET", "/echo", conn=conn)[2])["name"] == "b",
                 5, "the new route", 0.05)
        assert time.monotonic() - start < 1.0
        gw.write_routes([{"name": "x", "path": "/*", "to": ["ftp://nope"]}])   # invalid: kept
        time.sleep(0.6)
        assert json.loads(request(gw.port, "GET", "/echo", conn=conn)[2])["name"] == "b"
        assert "gateway.sources ERROR" in open(gw.log.name).read()


def test_starts_from_saved_routes_when_the_source_is_gone(tmp_path, upstreams):
    work = tmp_path / "gw"
    with GatewayProc(work, [{"name": "a", "path": "/*", "to": [upstreams[0]]}]) as gw:
        assert request(gw.port, "GET", "/echo")[0] == 200
    os.remove(work / "routes.json")
    time.sleep(1.1)
    with GatewayProc(work, None) as gw:
        assert json.loads(request(gw.port, "GET", "/echo")[2])["name"] == "a"
        status = gw.status()
        assert status["routes"] == 1 and status["staleness_s"] >= 1.0
        assert "gfs_gateway_config_staleness_seconds" in gw.metrics()


def test_upgrade_tunnels_through(tmp_path, upstreams):
    routes = [{"name": "all", "path": "/*", "to": [upstreams[0]]}]
    with GatewayProc(tmp_path / "gw", routes) as gw:
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert head.startswith(b"HTTP/1.1 101 ") and b"upgrade: echo" in head.lower()
        payload = os.urandom(3 << 20)             # more than any buffer: backpressure both ways
        got = bytearray()
        s.setblocking(False)
        view = memoryview(payload)
        deadline = time.monotonic() + 60
        while len(got) < len(payload) and time.monotonic() < deadline:
            try:
                if view:
                    view = view[s.send(view[:65536]):]
            except BlockingIOError:
                pass
            try:
                got += s.recv(1 << 20)
            except BlockingIOError:
                time.sleep(0.001)
        assert bytes(got) == payload
        s.setblocking(True)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        assert s.recv(10) == b""                  # the upstream's close reaches the client


def test_active_health_checks_take_an_upstream_out_and_back(tmp_path, upstreams):
    down = tmp_path / "c-is-down"
    proc, port = spawn_upstream("c", str(down))
    try:
        routes = [{"name": "hc", "path": "/*", "to": [upstreams[0], f"http://127.0.0.1:{port}"],
                   "health_path": "/health", "retries": 0, "health_interval_s": 0.2,
                   "health_fall": 2, "health_rise": 1}]
        # The route's own check settings, not the gateway's (one check a minute), apply.
        with GatewayProc(tmp_path / "gw", routes, "--health-interval", "60s") as gw:
            names = lambda: {json.loads(request(gw.port, "GET", "/echo")[2])["name"]  # noqa
                             for _ in range(6)}
            assert names() == {"a", "c"}
            down.write_text("")                  # c's health check fails from now on
            wait_for(lambda: names() == {"a"}, 10, "c taken out", 0.1)
            assert all(request(gw.port, "GET", "/echo")[0] == 200 for _ in range(10))
            down.unlink()
            wait_for(lambda: names() == {"a", "c"}, 10, "c back", 0.1)
            assert "upstream http://127.0.0.1:%d is down" % port in open(gw.log.name).read()
    finally:
        stop(proc)


def test_a_killed_worker_is_started_again_and_the_port_keeps_serving(tmp_path, upstreams):
    routes = [{"name": "all", "path": "/*", "to": [upstreams[0]]}]
    with GatewayProc(tmp_path / "gw", routes, workers=2) as gw:
        before = gw.status(1)["pid"]
        os.kill(before, signal.SIGKILL)
        # (Connections already queued on the killed worker's socket are reset with it.)
        wait_for(lambda: not os.path.exists(f"/proc/{before}"), 10, "the parent to reap it", 0.02)
        for _ in range(20):                    # the other worker serves meanwhile
            assert request(gw.port, "GET", "/echo")[0] == 200
        wait_for(lambda: _worker_pid(gw, 1) not in (None, before), 20,
                 "worker 1 to be started again", 0.1)
        assert gw.status(0)["pid"] != before and gw.proc.poll() is None
        assert request(gw.port, "GET", "/echo")[0] == 200


def _worker_pid(gw, index: int) -> int | None:
    try:
        return gw.status(index)["pid"]
    except OSError:
        return None


def _metric(text: str, name: str) -> float:
    return next(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith(name + " "))


def test_slow_clients_are_dropped_and_their_memory_given_back(tmp_path, upstreams):
    """A burst of slowloris clients against `gfs gateway`: every one gets its 408 (or, silent,
    is closed), the worker (on the C allocator: gateway/memory.py) gives the freed memory back
    once they are gone, and it serves on. Its RSS is measured in bench/gateway_memory.py."""
    routes = [{"name": "all", "path": "/*", "to": [upstreams[0]]}]
    with GatewayProc(tmp_path / "gw", routes, "--header-timeout", "1s") as gw:
        with open(f"/proc/{gw.proc.pid}/environ", "rb") as f:
            assert b"PYTHONMALLOC=malloc" in f.read().split(b"\0")
        assert request(gw.port, "GET", "/echo")[0] == 200
        socks = []
        for i in range(300):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
            if i % 2 == 0:
                s.sendall(b"GET /echo HTTP/1.1\r\nHost: h\r\nX-Slow: 1\r\n")
            socks.append(s)
        got = []
        for s in socks:
            data = b""
            try:
                while chunk := s.recv(4096):
                    data += chunk
            except ConnectionResetError:           # a silent one may be reset, not closed
                pass
            got.append(data)
            s.close()
        assert all(d.startswith(b"HTTP/1.1 408") for d in got[::2])
        assert all(d == b"" for d in got[1::2])
        wait_for(lambda: gw.status()["connections"] == 0, 10, "the connections to be gone", 0.1)
        wait_for(lambda: _metric(gw.metrics(), "gfs_gateway_memory_trims_total") >= 1, 10,
                 "the worker to give the memory back", 0.2)
        assert request(gw.port, "GET", "/echo")[0] == 200
