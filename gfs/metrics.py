"""Prometheus /metrics for every daemon, plus the shared RPC instrumentation."""
from __future__ import annotations

import functools
import socketserver
import threading
import time
from contextlib import contextmanager
from socketserver import ThreadingMixIn
from typing import Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import Counter, Histogram, make_wsgi_app

from gfs.errors import FailedPrecondition

RPC_REQUESTS = Counter("gfs_rpc_requests_total", "RPCs served, by method and status code",
                       ["daemon", "method", "code"])
RPC_SECONDS = Histogram("gfs_rpc_seconds", "RPC latency in seconds", ["daemon", "method"],
                        buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5,
                                 1.0, 2.5, 5.0, 10.0))


class _MetricsServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # http.server looks up the host's fully qualified name here: a reverse DNS query that
        # hangs for seconds on a machine (or network namespace) without DNS. It is never used.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
        self.setup_environ()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve(address: str) -> tuple[str, int]:
    """Start the /metrics HTTP endpoint on HOST:PORT (port 0 picks one); return where it is."""
    host, _, port = address.rpartition(":")
    try:
        server = make_server(host or "127.0.0.1", int(port), make_wsgi_app(),
                             server_class=_MetricsServer, handler_class=_QuietHandler)
    except (OSError, ValueError) as err:
        raise FailedPrecondition(f"cannot serve /metrics on {address}: {err}") from None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server.server_address[0], server.server_address[1]


@functools.lru_cache(maxsize=4096)
def _rpc_seconds(daemon: str, method: str):
    """The latency histogram of one method (labels() takes a lock and builds its key on every
    call: a few µs per RPC, for a child that never changes)."""
    return RPC_SECONDS.labels(daemon, method)


@functools.lru_cache(maxsize=4096)
def _rpc_requests(daemon: str, method: str, code: str):
    return RPC_REQUESTS.labels(daemon, method, code)


@contextmanager
def observe_rpc(daemon: str, method: str) -> Iterator[dict]:
    """Count and time one RPC; the body sets outcome['code'] when it fails."""
    outcome = {"code": "OK"}
    start = time.perf_counter()
    try:
        yield outcome
    except Exception:
        if outcome["code"] == "OK":
            outcome["code"] = "INTERNAL"
        raise
    finally:
        _rpc_seconds(daemon, method).observe(time.perf_counter() - start)
        _rpc_requests(daemon, method, outcome["code"]).inc()
