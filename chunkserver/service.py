"""The Chunkserver gRPC service: chain-replicated writes, verified block reads, CopyChunk
(re-replication and repair: pull a chunk block by block from other replicas) and MoveChunk
(move a replica between this server's hot and cold tiers).

Nothing is taken on a caller's word: ReadChunk and WriteChunk need a capability signed by the
masters for that (handle, version, op) (gfs.auth.capability, verified here with no call to the
masters) or a request signed with the cluster secret by another daemon (gfs.auth.daemon: repair
reads, chain forwarding); DeleteChunk, CopyChunk and MoveChunk are orders of the master leader
and need its signature. Status is open (health checks)."""
from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import queue
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import grpc
from prometheus_client import Counter

from chunkserver.direct_reads import SpanRing
from chunkserver.store import TIERS, ChunkMeta, ChunkStore, ChunkWriter
from gfs.auth.capability import READ, SIZE, WRITE, CapabilityVerifier, UnknownKey
from gfs.auth.daemon import DaemonAuth, body_of
from gfs.auth.insecure import mode_name
from gfs.bulk import ChunkUpload
from gfs.checksum import BLOCK_SIZE
from gfs.errors import DataLoss, GfsError, InvalidArgument, ResourceExhausted, Unavailable
from gfs.metrics import observe_rpc
from gfs.rpcguard import LIMITER
from gfs.transfer import FULL_MESSAGE, Channels, TokenBucket, read_chunk
from gfs.validate import addresses, positive
from proto import chunkserver_pb2 as cpb
from proto import chunkserver_pb2_grpc as cpb_grpc
from proto import master_pb2 as pb

log = logging.getLogger(__name__)

BYTES = Counter("gfs_chunkserver_bytes_total", "Chunk bytes moved, by direction", ["direction"])
COPY_BYTES = Counter("gfs_chunkserver_copy_bytes_total",
                     "Chunk bytes pulled from other chunkservers by CopyChunk")
MOVE_BYTES = Counter("gfs_chunkserver_move_bytes_total",
                     "Chunk bytes (uncompressed) moved between tiers, by destination tier", ["tier"])
MAX_CONCURRENT_MOVES = 2          # tier moves are CPU-bound (zstd): at most this many at once
FORWARD_QUEUE = 8                 # pieces buffered towards the next replica (bounded memory)
KEY_WAIT_S = 2.0                  # how long a request may wait for capability keys to arrive
KEY_WAITERS = 4                   # requests waiting for them at once (the others are refused)
METHOD_PREFIX = "/gfs.chunkserver.Chunkserver/"


@contextmanager
def _statuses(context, method: str):
    """Instrument an RPC and turn errors into precise gRPC statuses."""
    with observe_rpc("chunkserver", method) as outcome:
        try:
            yield
        except GfsError as err:
            outcome["code"] = err.code
            context.abort(err.grpc_code, err.message)
        except grpc.RpcError as err:
            if not isinstance(err, grpc.Call):   # the caller's own request stream broke off
                outcome["code"] = "CANCELLED"
                context.abort(grpc.StatusCode.CANCELLED, "the request stream was cancelled")
            outcome["code"] = "UNAVAILABLE"      # a downstream replica failed
            context.abort(grpc.StatusCode.UNAVAILABLE, f"downstream replica: {err.details()}")
        except Exception as exc:                 # a bug, not bad input: traceback, rate-limited
            if context.code() not in (None, grpc.StatusCode.OK):
                raise                            # the handler aborted the call itself
            outcome["code"] = "INTERNAL"
            LIMITER.log(log, method, exc)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")


def unary(method):
    @functools.wraps(method)
    def wrapper(self, request, context):
        with _statuses(context, method.__name__):
            return method(self, request, context)
    return wrapper


def streaming(method):
    @functools.wraps(method)
    def wrapper(self, request, context):
        with _statuses(context, method.__name__):
            yield from method(self, request, context)
    return wrapper


def _as_bytes(view: memoryview) -> bytes:
    """The bytes of a view, without a copy when it covers a whole bytes object."""
    whole = view.obj
    return whole if isinstance(whole, bytes) and len(whole) == len(view) else bytes(view)


class Forwarder:
    """Streams a chunk to the next replica of the chain while this one writes it."""

    def __init__(self, channels: Channels, chain: list[str], header: cpb.WriteHeader,
                 timeout: float):
        self.address = chain[0]
        self._queue: queue.Queue = queue.Queue(maxsize=FORWARD_QUEUE)
        first = cpb.WriteRequest(header=cpb.WriteHeader(handle=header.handle,
                                                        version=header.version, chain=chain[1:],
                                                        capability=header.capability))
        self._future = channels.stub(self.address).WriteChunk.future(
            self._requests(first), timeout=timeout)

    def _requests(self, first: cpb.WriteRequest):
        yield first
        while (item := self._queue.get()) is not None:
            yield item

    def send(self, message: cpb.WriteRequest) -> None:
        while True:
            if self._future.done():
                self._future.result()      # raises the downstream error
                raise Unavailable(f"replica {self.address} ended the stream early")
            try:
                self._queue.put(message, timeout=0.5)
                return
            except queue.Full:
                continue

    def end(self) -> None:
        """No more messages: the next replica may commit (fsync) while this one does."""
        self.send(None)

    def result(self, timeout: float) -> cpb.WriteResponse:
        """The next replica's answer: once it and every replica after it fsync'd the chunk."""
        return self._future.result(timeout=timeout)

    def cancel(self) -> None:
        self._future.cancel()


class ChunkserverService(cpb_grpc.ChunkserverServicer):
    """`on_change()` is called after CopyChunk stored a chunk or MoveChunk moved one (wired to
    the heartbeater's poke); `scrubber` (a chunkserver.scrubber.Scrubber, optional) feeds
    Status.scrubbed_bytes."""

    def __init__(self, store: ChunkStore, address: str, rack: str, write_timeout: float = 600.0,
                 *, cluster_secret: bytes, on_change: Callable[[], None] | None = None,
                 scrubber=None, tls_ca: bytes | None = None, insecure_no_auth: bool = False):
        self.store = store
        # gfs/auth/insecure.py: serve without capabilities, obey unsigned orders, sign nothing.
        self.insecure_no_auth = insecure_no_auth
        self.address = address
        self.rack = rack
        self.daemon_auth = DaemonAuth(cluster_secret)
        self.capabilities = CapabilityVerifier(cluster_secret)   # keys: from heartbeat replies
        self.on_keys_needed: Callable[[], None] | None = None    # wired to a heartbeat poke
        self._key_waiters = threading.BoundedSemaphore(KEY_WAITERS)
        self.channels = Channels(None if insecure_no_auth else self.daemon_auth, tls_ca)
        self.write_timeout = write_timeout
        self.on_change = on_change
        self.scrubber = scrubber
        self.started = time.monotonic()
        self.master_leader = ""
        self.metrics_address = ""
        self.bulk_port = 0            # the bulk read protocol's port (chunkserver/bulk.py)
        self._moves = threading.BoundedSemaphore(MAX_CONCURRENT_MOVES)

    def _authorize_data(self, context, method: str, body: bytes, capability: bytes,
                        handle: int, version: int, op: str) -> None:
        """A read or write needs the masters' capability, or a daemon's signature."""
        if self.insecure_no_auth:
            return
        metadata = context.invocation_metadata()
        if DaemonAuth.presented(metadata) is not None:
            self.daemon_auth.verify(metadata, METHOD_PREFIX + method, body)
            return
        self.authorize_capability(capability, handle, version, op)

    def authorize_capability(self, capability: bytes, handle: int, version: int,
                             op: str) -> None:
        """Raise unless `capability` (the masters') allows `op` on (handle, version); waits a
        little for keys the masters made since the last heartbeat. (Also the bulk protocol's
        check, chunkserver/bulk.py.)"""
        if self.insecure_no_auth:
            return
        try:
            self.capabilities.verify(capability, handle, version, op)
        except (Unavailable, UnknownKey) as err:
            # Just started, or the masters made a key since the last heartbeat: ask now.
            key_id = int.from_bytes(capability[1:5], "big") if len(capability) == SIZE else 0
            if not key_id or not self.capabilities.may_learn(key_id) \
                    or not self._key_waiters.acquire(blocking=False):
                raise err from None
            try:
                if self.on_keys_needed is not None:
                    self.on_keys_needed()
                self.capabilities.wait_for_key(key_id, KEY_WAIT_S)
            finally:
                self._key_waiters.release()
            self.capabilities.verify(capability, handle, version, op)

    def _authorize_order(self, context, method: str, request) -> None:
        """Copy, delete and move orders come from the master leader, signed, each once."""
        if self.insecure_no_auth:
            return
        self.daemon_auth.verify(context.invocation_metadata(), METHOD_PREFIX + method,
                                body_of(request), once=True)

    @unary
    def WriteChunk(self, request_iterator, context):
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            raise InvalidArgument("a chunk write starts with a header message")
        h = first.header
        self._authorize_data(context, "WriteChunk", body_of(first), h.capability, h.handle,
                             h.version, WRITE)
        writer = self._begin_write(h.handle, h.version, h.chain)
        forward = Forwarder(self.channels, list(h.chain), h, self.write_timeout) if h.chain else None
        try:
            expected = (None, None)
            for msg in itertools.chain([first], request_iterator):
                if msg.data:
                    self.store_piece(writer, msg.data)
                    BYTES.labels("in").inc(len(msg.data))
                    if forward:     # (a message with the header is not passed on as it is)
                        forward.send(cpb.WriteRequest(data=msg.data) if msg is first else msg)
                if msg.has_expected:
                    expected = (msg.expected_length, msg.expected_checksum)
                    if forward:
                        forward.send(msg)
            return self.commit_chain(writer, expected, forward)
        except BaseException:
            writer.abort()
            if forward:
                forward.cancel()
            raise

    def begin_chain_write(self, capability: bytes, handle: int, version: int,
                          chain: list[str]) -> tuple[ChunkWriter, ChunkUpload | None]:
        """A chunk write on the bulk port (chunkserver/bulk.py): authorized by the masters'
        write capability (every replica checks it), the next replica's bulk write opened with
        the rest of the chain."""
        self.authorize_capability(capability, handle, version, WRITE)
        writer = self._begin_write(handle, version, chain)
        try:
            forward = self.channels.upload(chain, handle, version, capability) if chain else None
        except BaseException:
            writer.abort()
            raise
        return writer, forward

    def _begin_write(self, handle: int, version: int, chain) -> ChunkWriter:
        positive(handle, "header.handle")
        positive(version, "header.version")
        addresses(chain, "header.chain")
        return self.store.begin_write(handle, version)

    def commit_chain(self, writer: ChunkWriter, expected: tuple, forward) -> cpb.WriteResponse:
        """Pipelined: the rest of the chain commits (fsyncs) while this replica does; the
        answer goes back only when this replica's fsync and the downstream answer are in.
        `forward`: the next replica's Forwarder (gRPC) or ChunkUpload (bulk), or None."""
        if forward:
            forward.end()
        meta = writer.commit(*expected)
        replicas = [self.address]
        if forward:
            down = forward.result(self.write_timeout)
            if (down.length, down.checksum) != (meta.length, meta.checksum):
                raise DataLoss(f"replica {forward.address} stored a different chunk")
            replicas += list(down.replicas)
        return cpb.WriteResponse(length=meta.length, checksum=meta.checksum, replicas=replicas)

    def store_piece(self, writer, data, block_sums=None) -> None:
        """Append to a chunk being received (`block_sums`: of `data`'s blocks, verified by the
        caller); at the capacity, say which server is full."""
        try:
            writer.write(data, block_sums)
        except ResourceExhausted as err:
            raise ResourceExhausted(f"{FULL_MESSAGE.format(address=self.address)}: {err}") \
                from None

    @streaming
    def ReadChunk(self, request, context):
        self._authorize_data(context, "ReadChunk", body_of(request), request.capability,
                             request.handle, request.version, READ)
        meta, spans = self.open_read(request.handle, request.version, request.offset,
                                     request.length)
        sent = False
        for offset, data, sums in spans:
            BYTES.labels("out").inc(len(data))
            sent = True
            yield cpb.ReadResponse(offset=offset, data=_as_bytes(data), chunk_length=meta.length,
                                   block_sums=sums)
        if not sent:
            yield cpb.ReadResponse(offset=request.offset - request.offset % BLOCK_SIZE,
                                   chunk_length=meta.length)

    def open_read(self, handle: int, version: int, offset: int, length: int, *,
                  into: bytearray | SpanRing | None = None
                  ) -> tuple[ChunkMeta, Iterator[tuple[int, memoryview, tuple[int, ...]]]]:
        """Validate a read of [offset, offset + length) (length -1: to the end; version 0:
        whatever is stored) and open it: whole blocks only (a range ending inside a block gets
        all of that block), each span with the block sums of the sidecar it was verified
        against, so the reader checks the very sums that were stored and nothing is hashed
        twice here. Shared by ReadChunk and the bulk protocol (chunkserver/bulk.py), which
        passes a buffer of its connection (`into`, see ChunkStore.read_spans)."""
        if length < -1:
            raise InvalidArgument(f"length must be >= 0 or -1 (to the end), not {length}")
        meta = self.store.get(handle)
        if meta is not None and offset > meta.length:     # reads start at a block
            raise InvalidArgument(f"chunk {handle:016x}: offset {offset} is "
                                  f"past its end ({meta.length} bytes)")
        start = offset - offset % BLOCK_SIZE
        span = -1
        if length >= 0:
            end = offset + length
            if meta is not None and end <= meta.length:   # (else the store says what is wrong)
                end = min(meta.length, -(-end // BLOCK_SIZE) * BLOCK_SIZE)
            span = end - start
        return self.store.read_spans(handle, start, span, version or None, into=into)

    @unary
    def DeleteChunk(self, request, context):
        self._authorize_order(context, "DeleteChunk", request)
        return cpb.DeleteResponse(deleted=self.store.delete(request.handle, request.version or None))

    @unary
    def CopyChunk(self, request, context):
        """Pull (handle, version) from the sources, each block from the first that serves it
        intact; the result must match the length and checksum the master sent."""
        self._authorize_order(context, "CopyChunk", request)
        h, v = request.handle, request.version
        positive(h, "handle")
        if v == 0:
            raise InvalidArgument("CopyChunk needs the chunk version (not 0)")
        if request.length > self.store.max_chunk_size:
            raise InvalidArgument(f"chunk {h:016x}: length {request.length} exceeds the "
                                  f"maximum chunk size {self.store.max_chunk_size}")
        addresses(request.sources, "sources")
        sources = list(dict.fromkeys(a for a in request.sources if a != self.address))
        if not sources:
            raise InvalidArgument(f"chunk {h:016x}: no source to copy from "
                                  f"(other than this server)")
        held = self.store.get(h)
        if (held is not None and held.version == v and not self.store.is_corrupt(h, v)
                and (held.length, held.checksum) == (request.length, request.checksum)):
            return cpb.CopyResponse(length=held.length, checksum=held.checksum)
        # Refused if a newer version is stored; may use the repair reserve, and the room of the
        # replica it replaces (a corrupt one rebuilt in place).
        writer = self.store.begin_write(h, v, repair=True)
        bucket = TokenBucket(request.max_bytes_per_s) if request.max_bytes_per_s else None
        started = time.monotonic()

        def sink(piece: memoryview) -> None:
            self.store_piece(writer, piece)
            COPY_BYTES.inc(len(piece))
            if bucket is not None:
                bucket.take(len(piece))

        with writer:                             # aborts (removes the temp files) on any error
            read_chunk(self.channels, h, v, sources, request.length, request.checksum, 0,
                       request.length, sink, report_bad=None, timeout=self.write_timeout)
            meta = writer.commit(expected_length=request.length,
                                 expected_checksum=request.checksum)
        log.info("copied chunk %016x version %d (%d bytes) in %.2f s", h, v, meta.length,
                 time.monotonic() - started,
                 extra={"fields": {"handle": h, "version": v, "sources": sources,
                                   "repaired": held is not None and held.version == v}})
        if self.on_change is not None:
            self.on_change()
        return cpb.CopyResponse(length=meta.length, checksum=meta.checksum)

    @unary
    def MoveChunk(self, request, context):
        """Move (handle, version) to another tier of this server (version 0: whatever version is
        stored). Idempotent; every block is verified on the way (DATA_LOSS, replica marked
        corrupt, nothing moved, if one is bad); the new copy is fsync'd before the old one goes.
        At most MAX_CONCURRENT_MOVES run at once; the others wait their turn."""
        self._authorize_order(context, "MoveChunk", request)
        if request.tier not in TIERS:
            raise InvalidArgument(f"tier must be one of {', '.join(TIERS)}, "
                                  f"not {request.tier!r}")
        before = self.store.get(request.handle)
        with self._moves:
            try:
                meta = self.store.move(request.handle, request.version or None, request.tier)
            except OSError as err:         # e.g. the destination tier's disk is full
                code = "RESOURCE_EXHAUSTED" if err.errno == errno.ENOSPC else "INTERNAL"
                raise GfsError(f"chunk {request.handle:016x}: cannot move it to the "
                               f"{request.tier} tier: {err}", code) from None
        if before is None or before.tier != meta.tier or before.version != meta.version:
            MOVE_BYTES.labels(meta.tier).inc(meta.length)
            if self.on_change is not None:
                self.on_change()
        return cpb.MoveResponse(tier=meta.tier, stored_bytes=meta.stored_bytes)

    @unary
    def Status(self, request, context):
        u = self.store.usage()
        scrubbed = self.scrubber.stats()["scrubbed_bytes"] if self.scrubber is not None else 0
        return cpb.StatusResponse(
            address=self.address, rack=self.rack, chunk_count=u["chunk_count"],
            used_bytes=u["used_bytes"], capacity_bytes=u["capacity_bytes"],
            free_bytes=u["free_bytes"], master_leader=self.master_leader,
            uptime_s=time.monotonic() - self.started, pid=os.getpid(),
            metrics_address=self.metrics_address,
            corrupt_replicas=len(self.store.corrupt()), scrubbed_bytes=scrubbed,
            tiers=[pb.TierUsage(**t) for t in u["tiers"]],
            auth_mode=mode_name(self.insecure_no_auth), bulk_port=self.bulk_port)
