"""Real processes for the gateway's end-to-end tests: `gfs gateway` and the test upstream."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from tests.integration.polling import wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_upstream(name: str, down_file: str = "") -> tuple[subprocess.Popen, int]:
    """A test upstream; its /health answers 503 while `down_file` exists."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration.gateway_upstream", "0",
                             name, down_file], stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class GatewayProc:
    """`gfs gateway` in its own process, following a route file in `workdir`."""

    def __init__(self, workdir, routes: list[dict] | None, *args: str, workers: int = 1,
                 tls: tuple[str, str] | None = None, masters: list[str] | None = None,
                 token: str = ""):
        """`masters`: follow the masters' routes (as `token`) instead of a route file."""
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.routes_file = os.path.join(self.dir, "routes.json")
        if routes is not None:
            self.write_routes(routes)
        self.port = free_port()
        self.metrics_port = free_port() if workers == 1 else 0
        if workers > 1:                          # worker i on PORT+i: find a free pair
            while True:
                self.metrics_port = free_port()
                try:
                    with socket.socket() as s:
                        s.bind(("127.0.0.1", self.metrics_port + 1))
                    break
                except OSError:
                    continue
        self.access_log = os.path.join(self.dir, "access.log")
        source = (["--routes", self.routes_file] if masters is None else [])
        globals_ = [] if masters is None else ["--masters", ",".join(masters), "--token", token]
        cmd = [sys.executable, "-m", "cli.main", *globals_, "gateway",
               "--listen", f"127.0.0.1:{self.port}", *source,
               "--state-dir", os.path.join(self.dir, "state"),
               "--metrics", f"127.0.0.1:{self.metrics_port}", "--access-log", self.access_log,
               "--workers", str(workers), *args]
        if tls:
            cmd += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        self.log = open(os.path.join(self.dir, "gateway.log"), "a")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            # A gateway re-execs itself once (PYTHONMALLOC): two interpreter start-ups, which
            # take tens of seconds on a loaded machine.
            for i in range(workers):
                wait_for(lambda: self._up(self.metrics_port + i), 60, "the gateway to listen",
                         0.1)
        except BaseException:
            self.stop()                        # never leave a gateway running behind a failure
            raise

    def _up(self, port: int) -> bool:
        assert self.proc.poll() is None, open(self.log.name).read()[-3000:]
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2).read()
            return True
        except OSError:
            return False

    def write_routes(self, routes: list[dict]) -> None:
        tmp = self.routes_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"routes": routes}, f)
        os.replace(tmp, self.routes_file)

    def status(self, worker: int = 0) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port + worker}/status",
                                    timeout=5) as r:
            return json.loads(r.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=5) as r:
            return r.read().decode()

    def access_lines(self) -> list[dict]:
        with open(self.access_log) as f:
            return [json.loads(line) for line in f if line.strip()]

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self) -> None:
        stop(self.proc)
        self.log.close()

    def __enter__(self) -> "GatewayProc":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
