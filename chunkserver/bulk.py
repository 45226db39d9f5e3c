"""The chunkserver's side of the bulk data protocol (wire format: gfs/bulk.py).

One thread per connection, at most `max_connections` at once (the next one is told
RESOURCE_EXHAUSTED and closed). Each read is authorized like ReadChunk (the masters' read
capability for that chunk and version) and opened through the same code
(ChunkserverService.open_read): whole blocks, each verified against the sidecar before it
leaves, sent with those block sums. Each write is authorized like WriteChunk (the write
capability) and begun and committed through the same code as WriteChunk
(ChunkserverService.begin_chain_write / commit_chain): every block verified against the sum it
came with, passed down the chain, written with the sums verified here; the DONE answer only once
this replica's fsync and the next replica's DONE are both in.

Bounded: a write receives every span (1 MiB) into the same buffer; a read passes through three
page-aligned span buffers of its connection (the span being sent and the next two, read ahead
from the disk meanwhile: chunkserver/direct_reads.py); a request larger than its fixed header, a 256-byte capability and a 1 KiB chain is
refused before anything is read into memory; a peer that stops sending or stops reading for
`io_timeout` seconds is disconnected. A malformed request gets an ERROR frame and the
connection is closed; a refused or failed read gets an ERROR frame and the connection takes the
next request; a failed write (refused, a damaged block, a broken frame, a downstream failure)
gets an ERROR frame, its temp files are removed and the connection is closed.
"""
from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from typing import Callable, Iterator, Protocol

from prometheus_client import Counter

from chunkserver.direct_reads import SpanRing
from gfs.bulk import (COMMIT, DATA, END, FORMAT, FRAME, MAGIC, MAX_CAPABILITY, MAX_CHAIN,
                      MAX_SPAN, OP_READ, OP_WRITE, REQUEST, START, ProtocolError, encode_done,
                      encode_error, encode_span, first_bad_block, recv_exact, recv_into_exact,
                      recv_sums)
from gfs.checksum import BLOCK_SIZE
from gfs.errors import DataLoss, FailedPrecondition, GfsError, InvalidArgument, ResourceExhausted

log = logging.getLogger(__name__)

BULK_BYTES = Counter("gfs_chunkserver_bulk_bytes_total",
                     "Chunk bytes sent over the bulk read protocol")
BULK_WRITE_BYTES = Counter("gfs_chunkserver_bulk_write_bytes_total",
                           "Chunk bytes received over the bulk write protocol")
BULK_REFUSED = Counter("gfs_chunkserver_bulk_refused_total",
                       "Bulk connections closed for breaking the protocol, by reason", ["reason"])

Authorize = Callable[[bytes, int, int], None]
OpenRead = Callable[..., tuple[object, Iterator[tuple[int, memoryview, tuple]]]]
DRAIN_S = 1.0           # after a failed write, how long its unread bytes are read and dropped


class ChainWrites(Protocol):
    """What the bulk server needs to take chunk writes (ChunkserverService)."""

    def begin_chain_write(self, capability: bytes, handle: int, version: int,
                          chain: list[str]) -> tuple[object, object | None]:
        """Authorize and begin a write: (ChunkWriter, forwarder to the next replica or None)."""

    def store_piece(self, writer, data: memoryview, block_sums: tuple[int, ...]) -> None:
        """Append verified blocks to the chunk being written."""

    def commit_chain(self, writer, expected: tuple[int, int], forward) -> object:
        """fsync here while the chain does; the chain's answer (length, checksum, replicas)."""


class BulkServer:
    """Serve chunk reads on `bind_host`:`port` (0: any free port; `.port` says which).
    `authorize(capability, handle, version)` raises unless the capability allows the read;
    `open_read(handle, version, offset, length, into=buffer)` gives (meta, spans)
    (ChunkserverService; each span is sent before the next is read into the buffer);
    `writes` takes chunk writes (None: they are refused)."""

    def __init__(self, bind_host: str, port: int, authorize: Authorize, open_read: OpenRead, *,
                 writes: ChainWrites | None = None,
                 tls: ssl.SSLContext | None = None, max_connections: int = 64,
                 io_timeout: float = 30.0, on_bytes: Callable[[int], None] | None = None,
                 on_bytes_in: Callable[[int], None] | None = None):
        self._authorize = authorize
        self._open_read = open_read
        self._writes = writes
        self._tls = tls
        self._io_timeout = io_timeout
        self._on_bytes = on_bytes
        self._on_bytes_in = on_bytes_in
        self._slots = threading.BoundedSemaphore(max_connections)
        family = socket.AF_INET6 if ":" in bind_host.strip("[]") else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((bind_host.strip("[]"), port))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="bulk-accept", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            if not self._slots.acquire(blocking=False):
                BULK_REFUSED.labels("too_many_connections").inc()
                self._refuse(conn)
                continue
            threading.Thread(target=self._serve, args=(conn,), name="bulk-conn",
                             daemon=True).start()

    def _refuse(self, conn: socket.socket) -> None:
        try:
            if self._tls is None:      # (a TLS peer would need a handshake first: just close)
                conn.settimeout(1.0)
                conn.sendall(encode_error(ResourceExhausted(
                    "too many bulk connections to this chunkserver; retry")))
        except OSError:
            pass
        finally:
            conn.close()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(self._io_timeout)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
            spans = SpanRing(MAX_SPAN)   # this connection's reads pass through it, span by span
            try:
                while self._one_request(conn, spans):
                    pass
            finally:
                spans.close()
        except ProtocolError as err:
            BULK_REFUSED.labels("truncated").inc()
            log.debug("bulk connection dropped: %s", err)
        except (OSError, ssl.SSLError) as err:       # timeouts, resets, failed handshakes
            BULK_REFUSED.labels("io").inc()
            log.debug("bulk connection dropped: %s", err)
        except Exception:                            # a bug: logged, the daemon goes on
            log.exception("bulk connection failed")
        finally:
            conn.close()
            self._slots.release()

    def _one_request(self, conn: socket.socket, spans: SpanRing) -> bool:
        """Serve one read (through `spans`) or write; False when the connection is to be
        closed."""
        head = conn.recv(REQUEST.size)
        if not head:
            return False                   # the peer closed it between requests
        if len(head) < REQUEST.size:
            head += recv_exact(conn, REQUEST.size - len(head))
        magic, fmt, op, cap_len, handle, version, a, b = REQUEST.unpack(head)
        if magic != MAGIC or fmt != FORMAT or op not in (OP_READ, OP_WRITE) \
                or cap_len > MAX_CAPABILITY or (op == OP_WRITE and a > MAX_CHAIN):
            BULK_REFUSED.labels("malformed").inc()
            conn.sendall(encode_error(InvalidArgument(
                f"malformed bulk request (magic {magic!r}, format {fmt}, op {op}, "
                f"capability of {cap_len} bytes" + (f", chain of {a} bytes)" if op == OP_WRITE
                                                    else ")"))))
            return False
        capability = bytes(recv_exact(conn, cap_len))
        if op == OP_READ:
            return self._read(conn, capability, handle, version, a, b, spans)
        chain = bytes(recv_exact(conn, a)).decode("utf-8", "replace")
        return self._write(conn, capability, handle, version, chain.split(",") if chain else [])

    def _read(self, conn: socket.socket, capability: bytes, handle: int, version: int,
              offset: int, length: int, buffer: SpanRing) -> bool:
        try:
            self._authorize(capability, handle, version)
            meta, spans = self._open_read(handle, version, offset, length, into=buffer)
        except GfsError as err:
            conn.sendall(encode_error(err))
            return True
        conn.sendall(FRAME.pack(START, 0, meta.length))
        try:
            for at, data, sums in spans:
                assert len(data) <= MAX_SPAN
                conn.sendall(encode_span(at, len(data), sums))
                conn.sendall(data)
                if self._on_bytes is not None:
                    self._on_bytes(len(data))
                BULK_BYTES.inc(len(data))
        except GfsError as err:            # a bad block: the intact ones before it went out
            conn.sendall(encode_error(err))
            return True
        finally:
            spans.close()
        conn.sendall(FRAME.pack(END, 0, 0))
        return True

    def _write(self, conn: socket.socket, capability: bytes, handle: int, version: int,
               chain: list[str]) -> bool:
        """Receive one chunk, pass it down the chain, commit; DONE or ERROR (then closed)."""
        writes = self._writes
        try:
            if writes is None:
                raise FailedPrecondition("this chunkserver takes no writes on its bulk port")
            writer, forward = writes.begin_chain_write(capability, handle, version, chain)
        except (GfsError, OSError) as err:
            self._fail_write(conn, _as_error(err, handle))
            return False
        try:
            checksum = self._receive(conn, writer, forward, handle)
            done = writes.commit_chain(writer, (writer.length, checksum), forward)
        except (GfsError, OSError) as err:    # OSError: the disk, or the writer's connection
            writer.abort()
            if forward is not None:
                forward.cancel()
            self._fail_write(conn, _as_error(err, handle))
            return False
        except BaseException:
            writer.abort()
            if forward is not None:
                forward.cancel()
            raise
        conn.sendall(encode_done(done.length, done.checksum, list(done.replicas)))
        return True

    def _receive(self, conn: socket.socket, writer, forward, handle: int) -> int:
        """The spans of a write, up to its COMMIT (whose chunk checksum is returned): each
        verified, passed on, stored. A broken frame is InvalidArgument."""
        buf = memoryview(bytearray(MAX_SPAN))
        while True:
            kind, n, value = FRAME.unpack(recv_exact(conn, FRAME.size))
            if kind == COMMIT and not n:
                if forward is not None:
                    forward.commit(value)
                return value
            try:
                if kind != DATA:
                    raise ProtocolError(f"expected DATA or COMMIT, got kind {kind} ({n} bytes)")
                if value != writer.length or writer.length % BLOCK_SIZE:
                    raise ProtocolError(f"a span at {value} after {writer.length} bytes")
                sums = recv_sums(conn, n, value)
            except ProtocolError as err:
                raise InvalidArgument(f"chunk {handle:016x}: malformed write: {err}") from None
            data = buf[:n]
            recv_into_exact(conn, data)
            bad = first_bad_block(data, sums)
            if bad >= 0:
                raise DataLoss(f"chunk {handle:016x}: block at offset "
                               f"{value + bad * BLOCK_SIZE} arrived damaged (fails its checksum)")
            if forward is not None:
                forward.send(value, data, sums)
            self._writes.store_piece(writer, data, sums)
            BULK_WRITE_BYTES.inc(n)
            if self._on_bytes_in is not None:
                self._on_bytes_in(n)

    def _fail_write(self, conn: socket.socket, err: GfsError | None) -> None:
        """Answer ERROR, then read and drop what the writer still sends for a moment, so that
        closing does not reset the connection before the writer has read the error."""
        BULK_REFUSED.labels("write_failed").inc()
        if err is None:                # the writer's connection broke: nobody to tell
            return
        try:
            conn.sendall(encode_error(err))
            if self._tls is None:          # (TLS: the session must stay up to be read)
                conn.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + DRAIN_S
            scratch = bytearray(1 << 16)
            conn.settimeout(0.2)
            while time.monotonic() < deadline and conn.recv_into(scratch):
                pass
        except (OSError, ssl.SSLError):
            pass


def _as_error(err: GfsError | OSError, handle: int) -> GfsError | None:
    """What a failed write answers: its GfsError, a disk error as INTERNAL with the system's
    words (as WriteChunk's would be), None for a broken connection to the writer."""
    if isinstance(err, GfsError):
        return err
    if isinstance(err, (ConnectionError, TimeoutError, ssl.SSLError)):
        return None
    return GfsError(f"chunk {handle:016x}: internal error: {type(err).__name__}: {err}",
                    "INTERNAL")
