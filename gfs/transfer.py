"""The client's side of the data path: stream a chunk down a replica chain, read a chunk range
block by block from whichever replicas serve it correctly.

Memory stays bounded: a write is fed piece by piece (1 MiB) from its source, a read hands each
verified piece to a sink as it arrives. Also used by chunkservers (CopyChunk reads with
`read_chunk`, and the scrubber and copies pace themselves with `TokenBucket`).
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import grpc

from gfs.auth.daemon import DaemonAuth, SigningInterceptor
from gfs.bulk import BulkLinks, ChunkUpload, ProtocolError, block_sums, client_context, spans
from gfs.auth.tls import channel_credentials
from gfs.callstream import BlockingCallStream
from gfs.checksum import BLOCK_SIZE, ChunkChecksummer, block_checksum, chunk_checksum
from gfs.errors import DataLoss, GfsError, Unavailable, from_code, from_grpc
from proto import chunkserver_pb2 as cpb
from proto import chunkserver_pb2_grpc as cpb_grpc

# How a chunkserver at its capacity names itself in the error (the client leaves it out).
FULL_MESSAGE = "chunkserver {address} is full"

PIECE_SIZE = 1 << 20
# The largest message a chunkserver accepts: write pieces are PIECE_SIZE, everything else is
# small. grpc refuses a larger one with RESOURCE_EXHAUSTED before it is decoded, so one request
# cannot make a chunkserver hold more than this.
MAX_REQUEST_BYTES = 4 * PIECE_SIZE
REFUSALS = ("UNAUTHENTICATED", "PERMISSION_DENIED")
ENV_BULK_READS = "GFS_BULK_READS"     # "0": read chunks over gRPC only (comparisons, debugging)
ENV_BULK_WRITES = "GFS_BULK_WRITES"   # "0": write chunks over gRPC only (comparisons, debugging)
BULK_IO_TIMEOUT = 30.0                # a bulk write's peer silent this long is given up
BULK_MIN_BYTES = PIECE_SIZE           # reads this large go over the bulk protocol, smaller ones gRPC
FAILED_S = 30.0                       # a replica that failed a read is tried last for this long
CHANNEL_OPTIONS = [("grpc.http2.bdp_probe", 0),
                   ("grpc.max_receive_message_length", 64 << 20),
                   ("grpc.max_send_message_length", 64 << 20),
                   ("grpc.enable_retries", 0),
                   # A daemon that restarts is back within seconds: gRPC's default reconnect
                   # backoff (1 s growing to 120 s) would keep a channel failing fast long after
                   # it returned. Small clusters afford trying again at least once a second.
                   ("grpc.initial_reconnect_backoff_ms", 200),
                   ("grpc.max_reconnect_backoff_ms", 1000)]


class ReplicaLoad:
    """Chunk reads in flight per chunkserver, so that each read starts at the least busy
    replica; ties go by a rotation keyed on the chunk, so the concurrent chunk reads of one
    large get spread over all replicas (a get striped over them) instead of all hitting the
    first one listed."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._lock = threading.Lock()
        self._busy: dict[str, int] = {}
        self._failed: dict[str, float] = {}     # address -> when a read from it last failed
        self._clock = clock

    def order(self, replicas: list[str], key: int) -> list[str]:
        """`replicas`, least busy first; those that failed a read in the last FAILED_S last
        (a dead server listed among the replicas is not tried first again and again)."""
        n = len(replicas)
        recent = self._clock() - FAILED_S
        with self._lock:
            ranked = sorted(range(n), key=lambda i: (self._failed.get(replicas[i], 0) > recent,
                                                     self._busy.get(replicas[i], 0),
                                                     (i - key) % n))
        return [replicas[i] for i in ranked]

    def failed(self, address: str) -> None:
        with self._lock:
            self._failed[address] = self._clock()
            if len(self._failed) > 1024:
                self._failed.clear()

    @contextmanager
    def reading(self, address: str) -> Iterator[None]:
        with self._lock:
            self._busy[address] = self._busy.get(address, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._busy[address] - 1
                if left:
                    self._busy[address] = left
                else:
                    del self._busy[address]


class Channels:
    """One gRPC channel per address, shared by threads (masters and chunkservers alike).
    With `daemon_auth` (gfs.auth.daemon.DaemonAuth; daemons only) every call is signed with
    the cluster secret; with `tls_ca` (PEM) channels use TLS and verify servers against it."""

    def __init__(self, daemon_auth: DaemonAuth | None = None, tls_ca: bytes | None = None):
        self._interceptor = SigningInterceptor(daemon_auth) if daemon_auth else None
        # Readers holding capabilities read chunks over the bulk protocol (gfs/bulk.py) where
        # the chunkserver offers it; daemons sign gRPC calls and stay on ReadChunk. Writes go
        # over it too (a chunkserver forwards a bulk write down the chain over it as well).
        self.bulk = BulkLinks(client_context(tls_ca) if tls_ca else None)
        self.bulk_reads = daemon_auth is None and os.environ.get(ENV_BULK_READS, "1") != "0"
        self.bulk_writes = os.environ.get(ENV_BULK_WRITES, "1") != "0"
        self._bulk_ports: dict[str, int] = {}
        self._credentials = channel_credentials(tls_ca) if tls_ca else None
        self.signs_calls = daemon_auth is not None
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[tuple[str, type], object] = {}
        self._call_streams: dict[str, BlockingCallStream] = {}
        self.load = ReplicaLoad()

    def channel(self, address: str) -> grpc.Channel:
        with self._lock:
            ch = self._channels.get(address)
            if ch is None:
                ch = self._new_channel(grpc, address)
                if self._interceptor is not None:
                    ch = grpc.intercept_channel(ch, self._interceptor)
                self._channels[address] = ch
            return ch

    def call_stream(self, address: str) -> BlockingCallStream | None:
        """The stream that carries this process's unary Master calls to `address`
        (gfs/callstream.py); None where calls go one at a time: signed calls (each signature
        covers its own call), or a master that does not serve the stream."""
        stream = self._call_streams.get(address)
        if stream is None:
            if self.signs_calls:
                return None
            channel = self.channel(address)
            with self._lock:
                stream = self._call_streams.setdefault(address,
                                                       BlockingCallStream(channel, address))
        return None if stream.unsupported else stream

    def aio_channel(self, address: str) -> grpc.aio.Channel:
        """A new grpc.aio channel to `address` for the running event loop, with this object's
        options and TLS (never signed: daemons' calls stay on the blocking channels)."""
        if self.signs_calls:
            raise RuntimeError("signed calls have no asyncio channel")
        return self._new_channel(grpc.aio, address)

    def _new_channel(self, kind, address: str):
        """A channel of `kind` (the grpc or grpc.aio module) with this object's options and
        TLS."""
        if self._credentials is not None:
            return kind.secure_channel(address, self._credentials, CHANNEL_OPTIONS)
        return kind.insecure_channel(address, CHANNEL_OPTIONS)

    def stub(self, address: str, kind: type = cpb_grpc.ChunkserverStub):
        """A stub of `kind` for `address`, built once (building one costs a few dozen µs)."""
        key = (address, kind)
        stub = self._stubs.get(key)
        if stub is None:
            stub = self._stubs[key] = kind(self.channel(address))
        return stub

    def bulk_port(self, address: str, timeout: float = 2.0) -> int:
        """The bulk port `address` offers (0: none, or no answer in `timeout`); asked once per
        chunkserver (its Status RPC), and again after a bulk connection to it broke off."""
        port = self._bulk_ports.get(address)
        if port is None:
            try:
                port = self.stub(address).Status(cpb.StatusRequest(), timeout=timeout).bulk_port
            except grpc.RpcError:
                return 0                 # ReadChunk says what is wrong (and we ask again)
            self._bulk_ports[address] = port
        return port

    def read_stream(self, address: str, handle: int, version: int, offset: int, length: int,
                    capability: bytes, timeout: float) -> Iterator:
        """A chunk read from one replica: ReadResponse messages (gRPC) or gfs.bulk.Span
        (bulk protocol), alike in offset, data, block_sums and chunk_length."""
        # Small reads stay on the gRPC channel (no second connection, no Status lookup).
        bulky = length < 0 or length >= BULK_MIN_BYTES
        port = self.bulk_port(address) if capability and bulky and self.bulk_reads else 0
        if port:
            return self._forget_port_on_failure(address, self.bulk.read(
                address, port, handle, version, offset, length, capability, timeout))
        return self.stub(address).ReadChunk(
            cpb.ReadRequest(handle=handle, version=version, offset=offset, length=length,
                            capability=capability), timeout=timeout)

    def upload(self, chain: list[str], handle: int, version: int,
               capability: bytes) -> ChunkUpload:
        """A chunk write over the bulk protocol to chain[0], which passes it down the rest of
        `chain`; Unavailable if chain[0] offers no bulk port."""
        port = self.bulk_port(chain[0], timeout=BULK_IO_TIMEOUT / 3)
        if not port:
            raise Unavailable(f"replica {chain[0]} takes no bulk writes (no bulk port)")
        try:
            return self.bulk.upload(chain[0], port, handle, version, capability,
                                    list(chain[1:]), BULK_IO_TIMEOUT)
        except Unavailable:
            # Nothing was sent: a server restarted since its port was looked up listens on a
            # new one, and every hop of a chain (the client and each forwarding replica) has
            # its own cache - failing here would spend one of the writer's retries per hop.
            self._bulk_ports.pop(chain[0], None)
            fresh = self.bulk_port(chain[0], timeout=BULK_IO_TIMEOUT / 3)
            if not fresh or fresh == port:
                raise
        return self.bulk.upload(chain[0], fresh, handle, version, capability, list(chain[1:]),
                                BULK_IO_TIMEOUT)

    def _forget_port_on_failure(self, address: str, spans: Iterator) -> Iterator:
        """`spans`, forgetting `address`'s bulk port if they break off: a chunkserver restarted
        since its port was looked up listens on a new one, and the next read asks again."""
        try:
            yield from spans
        except Unavailable:
            self._bulk_ports.pop(address, None)
            raise

    def alive(self, address: str, timeout: float = 1.0) -> bool:
        """Does the chunkserver answer at all? (used to steer retries away from dead ones)"""
        try:
            self.stub(address).Status(cpb.StatusRequest(), timeout=timeout)
            return True
        except grpc.RpcError:
            return False

    def close(self) -> None:
        self.bulk.close()
        with self._lock:
            streams, self._call_streams = list(self._call_streams.values()), {}
        for stream in streams:
            stream.close()
        with self._lock:
            for ch in self._channels.values():
                ch.close()
            self._channels.clear()
            self._stubs.clear()


@dataclass
class WrittenChunk:
    handle: int
    length: int
    checksum: int
    replicas: list[str]


def write_chunk(channels: Channels, replicas: list[str], handle: int, version: int,
                pieces: Iterable[bytes | memoryview], timeout: float = 600.0,
                progress: Callable[[int], None] | None = None, *,
                capability: bytes = b"") -> WrittenChunk:
    """Stream `pieces` to replicas[0], which forwards down the chain; returns once every replica
    has fsync'd the chunk and agreed on its length and checksum. `capability`: the write
    capability of AddChunk (the chain forwards it). Over the bulk protocol where replicas[0]
    offers it (and GFS_BULK_WRITES is not 0), else over gRPC."""
    if channels.bulk_writes and capability and channels.bulk_port(replicas[0]):
        return _write_chunk_bulk(channels, replicas, handle, version, pieces, timeout, progress,
                                 capability)
    summer = ChunkChecksummer()

    def requests() -> Iterator[cpb.WriteRequest]:
        yield cpb.WriteRequest(header=cpb.WriteHeader(handle=handle, version=version,
                                                      chain=replicas[1:], capability=capability))
        for piece in pieces:
            summer.update(piece)
            yield cpb.WriteRequest(data=piece if isinstance(piece, bytes) else bytes(piece))
            if progress:
                progress(len(piece))
        yield cpb.WriteRequest(has_expected=True, expected_length=summer.length,
                               expected_checksum=summer.finish())

    try:
        resp = channels.stub(replicas[0]).WriteChunk(requests(), timeout=timeout)
    except grpc.RpcError as err:
        raise from_grpc(err.code(), f"writing chunk {handle} via {replicas[0]}: "
                                    f"{err.details() or err.code().name}") from None
    return _written(handle, replicas, summer.length, chunk_checksum(summer.blocks), resp)


def _write_chunk_bulk(channels: Channels, replicas: list[str], handle: int, version: int,
                      pieces: Iterable[bytes | memoryview], timeout: float,
                      progress: Callable[[int], None] | None, capability: bytes) -> WrittenChunk:
    """write_chunk over the bulk protocol: block-aligned spans, each block hashed once here."""
    sums: list[int] = []
    length = 0
    try:
        upload = channels.upload(replicas, handle, version, capability)
        try:
            for offset, span in spans(pieces):
                span_sums = block_sums(span)
                upload.send(offset, span, span_sums)
                sums += span_sums
                length = offset + len(span)
                if progress:
                    progress(len(span))
            upload.commit(chunk_checksum(sums))
            resp = upload.result(timeout)
        finally:
            upload.close()
    except GfsError as err:
        raise from_code(err.code, f"writing chunk {handle} via {replicas[0]}: "
                                  f"{err.message}") from None
    except ProtocolError as err:
        raise Unavailable(f"writing chunk {handle} via {replicas[0]}: bulk protocol: "
                          f"{err}") from None
    return _written(handle, replicas, length, chunk_checksum(sums), resp)


def _written(handle: int, replicas: list[str], length: int, checksum: int,
             resp) -> WrittenChunk:
    """The chain's answer (WriteResponse or gfs.bulk.Committed), checked against what was
    sent: the same length and checksum, confirmed by every replica."""
    if resp.length != length or resp.checksum != checksum:
        raise DataLoss(f"chunk {handle}: replicas stored {resp.length} bytes / {resp.checksum:x}, "
                       f"sent {length} / {checksum:x}")
    if sorted(resp.replicas) != sorted(replicas):
        raise Unavailable(f"chunk {handle}: only {list(resp.replicas)} of {replicas} confirmed")
    return WrittenChunk(handle, resp.length, resp.checksum, list(resp.replicas))


class BadReplica(Exception):
    """A replica sent data that does not match its checksums."""


class BadBlock(BadReplica):
    """One block failed its checksum: the replica may still serve the blocks after it."""


def _verified_span(resp: cpb.ReadResponse) -> tuple[memoryview, list[int], BadBlock | None]:
    """The bytes of a response's blocks that match their sums (every block, or those before
    the first that does not), their sums, and the error of that first bad block (None). Each
    block is hashed once, here; the good ones are handed on as one piece."""
    data = memoryview(resp.data)
    block_sums = list(resp.block_sums)
    if len(data) > len(block_sums) * BLOCK_SIZE or (
            block_sums and len(data) <= (len(block_sums) - 1) * BLOCK_SIZE):
        raise BadReplica("response length does not match its block checksums")
    for i, expected in enumerate(block_sums):
        if block_checksum(data[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE]) != expected:
            return data[:i * BLOCK_SIZE], block_sums[:i], BadBlock(
                f"block at offset {resp.offset + i * BLOCK_SIZE} fails its checksum")
    return data, block_sums, None


def read_chunk(channels: Channels, handle: int, version: int, replicas: list[str],
               chunk_length: int, chunk_sum: int, offset: int, length: int,
               sink: Callable[[memoryview], None],
               report_bad: Callable[[str, str], None] | None = None,
               timeout: float = 600.0, *, capability: bytes = b"") -> None:
    """Deliver bytes [offset, offset+length) of a chunk to `sink`, in order, each block verified.
    Each piece is a buffer of its own (never a view of one reused), so the sink may keep it.

    Failover is per block: on any error the next replica continues at the block where the last
    one stopped. A replica that stopped on a bad block (its own DATA_LOSS, or a block failing
    verification here) is asked again for the blocks after it once another replica got past
    that block, so a chunk whose every replica has some bad block is still read whole as long
    as each block is intact somewhere. A replica failing in any other way (unreachable, wrong
    version or length, ...) is not asked again. Each replica with bad data is reported once.
    A whole-chunk read is also checked against the chunk checksum in the metadata.

    `capability`: the read capability from the masters (daemons sign their reads instead). If
    replicas refuse it and none serves, the refusal is raised (Unauthenticated or
    PermissionDenied), so the caller can fetch a fresh one.
    """
    end = offset + length
    done = offset
    sums: dict[int, int] = {}
    errors: list[str] = []
    stuck_at: dict[str, int] = {}       # replica -> position of its bad block
    out: set[str] = set()               # replicas not worth asking again
    reported: set[str] = set()
    refused: GfsError | None = None    # a replica's refusal of the capability

    def bad(address: str, why: str) -> None:
        if report_bad and address not in reported:
            reported.add(address)
            report_bad(address, why)

    replicas = channels.load.order(replicas, handle)
    while done < end:
        start_of_round = done
        for address in replicas:
            if done >= end:
                break
            if address in out or stuck_at.get(address) == done:
                continue
            try:
                with channels.load.reading(address):
                    stream = channels.read_stream(address, handle, version, done, end - done,
                                                  capability, timeout)
                    for resp in stream:
                        if resp.chunk_length != chunk_length:
                            raise BadReplica(f"holds {resp.chunk_length} bytes, "
                                             f"metadata says {chunk_length}")
                        good, good_sums, bad_block = _verified_span(resp)
                        first = resp.offset // BLOCK_SIZE
                        sums.update(zip(range(first, first + len(good_sums)), good_sums))
                        lo, hi = max(done, resp.offset), min(end, resp.offset + len(good))
                        if lo < hi:
                            sink(good[lo - resp.offset:hi - resp.offset])
                            done = hi
                        if bad_block is not None:
                            raise bad_block
                if done < end:
                    raise BadReplica(f"stream ended at {done} of {end}")
            except BadBlock as err:
                errors.append(f"{address}: {err}")
                stuck_at[address] = done
                bad(address, str(err))
            except BadReplica as err:
                errors.append(f"{address}: {err}")
                out.add(address)
                bad(address, str(err))
            except ProtocolError as err:
                errors.append(f"{address}: bulk protocol: {err}")
                out.add(address)
                channels.load.failed(address)
            except (grpc.RpcError, GfsError) as err:
                failure = err if isinstance(err, GfsError) else \
                    from_grpc(err.code(), err.details() or err.code().name)
                errors.append(f"{address}: {failure.message}")
                if failure.code == "DATA_LOSS":
                    stuck_at[address] = done
                    bad(address, failure.message or "data loss")
                else:
                    out.add(address)
                    if failure.code in REFUSALS:
                        refused = failure
                    elif failure.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                        channels.load.failed(address)
        if done == start_of_round:
            break                       # nobody got any further: give up
    if done < end and refused is not None:
        raise from_code(refused.code, f"chunk {handle}: {refused.message}")
    if done < end:
        detail = "; ".join(errors[-8:]) or "no replica is known"
        raise Unavailable(f"chunk {handle}: no replica could serve bytes {done}..{end}: {detail}")
    whole = offset == 0 and length == chunk_length
    n_blocks = -(-chunk_length // BLOCK_SIZE)
    if whole and len(sums) == n_blocks and chunk_checksum([sums[i] for i in range(n_blocks)]) != chunk_sum:
        raise DataLoss(f"chunk {handle}: data does not match the checksum in the metadata")


class TokenBucket:
    """Paces a byte stream to `rate` bytes per second: call take(n) after (or before) moving n
    bytes; it sleeps as long as needed. The bucket starts empty and holds at most `burst`
    bytes of unused allowance (default: 1/20 s worth, at least one block), so the rate holds
    over short spans too. Not thread-safe: one bucket per stream. `clock` and `sleep` are
    injectable (tests, or a sleep that returns early when its owner stops)."""

    def __init__(self, rate: float, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep):
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate!r}")
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(float(BLOCK_SIZE), rate / 20)
        self._clock = clock
        self._sleep = sleep
        self._tokens = 0.0
        self._last = clock()

    def take(self, n: int) -> float:
        """Account for n bytes; sleep until they fit the rate. Returns the seconds slept."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= n
        if self._tokens >= 0:
            return 0.0
        delay = -self._tokens / self.rate
        self._sleep(delay)
        return delay


def is_retryable(err: GfsError) -> bool:
    """May a chunk write that failed this way succeed on another chain? (RESOURCE_EXHAUSTED:
    a replica was full; the master leaves it out once its heartbeat says so.)"""
    return err.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "DATA_LOSS", "NOT_FOUND",
                        "RESOURCE_EXHAUSTED")


def full_servers(err: GfsError, chain: list[str]) -> list[str]:
    """The servers of `chain` that a write error says are full (see FULL_MESSAGE)."""
    return [a for a in chain if FULL_MESSAGE.format(address=a) in err.message]
