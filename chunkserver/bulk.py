"""The chunkserver's side of the bulk read protocol (wire format: gfs/bulk.py).

One thread per connection, at most `max_connections` at once (the next one is told
RESOURCE_EXHAUSTED and closed). Each read is authorized like ReadChunk (the masters' read
capability for that chunk and version) and opened through the same code
(ChunkserverService.open_read): whole blocks, each verified against the sidecar before it
leaves, sent with those block sums.

Bounded: one span (1 MiB) in memory per connection; a request larger than its fixed header and
a 256-byte capability is refused before anything is read into memory; a peer that stops
sending or stops reading for `io_timeout` seconds is disconnected. A malformed request gets an
ERROR frame and the connection is closed; a refused or failed read gets an ERROR frame and the
connection takes the next request.
"""
from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
from typing import Callable, Iterator

from prometheus_client import Counter

from gfs.bulk import (END, FORMAT, FRAME, MAGIC, MAX_CAPABILITY, MAX_SPAN, OP_READ, REQUEST,
                      DATA, START, ProtocolError, encode_error, recv_exact)
from gfs.errors import GfsError, InvalidArgument, ResourceExhausted

log = logging.getLogger(__name__)

BULK_BYTES = Counter("gfs_chunkserver_bulk_bytes_total",
                     "Chunk bytes sent over the bulk read protocol")
BULK_REFUSED = Counter("gfs_chunkserver_bulk_refused_total",
                       "Bulk connections closed for breaking the protocol, by reason", ["reason"])

Authorize = Callable[[bytes, int, int], None]
OpenRead = Callable[[int, int, int, int], tuple[object, Iterator[tuple[int, memoryview, tuple]]]]


class BulkServer:
    """Serve chunk reads on `bind_host`:`port` (0: any free port; `.port` says which).
    `authorize(capability, handle, version)` raises unless the capability allows the read;
    `open_read(handle, version, offset, length)` gives (meta, spans) (ChunkserverService)."""

    def __init__(self, bind_host: str, port: int, authorize: Authorize, open_read: OpenRead, *,
                 tls: ssl.SSLContext | None = None, max_connections: int = 64,
                 io_timeout: float = 30.0, on_bytes: Callable[[int], None] | None = None):
        self._authorize = authorize
        self._open_read = open_read
        self._tls = tls
        self._io_timeout = io_timeout
        self._on_bytes = on_bytes
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
            while self._one_request(conn):
                pass
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

    def _one_request(self, conn: socket.socket) -> bool:
        """Serve one read; False when the connection is to be closed."""
        head = conn.recv(REQUEST.size)
        if not head:
            return False                   # the reader closed it between requests
        if len(head) < REQUEST.size:
            head += recv_exact(conn, REQUEST.size - len(head))
        magic, fmt, op, cap_len, handle, version, offset, length = REQUEST.unpack(head)
        if magic != MAGIC or fmt != FORMAT or op != OP_READ or cap_len > MAX_CAPABILITY:
            BULK_REFUSED.labels("malformed").inc()
            conn.sendall(encode_error(InvalidArgument(
                f"malformed bulk request (magic {magic!r}, format {fmt}, op {op}, "
                f"capability of {cap_len} bytes)")))
            return False
        capability = bytes(recv_exact(conn, cap_len))
        try:
            self._authorize(capability, handle, version)
            meta, spans = self._open_read(handle, version, offset, length)
        except GfsError as err:
            conn.sendall(encode_error(err))
            return True
        conn.sendall(FRAME.pack(START, 0, meta.length))
        try:
            for at, data, sums in spans:
                assert len(data) <= MAX_SPAN
                conn.sendall(FRAME.pack(DATA, len(data), at) + struct.pack(f"<{len(sums)}Q", *sums))
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
