"""The bulk data protocol: chunk bytes over a plain TCP connection (TLS where the cluster serves
TLS) beside gRPC, which stays for control and for daemons' repair reads. gRPC costs a few
copies and a per-message toll in Python for every MiB; here a peer receives each span with one
`recv_into` into a buffer and verifies it in place.

Every chunkserver listens on a second port, which its Status RPC names (`bulk_port`; 0: none).
A connection carries requests one after another. A read is authorized exactly as ReadChunk is,
by the masters' read capability for that (handle, version); a write exactly as WriteChunk is, by
the write capability, which each replica of the chain checks (chunkserver/bulk.py).

Wire format (integers little endian)::

    request   REQUEST: magic b"GFSR", format 1, op, capability length (<= 256), handle,
              version, then two fields whose meaning depends on the op:
                op 1 (read):  offset, length (-1: to the end); version 0: whatever is stored
                op 2 (write): chain length in bytes (<= MAX_CHAIN), -1
              then the capability's bytes; a write then the chain: the gRPC addresses of the
              replicas after this one, comma separated (utf-8)
    frames    each FRAME: kind, n, value, then n payload bytes for the kind:
      START   (read answer) value = the chunk's length, n = 0
      DATA    value = offset of the span (a block boundary), n = its bytes (<= MAX_SPAN);
              then 8 bytes per block (xxh3-64 of each 64 KiB block), then the bytes
      END     (read answer) the read is complete; the connection takes the next request
      COMMIT  (write, from the writer) value = the chunk checksum, n = 0: no more spans
      DONE    (write answer) value = the chunk's length, n = 8 + the replicas' text: the
              chunk checksum, then the gRPC addresses of every replica that fsync'd it
      ERROR   n = length of "CODE message" (utf-8, <= MAX_ERROR)

A read's answer is START, DATA..., END. The server sends whole blocks only, each verified
against its stored block sum before it leaves; the reader verifies every block again against
the sum that came with it (gfs.transfer). A malformed request gets ERROR and the connection is
closed; a refused or failed read gets ERROR and the connection takes the next request.

A write's request is followed by DATA frames at consecutive offsets (every span but the last
whole blocks) and COMMIT. Each replica verifies every block against its sum as it arrives,
passes the span down the chain as it is, writes it, and stores the sums it verified (each block
is hashed once per hop); on COMMIT it passes COMMIT down, fsyncs its copy while the replicas
after it fsync theirs, and answers DONE only once its own copy is durable and the next
replica's DONE (naming every replica after it) is in. Any failure is an ERROR frame (a
downstream replica's error passed up with its address) and the end of the connection; nothing
of the chunk stays behind on that replica.
"""
from __future__ import annotations

import select
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

from gfs.checksum import BLOCK_SIZE, block_checksum
from gfs.errors import GfsError, Unavailable, from_code

MAGIC = b"GFSR"
FORMAT = 1
OP_READ, OP_WRITE = 1, 2
REQUEST = struct.Struct("<4sBBHQQQq")
FRAME = struct.Struct("<BxxxIQ")
START, DATA, END, ERROR, COMMIT, DONE = 1, 2, 3, 4, 5, 6
MAX_CAPABILITY = 256
MAX_SPAN = 16 * BLOCK_SIZE          # 1 MiB: the most bytes one DATA frame may carry
MAX_ERROR = 4096
MAX_CHAIN = 1024                    # bytes of a write's chain (the replicas after the first)
_SUM = struct.Struct("<Q")
IDLE_PER_ADDRESS = 4                # idle connections a reader keeps per chunkserver
IDLE_S = 10.0                       # ... for at most this long (servers drop them after 30 s)


class ProtocolError(Exception):
    """The peer broke the wire format (a lying length, an unknown frame, a short stream)."""


@dataclass
class Span:
    """One DATA frame: whole blocks from `offset`, with their block sums (like ReadResponse).
    `data` is a read-only view of a buffer of its own that nothing writes to again: a consumer
    may keep it (or a slice of it) instead of copying it (the mount's block cache does)."""
    offset: int
    data: memoryview
    block_sums: tuple[int, ...]
    chunk_length: int


def encode_request(handle: int, version: int, offset: int, length: int,
                   capability: bytes) -> bytes:
    return REQUEST.pack(MAGIC, FORMAT, OP_READ, len(capability), handle, version, offset,
                        length) + capability


def encode_write_request(handle: int, version: int, capability: bytes,
                         chain: list[str]) -> bytes:
    text = ",".join(chain).encode("utf-8")
    return REQUEST.pack(MAGIC, FORMAT, OP_WRITE, len(capability), handle, version, len(text),
                        -1) + capability + text


def encode_span(offset: int, n: int, sums: tuple[int, ...] | list[int]) -> bytes:
    """The head of a DATA frame of n bytes at `offset`: the frame and the block sums."""
    return FRAME.pack(DATA, n, offset) + struct.pack(f"<{len(sums)}Q", *sums)


def recv_sums(sock: socket.socket, n: int, offset: int) -> tuple[int, ...]:
    """The block sums of a DATA frame of n bytes at `offset` (checked: 0 < n <= MAX_SPAN, a
    block boundary); ProtocolError for a frame that breaks those rules."""
    if not 0 < n <= MAX_SPAN or offset % BLOCK_SIZE:
        raise ProtocolError(f"bad DATA frame: {n} bytes at {offset}")
    blocks = -(-n // BLOCK_SIZE)
    return struct.unpack(f"<{blocks}Q", recv_exact(sock, 8 * blocks))


def block_sums(view: memoryview) -> list[int]:
    """The sum of each block of a span (its last block may be short)."""
    return [block_checksum(view[at:at + BLOCK_SIZE]) for at in range(0, len(view), BLOCK_SIZE)]


def first_bad_block(view: memoryview, sums: tuple[int, ...] | list[int]) -> int:
    """The index of the first block of `view` not matching its sum, or -1."""
    for i, at in enumerate(range(0, len(view), BLOCK_SIZE)):
        if block_checksum(view[at:at + BLOCK_SIZE]) != sums[i]:
            return i
    return -1


def encode_done(length: int, checksum: int, replicas: list[str]) -> bytes:
    text = ",".join(replicas).encode("utf-8")
    return FRAME.pack(DONE, 8 + len(text), length) + _SUM.pack(checksum) + text


def encode_error(err: GfsError) -> bytes:
    text = f"{err.code} {err.message}".encode("utf-8", "replace")[:MAX_ERROR]
    return FRAME.pack(ERROR, len(text), 0) + text


def decode_error(payload: bytes) -> GfsError:
    code, _, message = payload.decode("utf-8", "replace").partition(" ")
    return from_code(code, message)


def recv_exact(sock: socket.socket, n: int) -> memoryview:
    """n bytes into a new buffer (the caller may keep it); ProtocolError at an early end."""
    view = memoryview(bytearray(n))
    recv_into_exact(sock, view)
    return view


def recv_into_exact(sock: socket.socket, view: memoryview) -> None:
    """Fill `view` from the socket; ProtocolError at an early end."""
    got, n = 0, len(view)
    while got < n:
        k = sock.recv_into(view[got:])
        if not k:
            raise ProtocolError(f"connection closed after {got} of {n} bytes")
        got += k


def spans(pieces: Iterable[bytes | bytearray | memoryview]
          ) -> Iterator[tuple[int, memoryview]]:
    """(offset, bytes) spans of a stream of pieces of any sizes, as a write sends them: at most
    MAX_SPAN bytes each, whole blocks except the last. Pieces already in whole blocks pass
    through as they are; the rest is gathered in one buffer of MAX_SPAN (a span handed out is
    valid until the next one is asked for)."""
    buf = memoryview(bytearray(MAX_SPAN))
    fill = offset = 0
    for piece in pieces:
        view = memoryview(piece).cast("B")
        while view:
            if not fill and len(view) >= BLOCK_SIZE:
                take = min(len(view) - len(view) % BLOCK_SIZE, MAX_SPAN)
                yield offset, view[:take]
            else:
                take = min(MAX_SPAN - fill, len(view))
                buf[fill:fill + take] = view[:take]
                fill += take
                if fill == MAX_SPAN:
                    yield offset - fill + take, buf
                    fill = 0
            offset += take
            view = view[take:]
    if fill:
        yield offset - fill, buf[:fill]


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

    def connect(self, host: str, port: int, timeout: float) -> socket.socket:
        """A new connection to host:port (TLS if this reader uses TLS), `timeout` per call."""
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

    def upload(self, address: str, port: int, handle: int, version: int, capability: bytes,
               chain: list[str], io_timeout: float) -> ChunkUpload:
        """Start a chunk write on `address`'s bulk port (one new connection per chunk; the
        replicas of `chain` follow it). Unavailable if it cannot be reached."""
        host = address.rsplit(":", 1)[0].strip("[]")
        try:
            sock = self.connect(host, port, io_timeout)
        except OSError as err:
            raise Unavailable(f"replica {address}: bulk port {port}: {err}") from None
        upload = ChunkUpload(sock, address)
        upload.send_raw(encode_write_request(handle, version, capability, chain))
        return upload

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
                sock = self.connect(host, port, timeout)
                sock.sendall(request)
                head = recv_exact(sock, FRAME.size)
            except (OSError, ProtocolError) as err:
                if sock is not None:
                    sock.close()
                raise Unavailable(f"replica {address}: bulk port {port}: {err}") from None
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
                yield Span(value, recv_exact(sock, n).toreadonly(), sums, chunk_length)
        except OSError as err:
            raise Unavailable(f"replica {address}: bulk port {port}: {err}") from None
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


@dataclass
class Committed:
    """A write's DONE: what every replica of the chain fsync'd (like WriteResponse)."""
    length: int
    checksum: int
    replicas: list[str]


class ChunkUpload:
    """One chunk write on a bulk connection (client and chain forwarding alike): `send` each
    span with its block sums, `commit` with the chunk checksum, then `result` waits for the
    DONE that comes once every replica fsync'd the chunk. A replica's error is raised as its
    GfsError (as soon as it arrives, also while sending); a broken connection as Unavailable;
    a peer breaking the wire format as ProtocolError. Use from one thread."""

    def __init__(self, sock: socket.socket, address: str):
        self.address = address
        self._sock = sock
        self._early = b""             # the first bytes of an answer read while sending

    def send_raw(self, data: bytes | memoryview) -> None:
        try:
            self._sock.sendall(data)
        except OSError as err:
            raise self._failure(err) from None

    def send(self, offset: int, data: memoryview, sums: tuple[int, ...] | list[int]) -> None:
        """One DATA frame. Fails fast with the replica's error if it has answered already."""
        if self._answered():
            raise self._failure(None)
        self.send_raw(encode_span(offset, len(data), sums))
        self.send_raw(data)

    def commit(self, checksum: int) -> None:
        """No more spans: the replicas may fsync."""
        self.send_raw(FRAME.pack(COMMIT, 0, checksum))

    def end(self) -> None:
        """(Nothing to do: COMMIT ended the stream; the gRPC chain's Forwarder has work here.)"""

    def result(self, timeout: float) -> Committed:
        """The DONE of the chain: once this replica and every one after it fsync'd."""
        try:
            self._sock.settimeout(timeout)
            return self._answer()
        except (OSError, ProtocolError) as err:
            raise Unavailable(f"replica {self.address} broke off the write: {err}") from None

    def cancel(self) -> None:
        self._sock.close()

    close = cancel

    def _answered(self) -> bool:
        """Has the replica sent something (an early ERROR) before being asked? Over TLS the
        socket may also turn readable for a record without data (a session ticket): what was
        read is kept for the answer, and nothing read means no answer yet."""
        sock = self._sock
        try:
            if not select.select([sock], [], [], 0)[0]:
                return bool(getattr(sock, "pending", lambda: 0)())
            if not isinstance(sock, ssl.SSLSocket):
                return True
            timeout = sock.gettimeout()
            sock.setblocking(False)
            try:
                got = sock.recv(FRAME.size)
            except ssl.SSLWantReadError:
                return False
            finally:
                sock.settimeout(timeout)
        except (OSError, ValueError):
            return True
        self._early += got
        return True

    def _failure(self, err: OSError | None) -> GfsError:
        """Why sending failed: the replica's ERROR if it sent one, else the socket's error."""
        try:
            self._sock.settimeout(2.0)
            self._answer()
        except GfsError as refused:
            return refused                # (already named after this replica by _answer)
        except (OSError, ProtocolError):
            pass
        return Unavailable(f"replica {self.address} broke off the write"
                           + (f": {err}" if err else ""))

    def _answer(self) -> Committed:
        early, self._early = self._early, b""
        head = early + bytes(recv_exact(self._sock, FRAME.size - len(early))) \
            if len(early) < FRAME.size else early
        kind, n, value = FRAME.unpack(head)
        if kind == ERROR:
            if n > MAX_ERROR:
                raise ProtocolError(f"error frame of {n} bytes")
            err = decode_error(bytes(recv_exact(self._sock, n)))
            raise from_code(err.code, f"replica {self.address}: {err.message}")
        if kind != DONE or not 8 <= n <= 8 + MAX_CHAIN + 256:
            raise ProtocolError(f"expected DONE, got kind {kind} ({n} bytes)")
        payload = recv_exact(self._sock, n)
        (checksum,) = _SUM.unpack_from(payload)
        text = bytes(payload[8:]).decode("utf-8", "replace")
        return Committed(value, checksum, text.split(",") if text else [])
