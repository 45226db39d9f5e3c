"""`gfs lb` end to end: a real balancer process in front of three real gateway replicas (PROXY
protocol v2 on), under load from real HTTP clients; one replica is killed with SIGKILL."""
from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from tests.integration.gateway_procs import GatewayProc, free_port, spawn_upstream, stop
from tests.integration.polling import wait_for

CLIENT_IP = "127.0.0.2"                 # the clients' source address: what the gateways must see
CLIENTS = 6


class Lb:
    def __init__(self, workdir, backends: list[str], *args: str):
        self.port, self.metrics_port = free_port(), free_port()
        self.log = open(os.path.join(workdir, "lb.log"), "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "lb", "--listen", f"127.0.0.1:{self.port}",
             "--to", ",".join(backends), "--metrics", f"127.0.0.1:{self.metrics_port}", *args],
            stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_for(self._up, 20, "the balancer to listen", 0.1)
        except BaseException:
            self.stop()                          # never leave it running
            raise

    def _up(self) -> bool:
        assert self.proc.poll() is None, open(self.log.name).read()[-2000:]
        try:
            socket.create_connection(("127.0.0.1", self.metrics_port), timeout=1).close()
            if "--udp" not in self.proc.args:    # (/metrics is served once it listens)
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def connections(self) -> dict[str, float]:
        """gfs_lb_connections_total per backend."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=5) as r:
            text = r.read().decode()
        return {m[1]: float(m[2]) for m in re.finditer(
            r'^gfs_lb_connections_total\{backend="([^"]+)"\} (\S+)$', text, re.M)}

    def stop(self) -> None:
        stop(self.proc)
        self.log.close()


def forwarded_for(port: int) -> str:
    """GET /echo through the balancer; the client address the upstream was told of."""
    headers = dict((k.lower(), v) for k, v in get_echo(port)["headers"])
    return headers.get("x-forwarded-for", "")


def get_echo(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                      source_address=(CLIENT_IP, 0))
    try:
        conn.request("GET", "/echo", headers={"connection": "close"})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (resp.status, body[:200])
        return json.loads(body)
    finally:
        conn.close()


@pytest.fixture
def upstream():
    proc, port = spawn_upstream("app")
    yield f"http://127.0.0.1:{port}"
    stop(proc)


def test_three_gateways_behind_the_balancer_lose_only_in_flight_requests_to_a_kill(
        tmp_path, upstream):
    routes = [{"name": "app", "path": "/*", "to": [upstream]}]
    gateways = [GatewayProc(tmp_path / f"gw{i}", routes, "--proxy-protocol-from", "127.0.0.1/32")
                for i in range(3)]
    lb = None
    try:
        backends = [f"127.0.0.1:{g.port}" for g in gateways]
        lb = Lb(tmp_path, backends, "--proxy-protocol")
        # Every replica takes part, and sees the client's own address, not the balancer's.
        assert forwarded_for(lb.port) == CLIENT_IP
        wait_for(lambda: get_echo(lb.port) and len(lb.connections()) == 3, 20,
                 "every replica to take a connection", 0.05)

        results: list[tuple[float, bool]] = []
        stop_at = [time.monotonic() + 60]

        def client() -> None:
            while time.monotonic() < stop_at[0]:
                start = time.monotonic()
                try:
                    ok = forwarded_for(lb.port) == CLIENT_IP
                except (OSError, http.client.HTTPException, AssertionError):
                    ok = False
                results.append((start, ok))

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        wait_for(lambda: len(results) >= 60, 30, "load through the balancer", 0.05)
        victim = gateways[0]
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(10)
        killed_at = time.monotonic()             # reaped: its sockets are closed
        time.sleep(1.0)
        after_1s = lb.connections()[backends[0]]
        served_before = len(results)
        wait_for(lambda: len(results) >= served_before + 60, 30, "load after the kill", 0.05)
        stop_at[0] = 0
        for t in threads:
            t.join(30)

        failed = [start for start, ok in results if not ok]
        print(f"\n{len(results)} requests, {len(failed)} failed (in flight on the killed "
              f"replica), {CLIENTS} clients")
        # New connections stopped going to the killed replica within 1 s...
        assert lb.connections()[backends[0]] == after_1s
        # ...and the only failures are requests already under way on it when it died.
        assert len(failed) <= CLIENTS, failed
        assert all(start <= killed_at for start in failed), \
            [round(s - killed_at, 3) for s in failed]
        assert sum(ok for _, ok in results[-60:]) == 60
        # The survivors carried the load after the kill, and saw the clients' address.
        for g in gateways[1:]:
            lines = wait_for(g.access_lines, 5, "the access log's batch", 0.05)
            assert lines and all(line["client"] == CLIENT_IP for line in lines), lines[-1:]
    finally:
        if lb is not None:
            lb.stop()
        for g in gateways:
            g.stop()


def test_udp_sessions_stick_to_a_backend_and_move_when_it_is_gone(tmp_path):
    backends, socks = [], []
    for _ in range(2):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        socks.append(s)
        backends.append(f"127.0.0.1:{s.getsockname()[1]}")
    lb = Lb(tmp_path, backends, "--udp", "--policy", "hash:ip")
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(5)
    try:
        def exchange(payload: bytes) -> int:
            """Send through the balancer; the backend that got it answers; return its index."""
            client.sendto(payload, ("127.0.0.1", lb.port))
            ready = [i for i, s in enumerate(socks) if s in _readable(socks)]
            assert len(ready) == 1, ready
            data, addr = socks[ready[0]].recvfrom(2048)
            assert data == payload
            socks[ready[0]].sendto(b"re:" + data, addr)
            assert client.recvfrom(2048)[0] == b"re:" + payload
            return ready[0]

        first = exchange(b"one")
        assert [exchange(b"n%d" % i) for i in range(5)] == [first] * 5
        socks[first].close()                  # the backend goes away: ICMP port unreachable
        client.sendto(b"lost", ("127.0.0.1", lb.port))
        other = 1 - first

        def moved() -> bool:
            client.sendto(b"again", ("127.0.0.1", lb.port))
            if not _readable([socks[other]], 0.3):
                return False
            data, addr = socks[other].recvfrom(2048)
            socks[other].sendto(b"re:" + data, addr)
            client.recvfrom(2048)
            return True
        wait_for(moved, 10, "the session to move to the other backend", 0.1)
        assert exchange(b"after") == other
    finally:
        client.close()
        for s in socks:
            s.close()
        lb.stop()


def _readable(socks: list[socket.socket], timeout: float = 2.0) -> list[socket.socket]:
    try:
        return select.select([s for s in socks if s.fileno() >= 0], [], [], timeout)[0]
    except (OSError, ValueError):
        return []


def test_bad_arguments_are_one_line_errors():
    for args, message in [(["--to", "nohost"], "not HOST:PORT"),
                          (["--to", "a:1,a:1"], "named twice"),
                          (["--to", "a:1", "--udp", "--proxy-protocol"], "TCP only")]:
        proc = subprocess.run([sys.executable, "-m", "cli.main", "lb", "--listen",
                               "127.0.0.1:0", *args], capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
