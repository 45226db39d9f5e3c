"""The processes of the gateway benchmarks: one upstream (Debian's nginx serving static files)
and three proxies in front of it — nginx, HAProxy and `gfs gateway` — each started from a
config written here, on loopback ports of its own, stopped by its PID.

The upstream is the same for every proxy:
- HTTP/1.1 on `up_h1`: /small (SMALL_SIZE bytes) and /big (1 MiB), static files;
- cleartext HTTP/2 (h2c, prior knowledge) on `up_h2`: POST /bench.Bench/Unary answers a fixed
  gRPC message (a 5-byte length-prefixed frame read from a file) with the trailer
  `grpc-status: 0` — a gRPC unary server's answer on the wire, served at nginx's static-file
  speed so that the upstream is never what limits a proxy (a grpcio server in Python would be,
  at a few thousand calls/s). `check_grpc` makes a real grpcio call through each proxy first.

Each proxy listens on two ports: `h1` (HTTP/1.1 clients) and `h2` (h2c clients: gRPC and small
responses over HTTP/2). The gfs gateway serves both on one port (it tells the protocols apart by
the HTTP/2 preface), so its two ports are the same.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cli.localcluster import free_port

SMALL_SIZE = 128
BIG_SIZE = 1 << 20
GRPC_PATH = "/bench.Bench/Unary"
GRPC_REPLY = b"gfs-bench-reply" * 4       # the protobuf-free payload of the fixed answer
GRPC_REQUEST = b"gfs-bench-request" * 4
TOOLS = {"nginx": "nginx", "haproxy": "haproxy", "wrk": "wrk", "h2load": "nghttp2-client"}
PROXIES = ("nginx", "haproxy", "gfs")


def _nofile() -> int:
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return hard if hard != resource.RLIM_INFINITY else 65536


NOFILE = _nofile()          # every proxy may use the whole hard limit of open files


class ToolMissing(Exception):
    """A program the benchmark runs is not installed; the message says which package has it."""


def require_tools(names=TOOLS) -> dict[str, str]:
    """{tool: path}; raises ToolMissing naming every missing one and its Debian package."""
    found = {t: shutil.which(t) or (f"/usr/sbin/{t}" if os.access(f"/usr/sbin/{t}", os.X_OK)
                                    else None) for t in names}
    missing = [t for t, p in found.items() if not p]
    if missing:
        pkgs = " ".join(TOOLS[t] for t in missing)
        raise ToolMissing(f"{', '.join(missing)} not installed (Debian: apt-get install {pkgs}; "
                          "`./run.sh bench` installs them when run as root)")
    return found


def grpc_frame(message: bytes) -> bytes:
    """One uncompressed gRPC length-prefixed message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited at start (code {proc.returncode}); "
                               f"see its log")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} does not listen on 127.0.0.1:{port} after {timeout:.0f}s")


@dataclass
class Proc:
    """A started program: its Popen, log file and the ports it listens on."""
    name: str
    popen: subprocess.Popen
    log: Path
    h1: int = 0
    h2: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        """SIGTERM (nginx: fast shutdown; HAProxy and the gateway: stop), SIGKILL after 10 s;
        the process group goes with it (the gateway's and nginx's workers)."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)


def _spawn(name: str, argv: list[str], base: Path, env: dict | None = None,
           cwd: str | None = None) -> tuple[subprocess.Popen, Path]:
    log = base / f"{name}.log"
    with open(log, "ab") as out:
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 start_new_session=True, env=env, cwd=cwd)
    return popen, log


def _nginx_common(base: Path, name: str, workers: int) -> str:
    tmp = base / f"{name}-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    temps = "".join(f"    {k}_temp_path {tmp}/{k};\n"
                    for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    import pwd
    user = pwd.getpwuid(os.geteuid()).pw_name       # workers read our files as we do
    return (f"user {user};\ndaemon off;\nmaster_process on;\nworker_processes {workers};\n"
            f"pid {base}/{name}.pid;\nerror_log {base}/{name}-error.log warn;\n"
            f"worker_rlimit_nofile {NOFILE};\n"
            "events { worker_connections 16384; }\n"
            "http {\n    access_log off;\n    keepalive_requests 10000000;\n"
            "    keepalive_timeout 75s;\n" + temps)


def _run_nginx(binary: str, base: Path, name: str, conf: Path, h1: int, h2: int) -> Proc:
    popen, log = _spawn(name, [binary, "-c", str(conf), "-e", str(base / f"{name}-error.log")],
                        base)
    proc = Proc(name, popen, log, h1, h2)
    wait_port(h1, popen, f"nginx ({name})")
    wait_port(h2, popen, f"nginx ({name})")
    return proc


def start_upstream(base: Path, workers: int = 1) -> Proc:
    """nginx serving /small, /big (HTTP/1.1) and the fixed gRPC answer (h2c)."""
    nginx = require_tools(["nginx"])["nginx"]
    www = base / "www"
    (www / GRPC_PATH.strip("/").split("/")[0]).mkdir(parents=True, exist_ok=True)
    (www / "small").write_bytes(b"s" * (SMALL_SIZE - 1) + b"\n")
    (www / "big").write_bytes(os.urandom(BIG_SIZE))
    (www / GRPC_PATH.lstrip("/")).write_bytes(grpc_frame(GRPC_REPLY))
    h1, h2 = free_port(), free_port()
    conf = base / "upstream.conf"
    conf.write_text(
        _nginx_common(base, "upstream", workers)
        + f"    server {{\n        listen 127.0.0.1:{h1} backlog=4096;\n        root {www};\n"
          "        default_type application/octet-stream;\n    }\n"
          f"    server {{\n        listen 127.0.0.1:{h2} http2 backlog=4096;\n"
          f"        root {www};\n"
          f"        location = {GRPC_PATH} {{\n"
          "            default_type application/grpc;\n"
          # POST to a static file is 405; turned into the file itself (a GET internally)
          "            error_page 405 =200 $uri;\n"
          "            add_trailer grpc-status 0 always;\n"
          "        }\n    }\n}\n")
    return _run_nginx(nginx, base, "upstream", conf, h1, h2)


def start_nginx(base: Path, upstream: Proc, workers: int) -> Proc:
    nginx = require_tools(["nginx"])["nginx"]
    h1, h2 = free_port(), free_port()
    proxy = ("            proxy_pass http://up_h1;\n            proxy_http_version 1.1;\n"
             "            proxy_set_header Connection \"\";\n")
    conf = base / "nginx.conf"
    conf.write_text(
        _nginx_common(base, "nginx", workers)
        + f"    upstream up_h1 {{ server 127.0.0.1:{upstream.h1}; keepalive 64; }}\n"
          f"    upstream up_h2 {{ server 127.0.0.1:{upstream.h2}; keepalive 64; }}\n"
          f"    server {{\n        listen 127.0.0.1:{h1} backlog=4096;\n"
          f"        location / {{\n{proxy}        }}\n    }}\n"
          f"    server {{\n        listen 127.0.0.1:{h2} http2 backlog=4096;\n"
          f"        location /bench.Bench/ {{ grpc_pass grpc://up_h2; }}\n"
          f"        location / {{\n{proxy}        }}\n    }}\n}}\n")
    return _run_nginx(nginx, base, "nginx", conf, h1, h2)


def start_haproxy(base: Path, upstream: Proc, workers: int) -> Proc:
    haproxy = require_tools(["haproxy"])["haproxy"]
    h1, h2 = free_port(), free_port()
    conf = base / "haproxy.cfg"
    conf.write_text(
        f"global\n    nbthread {workers}\n    maxconn {NOFILE // 2 - 100}\n\n"
        "defaults\n    mode http\n    timeout connect 5s\n    timeout client 60s\n"
        "    timeout server 60s\n    timeout http-request 10s\n    http-reuse always\n\n"
        f"frontend fe_h1\n    bind 127.0.0.1:{h1}\n    default_backend be_h1\n\n"
        f"frontend fe_h2\n    bind 127.0.0.1:{h2} proto h2\n"
        "    use_backend be_grpc if { path_beg /bench.Bench/ }\n    default_backend be_h1\n\n"
        f"backend be_h1\n    server up 127.0.0.1:{upstream.h1}\n\n"
        f"backend be_grpc\n    server up 127.0.0.1:{upstream.h2} proto h2\n")
    popen, log = _spawn("haproxy", [haproxy, "-f", str(conf), "-db"], base)
    proc = Proc("haproxy", popen, log, h1, h2)
    wait_port(h1, popen, "HAProxy")
    wait_port(h2, popen, "HAProxy")
    return proc


def start_gateway(base: Path, upstream: Proc, workers: int, *args: str,
                  root: str | None = None) -> Proc:
    """`gfs gateway` following a route file: gRPC to the upstream's h2c port, the rest to its
    HTTP/1.1 port. No access log (nginx's and HAProxy's are off too). `root`: run the gfs
    code of that tree (e.g. an older commit's, for a before/after) instead of this one."""
    import json
    port = free_port()
    routes = base / f"gateway-routes-{port}.json"
    routes.write_text(json.dumps({"revision": 1, "routes": [
        {"name": "grpc", "path": "/bench.Bench/*", "to": [f"h2c://127.0.0.1:{upstream.h2}"]},
        {"name": "web", "path": "/*", "to": [f"http://127.0.0.1:{upstream.h1}"]}]}))
    root = root or str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    popen, log = _spawn(f"gateway-{port}", [sys.executable, "-m", "cli.main", "gateway", "--listen",
                                    f"127.0.0.1:{port}", "--routes", str(routes),
                                    "--workers", str(workers), *args], base, env,
                        cwd=root)             # `python -m` puts the working directory first
    proc = Proc("gfs", popen, log, port, port)
    wait_port(port, popen, "gfs gateway")
    return proc


STARTERS = {"nginx": start_nginx, "haproxy": start_haproxy, "gfs": start_gateway}


def check_grpc(port: int) -> None:
    """A real grpcio unary call through a proxy: the fixed answer and status OK, or raise."""
    import grpc
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(GRPC_PATH, request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
        got = call(GRPC_REQUEST, timeout=10)
    if got != GRPC_REPLY:
        raise RuntimeError(f"gRPC through 127.0.0.1:{port}: unexpected answer {got[:40]!r}")
