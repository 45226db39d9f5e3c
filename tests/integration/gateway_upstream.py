"""A small real HTTP/1.1 upstream for the gateway's tests, run as its own process:

    python -m tests.integration.gateway_upstream PORT NAME [DOWN_FILE]

GET /echo...      -> JSON {name, method, path, headers}
GET /bytes/N      -> N bytes (streamed in 1 MiB pieces)
GET /slow/S       -> waits S seconds, then answers
GET /health       -> 503 while DOWN_FILE exists, else 200
GET /nolength/N   -> N bytes with neither Content-Length nor chunks: the close ends them
GET + Upgrade: echo -> 101, then every byte sent back until the client closes
POST|PUT /upload  -> reads the body as it comes; JSON {name, length, sha256}
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    name = "upstream"
    down_file = ""

    def log_message(self, *args) -> None:
        pass

    def _json(self, obj: dict, status: int = 200) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.headers.get("upgrade", "").lower() == "echo":
            self.send_response(101)
            self.send_header("connection", "upgrade")
            self.send_header("upgrade", "echo")
            self.end_headers()
            self.wfile.flush()
            while True:
                data = self.connection.recv(65536)
                if not data:
                    break
                self.connection.sendall(data)
            self.close_connection = True
            return
        if self.path.startswith("/bytes/"):
            n = int(self.path.split("/")[2])
            self.send_response(200)
            self.send_header("content-length", str(n))
            self.end_headers()
            piece = b"b" * (1 << 20)
            while n > 0:
                self.wfile.write(piece[:min(n, len(piece))])
                n -= len(piece)
            return
        if self.path == "/health":
            down = bool(self.down_file) and os.path.exists(self.down_file)
            self._json({"name": self.name, "down": down}, 503 if down else 200)
            return
        if self.path.startswith("/nolength/"):
            self.send_response(200)
            self.send_header("connection", "close")
            self.end_headers()
            self.wfile.write(b"n" * int(self.path.split("/")[2]))
            self.close_connection = True
            return
        if self.path.startswith("/slow/"):
            time.sleep(float(self.path.split("/")[2]))
        self._json({"name": self.name, "method": self.command, "path": self.path,
                    "headers": [[k.lower(), v] for k, v in self.headers.items()]})

    do_DELETE = do_GET

    def do_POST(self) -> None:
        digest, length = hashlib.sha256(), 0
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                remaining = size
                while remaining:
                    data = self.rfile.read(min(remaining, 1 << 20))
                    digest.update(data)
                    remaining -= len(data)
                length += size
                self.rfile.readline()
        else:
            remaining = int(self.headers.get("content-length") or 0)
            while remaining:
                data = self.rfile.read(min(remaining, 1 << 20))
                if not data:
                    break
                digest.update(data)
                length += len(data)
                remaining -= len(data)
        self._json({"name": self.name, "length": length, "sha256": digest.hexdigest(),
                    "path": self.path})

    do_PUT = do_POST


def main() -> None:
    port, name = int(sys.argv[1]), sys.argv[2]
    Handler.name = name
    Handler.down_file = sys.argv[3] if len(sys.argv) > 3 else ""
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
