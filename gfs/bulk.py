"""The bulk read protocol: chunk bytes over a plain TCP connection (TLS where the cluster
serves TLS) beside gRPC, which stays for control and for daemons' calls. gRPC costs a few
copies and a per-message toll in Python for every MiB; here a reader receives each span with
one `recv_into` into its own buffer and verifies it in place.

Every chunkserver listens on a second port, which its Status RPC names (`bulk_port`; 0: none).
A connection carries reads one after another; each read is authorized exactly as ReadChunk is,
by the masters' read capability for that (handle, version) (chunkserver/bulk.py).

Wire format (integers little endian)::

    request   REQUEST: magic b"GFSR", format 1, op 1 (read), capability length (<= 256),
              handle, version (0: whatever is stored), offset, length (-1: to the end),
              then the capability's bytes
    answer    frames, each FRAME: kind, n, value, then n payload bytes for the kind:
      START   value = the chunk's length, n = 0
      DATA    value = offset of the span (a block boundary), n = its bytes (<= MAX_SPAN);
              then 8 bytes per block (the block sums of the server's sidecar), then the bytes
      END     the read is complete; the connection takes the next request
      ERROR   n = length of "CODE message" (utf-8, <= MAX_ERROR); after a malformed request
              the server closes the connection, otherwise it takes the next request

The server sends whole blocks only, each verified against its stored block sum before it
leaves; the reader verifies every block again against the sum that came with it (gfs.transfer).
"""
from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from typing import Iterator

from gfs.checksum import BLOCK_SIZE
from gfs.errors import GfsError, Unavailable, from_code

MAGIC = b"GFSR"
FORMAT = 1
OP_READ = 1
REQUEST = struct.Struct("<4sBBHQQQq")
FRAME = struct.Struct("<BxxxIQ")
START, DATA, END, ERROR = 1, 2, 3, 4
MAX_CAPABILITY = 256
MAX_SPAN = 16 * BLOCK_SIZE          # 1 MiB: the most bytes one DATA frame may carry
MAX_ERROR = 4096
IDLE_PER_ADDRESS = 4                # idle connections a reader keeps per chunkserver
IDLE_S = 10.0                       # ... for at most this long (servers drop them after 30 s)


class ProtocolError(Exception):
    """The peer broke the wire format (a lying length, an unknown frame, a short stream)."""


@dataclass
class Span:
    """One DATA frame: whole blocks from `offset`, with their block sums (like ReadResponse)."""
    offset: int
    data: memoryview
    block_sums: tuple[int, ...]
    chunk_length: int


def encode_request(handle: int, version: int, offset: int, length: int,
                   capability: bytes) -> bytes:
    return REQUEST.pack(MAGIC, FORMAT, OP_READ, len(capability), handle, version, offset,
                        length) + capability


def encode_error(err: GfsError) -> bytes:
    text = f"{err.code} {err.message}".encode("utf-8", "replace")[:MAX_ERROR]
    return FRAME.pack(ERROR, len(text), 0) + text


def decode_error(payload: bytes) -> GfsError:
    code, _, message = payload.decode("utf-8", "replace").partition(" ")
    return from_code(code, message)


def recv_exact(sock: socket.socket, n: int) -> memoryview:
    """n bytes into a new buffer (the caller may keep it); ProtocolError at an early end."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if not k:
            raise ProtocolError(f"connection closed after {got} of {n} bytes")
        got += k
    return view


def client_context(ca_pem: bytes) -> ssl.SSLContext:
    """TLS for readers: verify the chunkserver against the cluster's CA."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca_pem.decode("ascii"))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class BulkLinks:
    """A reader's connections to chunkservers' bulk ports, kept open between reads (a few per
    address). Thread-safe: each read takes a connection of its own."""

    def __init__(self, tls: ssl.SSLContext | None = None, connect_timeout: float = 5.0):
        self._tls = tls
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, int], list[tuple[socket.socket, float]]] = {}

    def _reuse(self, host: str, port: int, timeout: float) -> socket.socket | None:
        """An idle connection to host:port, if one is young enough (the server drops a silent
        one after its io timeout)."""
        now = time.monotonic()
        with self._lock:
            idle = self._idle.get((host, port), [])
            while idle:
                sock, since = idle.pop()
                if now - since < IDLE_S:
                    sock.settimeout(timeout)
                    return sock
                sock.close()
        return None

    def _connect(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.create_connection((host, port), timeout=self._connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls is not None:
            sock = self._tls.wrap_socket(sock, server_hostname=host)
        sock.settimeout(timeout)
        return sock

    def _release(self, host: str, port: int, sock: socket.socket) -> None:
        with self._lock:
            idle = self._idle.setdefault((host, port), [])
            if len(idle) < IDLE_PER_ADDRESS:
                idle.append((sock, time.monotonic()))
                return
        sock.close()

    def read(self, address: str, port: int, handle: int, version: int, offset: int,
             length: int, capability: bytes, timeout: float) -> Iterator[Span]:
        """The spans of one chunk read from `address`'s bulk port, as they arrive. A refusal or
        failure the server reports is raised as its GfsError; a broken connection as
        Unavailable; a peer breaking the wire format as ProtocolError."""
        host = address.rsplit(":", 1)[0].strip("[]")
        request = encode_request(handle, version, offset, length, capability)
        sock = self._reuse(host, port, timeout)
        if sock is not None:
            try:
                sock.sendall(request)
                head = recv_exact(sock, FRAME.size)
            except (OSError, ProtocolError):     # closed by the server meanwhile: a new one
                sock.close()
                sock = None
        if sock is None:
            try:
                sock = self._connect(host, port, timeout)
                sock.sendall(request)
                head = recv_exact(sock, FRAME.size)
            except (OSError, ProtocolError) as err:
                if sock is not None:
                    sock.close()
                raise Unavailable(f"bulk port {host}:{port}: {err}") from None
        finished = False
        try:
            kind, n, value = FRAME.unpack(head)
            if kind == ERROR:
                raise self._error(sock, n)
            if kind != START or n:
                raise ProtocolError(f"expected a START frame, got kind {kind} ({n} bytes)")
            chunk_length = value
            while True:
                kind, n, value = FRAME.unpack(recv_exact(sock, FRAME.size))
                if kind == END and not n:
                    finished = True
                    return
                if kind == ERROR:
                    raise self._error(sock, n)
                if kind != DATA or not 0 < n <= MAX_SPAN or value % BLOCK_SIZE:
                    raise ProtocolError(f"bad frame: kind {kind}, {n} bytes at {value}")
                blocks = -(-n // BLOCK_SIZE)
                sums = struct.unpack(f"<{blocks}Q", recv_exact(sock, 8 * blocks))
                yield Span(value, recv_exact(sock, n), sums, chunk_length)
        except OSError as err:
            raise Unavailable(f"bulk port {host}:{port}: {err}") from None
        finally:
            if finished:
                self._release(host, port, sock)
            else:
                sock.close()

    @staticmethod
    def _error(sock: socket.socket, n: int) -> GfsError:
        """The error an ERROR frame of n bytes carries."""
        if n > MAX_ERROR:
            raise ProtocolError(f"error frame of {n} bytes")
        return decode_error(bytes(recv_exact(sock, n)))

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for socks in idle.values():
            for sock, _ in socks:
                sock.close()
