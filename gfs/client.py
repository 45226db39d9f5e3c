"""The synchronous Python client for the masters.

It follows leader redirects, retries across masters with exponential backoff under one overall
deadline, and tags every mutating request with (client_id, seq) so a retry after a leader change
returns the original result instead of applying the command twice.
"""
from __future__ import annotations

import asyncio
import contextvars
import copy
import fcntl
import hashlib
import io
import os
import random
import stat
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Awaitable, BinaryIO, Callable, Iterator

import grpc

from gfs import backupfile
from gfs.auth.daemon import DaemonAuth
from gfs.auth.tls import read_pem
from gfs.auth.tokens import acting_for, bearer
from gfs.config import ENV_TLS_CA, resolve_masters, resolve_tls_ca, resolve_token
from gfs.identity_client import IdentityCalls
from gfs.oidc_calls import OidcCalls
from gfs.routes_client import RouteCalls
from gfs.identity_client import message_fields as _fields
from gfs.paths import utf8
from gfs.checksum import inline_checksum
from gfs.direct_io import DirectAppender
from gfs.fsutil import pwrite_all
from gfs.reach import Reachability
from gfs.errors import (
    DataLoss,
    FailedPrecondition,
    GfsError,
    InvalidArgument,
    Unauthenticated,
    Unavailable,
    from_grpc,
)
from gfs.transfer import (
    PIECE_SIZE,
    Channels,
    WrittenChunk,
    full_servers,
    is_retryable,
    read_chunk,
    write_chunk,
)
from proto import master_pb2 as pb
from proto import master_pb2_grpc as pb_grpc

LEADER_METADATA_KEY = "gfs-leader"
_FIELD_WORDS = {"src": "source path", "dst": "destination path"}
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
ONCE = {grpc.StatusCode.UNAVAILABLE}     # redirects and unreachable masters only
INLINE_MAX = 64 << 10      # the masters' default --inline-max


@dataclass
class ChunkInfo:
    handle: int
    index: int
    version: int
    length: int
    checksum: int
    replicas: list[str] = field(default_factory=list)
    index_offset: int = 0      # where the chunk starts in the file
    capability: bytes = field(default=b"", repr=False)   # lets us read it for a while


@dataclass
class FileInfo:
    path: str
    inode: int
    type: str
    size: int
    mode: int
    owner: str
    ctime_ms: int
    mtime_ms: int
    replication: int
    storage_class: str
    chunk_size: int
    chunks: list[ChunkInfo] = field(default_factory=list)
    visibility: str = ""       # effective: private, visible, public
    inline: bool = False       # the bytes are in the metadata (master/inline.py), no chunks
    inline_checksum: int = 0
    inline_data: bytes | None = field(default=None, repr=False)   # from stat(for_read=True)
    xattrs: dict[str, str] = field(default_factory=dict)
    # (first, end): `chunks` holds only the chunks of these bytes (a stat with a `span`);
    # None: every chunk of the file.
    chunk_span: tuple[int, int] | None = None

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"

    def to_dict(self) -> dict:
        d = asdict(self)
        del d["inline_data"]              # the file's bytes, not a property
        if d["chunk_span"] is None:
            del d["chunk_span"]
        for c in d["chunks"]:
            del c["capability"]           # a short-lived credential, not a property of the file
        return d

    @classmethod
    def from_proto(cls, m: pb.FileInfo) -> "FileInfo":
        # A listing converts thousands of these: the map is copied key by key (dict() of a
        # protobuf map goes through the Mapping ABC in Python, ~2x slower) and empty repeated
        # fields are not walked.
        xattrs = m.xattrs
        span = m.chunk_span if m.HasField("chunk_span") else None
        chunks = [ChunkInfo(c.handle, c.index, c.version, c.length, c.checksum, list(c.replicas),
                            c.offset, capability=c.capability)
                  for c in m.chunks] if m.chunks else []
        if span is None:
            _with_offsets(chunks)         # the whole list: offsets are the lengths summed
        return cls(path=m.path, inode=m.inode, type=m.type, size=m.size, mode=m.mode,
                   owner=m.owner, ctime_ms=m.ctime_ms, mtime_ms=m.mtime_ms,
                   replication=m.replication, storage_class=m.storage_class,
                   chunk_size=m.chunk_size, visibility=m.visibility, inline=m.inline,
                   inline_checksum=m.inline_checksum,
                   xattrs={k: xattrs[k] for k in xattrs} if xattrs else {},
                   inline_data=m.inline_data if m.inline and (m.inline_data or not m.size) else None,
                   chunks=chunks,
                   chunk_span=None if span is None else (span.offset, span.offset + span.length))


def _with_offsets(chunks: list[ChunkInfo]) -> None:
    pos = 0
    for c in chunks:
        c.index_offset = pos
        pos += c.length


def _chunk_ranges(info: FileInfo, start: int, end: int) -> Iterator[tuple[ChunkInfo, int, int]]:
    """(chunk, first byte, end byte) within each chunk that overlaps [start, end) of the file."""
    for c in info.chunks:
        lo, hi = max(start, c.index_offset), min(end, c.index_offset + c.length)
        if lo < hi:
            yield c, lo - c.index_offset, hi - c.index_offset


def read_span(offset: int, length: int) -> tuple[int, int] | None:
    """The `span` to stat a file with for reading bytes offset..offset+length (-1: to the end);
    None for the whole file (or arguments `download` refuses with a clear error)."""
    if offset < 0 or length < -1 or (offset == 0 and length == -1):
        return None
    return offset, length


TO_THE_END = (1 << 64) - 1           # a StatRequest.chunk_span length: every byte from the offset


def stat_request(path: str, stale_ok: bool = False, for_read: bool = False,
                 span: tuple[int, int] | None = None) -> pb.StatRequest:
    """`Client.stat`'s request (shared with gfs/aio.py)."""
    request = pb.StatRequest(path=utf8(path), stale_ok=stale_ok, for_read=for_read)
    if span is not None:
        offset, length = span
        if offset < 0 or length < -1:
            raise InvalidArgument(f"span {span}: the offset must be at least 0 and the length "
                                  "-1 (to the end) or more")
        request.chunk_span.offset = offset
        request.chunk_span.length = TO_THE_END if length == -1 else length
    return request


class ChunkPieces:
    """The pieces of one chunk of a source; `repeatable` sources can be read again to retry."""

    def __init__(self, read_at: Callable[[int, int], bytes] | None, stream: BinaryIO | None,
                 start: int, length: int, first: bytes = b"", known_length: int = 0):
        self.repeatable = read_at is not None
        # The chunk's bytes if known (placement wants room for them): a stream may end sooner.
        self.known_length = length if self.repeatable else known_length
        self._read_at, self._stream = read_at, stream
        self._start, self._length, self._first = start, length, first

    def durable(self, chunk: "ChunkInfo", inode: int) -> None:
        """`put` wrote this chunk of the upload `inode`: it is fsync'd on every replica of
        `chunk` (which carries a capability to read it back for a while; `upload_chunks` gives
        fresh ones until the upload commits). A source that need not keep its bytes any longer
        may drop them (the mount's growing spool does)."""

    def failed(self) -> None:
        """`put` gave this chunk up (no more retries): it will never be `durable`. A source
        waiting for that (the mount's writer, holding bytes in memory) stops waiting."""

    def open(self) -> Iterator[bytes]:
        if self._read_at is not None:
            for pos in range(self._start, self._start + self._length, PIECE_SIZE):
                yield self._read_at(pos, min(PIECE_SIZE, self._start + self._length - pos))
            return
        # A stream may hand out its bytes as they came (read_pieces: no joining copy).
        read_pieces = getattr(self._stream, "read_pieces", None) or (
            lambda n: [self._stream.read(n)])
        sent, batch = 0, [self._first]
        while True:
            got = 0
            for piece in batch:
                if piece:
                    yield piece
                    got += len(piece)
            sent += got
            if not got or sent >= self._length:
                return
            batch = read_pieces(min(PIECE_SIZE, self._length - sent))


def checked_inline(info: FileInfo, data: bytes) -> bytes:
    """`data`, the bytes of the inline file `info`, once they match its size and checksum
    (DataLoss otherwise: never served)."""
    if len(data) != info.size or inline_checksum(data) != info.inline_checksum:
        raise DataLoss(f"the inline bytes of {info.path} do not match their checksum")
    return data


class UploadSource:
    """What `Client.put` reads: a local file, seekable (known size, read by offset) or a stream.
    A caller may hand `put` an instance of its own subclass (the mount's growing spool,
    gfs/mount/streaming.py) whose `chunk` waits for bytes still being written."""

    expected_size = -1     # the bytes to come, if known (below); -1: unknown

    def __init__(self, f: BinaryIO):
        self._f = f
        self._lock = threading.Lock()
        try:
            self.size = os.fstat(f.fileno()).st_size
            self.seekable = f.seekable() and stat_is_regular(f.fileno())
        except (OSError, io.UnsupportedOperation, AttributeError):
            self.seekable = f.seekable() if hasattr(f, "seekable") else False
            self.size = _stream_size(f) if self.seekable else -1
        # The bytes to come, if known: a seekable source's size, or what a stream declares
        # (`expected_length`, e.g. a request body's Content-Length); -1 if unknown.
        declared = getattr(f, "expected_length", None)
        self.expected_size = self.size if self.seekable else (
            declared if isinstance(declared, int) and declared >= 0 else -1)

    def _read_at(self, pos: int, n: int) -> bytes:
        try:
            return os.pread(self._f.fileno(), n, pos)
        except (OSError, io.UnsupportedOperation, AttributeError):
            with self._lock:
                self._f.seek(pos)
                return self._f.read(n)

    def read_all(self) -> bytes | None:
        """The whole of a small seekable source; None if it changed size while read."""
        data = self._read_at(0, self.size + 1)
        return data if len(data) == self.size else None

    def before_abort(self) -> None:
        """`put` failed and is about to abort the upload, which makes its chunks garbage: the
        last moment a source can read back chunks it was told were `durable`."""

    def chunk(self, index: int, chunk_size: int) -> ChunkPieces | None:
        """The pieces of chunk `index`, or None past the end of the source."""
        if self.seekable:
            start = index * chunk_size
            if start >= self.size:
                return None
            return ChunkPieces(self._read_at, None, start, min(chunk_size, self.size - start))
        wanted = min(PIECE_SIZE, chunk_size)
        first = self._f.read(wanted)
        if not first:
            return None
        ended = len(first) < wanted and _short_read_is_eof(self._f)
        return ChunkPieces(None, self._f, 0, chunk_size, first,
                            known_length=len(first) if ended else 0)


def _short_read_is_eof(f: BinaryIO) -> bool:
    """Does a short read(n) of `f` mean the end of the stream? For buffered binary streams
    (stdin's buffer, BytesIO) it does, except on a terminal."""
    return isinstance(f, io.BufferedIOBase) and not (hasattr(f, "isatty") and f.isatty())


def stat_is_regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


def _stream_size(f: BinaryIO) -> int:
    here = f.tell()
    f.seek(0, io.SEEK_END)
    size = f.tell()
    f.seek(here)
    return size


ENV_DIRECT_DOWNLOADS = "GFS_DIRECT_DOWNLOADS"   # "0": downloads to files through the page cache
DIRECT_DOWNLOAD_MIN = 8 << 20                  # smaller downloads go through the page cache


def direct_downloads() -> bool:
    """Do downloads write large ranges of regular files around the page cache? (the default)"""
    return os.environ.get(ENV_DIRECT_DOWNLOADS, "1") != "0"


class _Sink:
    """Where downloaded bytes go. Whatever the caller hands over ends up exactly as if the bytes
    had been written to it in order at its current position, and its file offset ends after
    them (so `(gfs cat A; gfs cat B) > out` and `gfs cat A B >> out` keep every byte).

    A regular file opened without O_APPEND takes parallel chunk writes at offsets (`pwrite`
    from its current position), then has its offset moved past the last byte in `finish()`.
    Anything else (pipes, terminals, sockets, files opened for append, where Linux's `pwrite`
    ignores the offset, and file objects without a descriptor) takes the bytes in order."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self._lock = threading.Lock()
        self._end = 0           # furthest byte written, relative to where the sink started
        self._fd, self.seekable = -1, False
        try:
            fd = f.fileno()
            positional = stat_is_regular(fd) and not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND
        except (OSError, io.UnsupportedOperation, AttributeError, ValueError):
            positional = False
        if positional:
            f.flush()                   # bytes the caller buffered come first
            self._base = f.tell()
            self._fd, self.seekable = fd, True
        else:
            self._base = 0

    def write_at(self, pos: int, data: memoryview) -> None:
        """Write `data` at `pos` bytes from the start; in-order sinks get positions in order."""
        if self.seekable:
            pwrite_all(self._fd, data, self._base + pos)
        else:
            with self._lock:
                self._f.write(data)
        self.wrote_to(pos + len(data))

    def wrote_to(self, end: int) -> None:
        """Bytes up to `end` (from the start) were written."""
        with self._lock:
            self._end = max(self._end, end)

    def range_writer(self, pos: int, direct: bool) -> "_RangeWriter":
        """A writer of bytes from `pos` on (handed over in order); with `direct` (a large
        download) and a regular file, around the page cache (gfs/direct_io.py: a download is
        rarely read back at once, and fresh cache pages cost most of a get's CPU here)."""
        appender = None
        if direct and self.seekable:
            try:
                appender = DirectAppender(self._fd, f"/proc/self/fd/{self._fd}",
                                          start=self._base + pos, pad_tail=False)
            except OSError:                    # no /proc, or the file cannot be reopened
                appender = None
            if appender is not None and not appender.direct:   # refused by the file system
                appender.close()
                appender = None
        return _RangeWriter(self, pos, appender)

    def finish(self) -> None:
        """Leave the file offset after the last byte written, as sequential writes would."""
        if self.seekable:
            # Via the end first: a buffered reader's read-ahead is stale now, and a seek within
            # it would only move the buffer pointer, not the descriptor's offset.
            self._f.seek(0, io.SEEK_END)
            self._f.seek(self._base + self._end)
        elif hasattr(self._f, "flush"):
            self._f.flush()


class _RangeWriter:
    """The bytes of one range of a _Sink, in order: through a DirectAppender, or `write_at`."""

    def __init__(self, sink: _Sink, pos: int, direct: DirectAppender | None):
        self._sink, self.pos, self._direct = sink, pos, direct

    def write(self, piece: memoryview) -> None:
        if self._direct is None:
            self._sink.write_at(self.pos, piece)
        else:
            self._direct.write(piece)
        self.pos += len(piece)

    def __enter__(self) -> "_RangeWriter":
        return self

    def __exit__(self, kind, *_) -> None:
        """Write what a direct writer still stages (also after a failure: the bytes handed
        over are in the file, as with plain writes), then account for them in the sink."""
        if self._direct is None:
            return
        try:
            self._direct.finish()
        except OSError:
            if kind is None:
                raise
            # (else the download already failed: that first error is the one to report)
        finally:
            self._direct.close()
            self._sink.wrote_to(self.pos)


READ_AHEAD_BYTES = 16 << 20   # of each chunk range read ahead for an in-order sink


class _Abandoned(Exception):
    """The download a read-ahead belongs to stopped (not a GfsError: read_chunk must not take
    it for a replica's failure and try the next one)."""


class _ReadAhead:
    """The pieces of one chunk range, read ahead for an in-order sink: `write` (the reader)
    waits while `budget` bytes are held; `drain` (the writer) yields them in order, then
    raises what the reader ended with. Pieces are kept as handed over: read_chunk's sink gets
    buffers of their own, not views of one reused."""

    def __init__(self, budget: int):
        self.pos = 0                       # bytes received
        self._budget, self._held = budget, 0
        self._pieces: deque = deque()
        self._cond = threading.Condition()
        self._ended, self._error, self._abandoned = False, None, False

    def write(self, piece: memoryview) -> None:
        with self._cond:
            while self._held >= self._budget and not self._abandoned:
                self._cond.wait()
            if self._abandoned:
                raise _Abandoned()
            self._pieces.append(piece)
            self._held += len(piece)
            self.pos += len(piece)
            self._cond.notify_all()

    def end(self, error: BaseException | None = None) -> None:
        with self._cond:
            self._ended, self._error = True, error
            self._cond.notify_all()

    def abandon(self) -> None:
        with self._cond:
            self._abandoned = True
            self._pieces.clear()
            self._cond.notify_all()

    def drain(self) -> Iterator[memoryview]:
        while True:
            with self._cond:
                while not self._pieces and not self._ended:
                    self._cond.wait()
                if not self._pieces:
                    if self._error is not None:
                        raise self._error
                    return
                piece = self._pieces.popleft()
                self._held -= len(piece)
                self._cond.notify_all()
            yield piece


@contextmanager
def _opened(target: str | BinaryIO, mode: str, wrap):
    """`wrap` a caller's binary file object as is, or a local path opened in `mode` (closed
    afterwards), or one already wrapped; a path that cannot be opened is one clear error."""
    if isinstance(target, wrap):
        yield target
        return
    if not isinstance(target, (str, os.PathLike)):
        yield wrap(target)
        return
    try:
        f = open(target, mode)
    except OSError as err:
        verb = "write" if "w" in mode else "read"
        raise InvalidArgument(f"cannot {verb} {target}: {err.strerror}") from None
    with f:
        yield wrap(f)


class _Sequencer:
    """Hands out request sequence numbers and tracks which results were received."""

    def __init__(self):
        self._lock = threading.Lock()
        self._next = 1
        self._inflight: set[int] = set()

    def begin(self) -> tuple[int, int]:
        with self._lock:
            seq = self._next
            self._next += 1
            self._inflight.add(seq)
            ack = min(self._inflight) - 1
            return seq, ack

    def end(self, seq: int) -> None:
        with self._lock:
            self._inflight.discard(seq)


# Master calls made in the current context (a one-element list; None: not counted). A server
# sets a fresh cell per request to report how many master RPCs the request cost.
MASTER_CALLS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "gfs_master_calls", default=None)


class _Attempts:
    """The tries of one master call: which master to ask, how long each try may wait, and what
    a failed try means (follow the leader hint, pause, or give up). Shared by the blocking and
    the asyncio calls, so both follow leaders and retry alike."""

    def __init__(self, client: "Client", deadline: float | None, attempt_timeout: float | None,
                 retryable: set):
        self.client = client
        self.total = deadline or client.deadline
        self.stop_at = time.monotonic() + self.total
        self.attempt_timeout = attempt_timeout or client.attempt_timeout
        self.retryable = retryable
        self.attempt, self.last = 0, "no attempt made"

    def start(self) -> tuple[str, float]:
        """(master to ask, seconds this try may take)."""
        counter = MASTER_CALLS.get()
        if counter is not None:
            counter[0] += 1
        address = self.client._candidate()
        return address, max(0.05, min(self.attempt_timeout, self.stop_at - time.monotonic()))

    def answered(self, address: str) -> None:
        self.client._note(address, True, None)
        self.client._reach.answered(address)

    def failed(self, address: str, err: grpc.RpcError) -> float:
        """The pause before the next try; raises the GfsError to give up with."""
        client = self.client
        code, details = err.code(), err.details() or ""
        if code not in self.retryable:
            self.answered(address)
            raise from_grpc(code, details) from None
        hint = dict(err.trailing_metadata() or ()).get(LEADER_METADATA_KEY)
        client._note(address, False, hint if hint != address else None)
        client._reach.failed(address, details)
        self.last = f"{address}: {details or code.name}"
        self.attempt += 1
        if time.monotonic() >= self.stop_at:
            raise Unavailable(client._reach.timeout_message(self.total, self.last))
        if (unreachable := client._reach.give_up()) is not None:
            raise unreachable
        if hint:
            return 0.0
        # no leader known (an election is on): ask again within 0.25 s
        return min(0.25, 0.02 * (2 ** min(self.attempt, 4))) * random.uniform(0.5, 1.0)


class Client(IdentityCalls, OidcCalls, RouteCalls):
    """Namespace operations against a gfs cluster (thread-safe).

    `token`: the bearer token to call with (default: $GFS_TOKEN, else the one `gfs login` or
    `gfs cluster up` remembered; none = anonymous, which sees only what is public).
    `user`: for administrators, whose trash the trash calls work on ("" = the caller's own)."""

    def __init__(self, masters: str | list[str] | None = None, *, deadline: float = 30.0,
                 attempt_timeout: float = 5.0, client_id: bytes | None = None,
                 user: str = "", token: str | None = None,
                 daemon_auth: DaemonAuth | None = None, tls_ca: str | None = None,
                 inline_max: int = INLINE_MAX):
        """`daemon_auth`: sign every call with the cluster secret (chunkservers' heartbeats).
        `tls_ca`: CA certificate file of a cluster serving TLS (default: GFS_TLS_CA, else what
        `gfs cluster up --tls` recorded). `inline_max`: `put` offers files up to this size to
        the masters to store inline (one command); they may refuse (their --inline-max), then
        the file goes to chunks and this client stops offering files that large."""
        self.masters = resolve_masters(masters)
        ca_file = tls_ca or (resolve_tls_ca() if masters is None else os.environ.get(ENV_TLS_CA))
        self.user = user
        self.token = resolve_token(token)
        self._metadata = bearer(self.token)
        self.deadline = deadline
        self.attempt_timeout = attempt_timeout
        self.client_id = client_id or os.urandom(16)
        self._seq = _Sequencer()
        self._lock = threading.Lock()
        self._leader: str | None = None
        self._rr = random.randrange(len(self.masters))
        self._channels = Channels(daemon_auth, read_pem(ca_file, "CA certificate")
                                  if ca_file else None)
        self._reach = Reachability(self.masters)
        self._owns_channels = True
        self._inline_max = [inline_max]      # one cell, shared by acting_for views

    @property
    def inline_max(self) -> int:
        """The largest file `put` offers to store inline (lowered when the masters refuse)."""
        return self._inline_max[0]

    @inline_max.setter
    def inline_max(self, value: int) -> None:
        self._inline_max[0] = value

    def acting_for(self, delegate: bytes | None) -> "Client":
        """A view of this client (same connections) whose calls act for the token with hash
        `delegate` (None: anonymous); this client's token must be an administrator's
        (master/callers.py). Close only the original."""
        view = copy.copy(self)
        view._metadata = acting_for(self.token, delegate)
        return view

    # --- plumbing ------------------------------------------------------------------------------

    def close(self) -> None:
        if self._owns_channels:
            self._channels.close()

    def for_token(self, token: str) -> "Client":
        """A client calling as `token` ("" = anonymous) over this one's connections (a server
        acting for many callers, such as the gateway's REST and S3 apps). Closing it leaves
        the connections open; they are this client's."""
        other = copy.copy(self)
        other.token = token
        other._metadata = bearer(token)
        other.client_id = os.urandom(16)
        other._seq = _Sequencer()
        other._owns_channels = False
        return other

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _stub(self, address: str, kind: type = pb_grpc.MasterStub):
        return self._channels.stub(address, kind)

    def _candidate(self) -> str:
        with self._lock:
            if self._leader:
                return self._leader
            self._rr = (self._rr + 1) % len(self.masters)
            return self.masters[self._rr]

    def learn_masters(self, addresses) -> None:
        """Add master addresses this client did not know (members added to the group since it
        was configured): it then keeps working when all the addresses it started with are gone."""
        with self._lock:
            for a in addresses:
                if a and a not in self.masters:
                    self.masters.append(a)      # Reachability shares this list

    def _note(self, address: str, ok: bool, hint: str | None) -> None:
        if hint and hint not in self.masters:
            self.learn_masters([hint])
        with self._lock:
            if hint:
                self._leader = hint
            elif ok:
                self._leader = address
            elif self._leader == address:
                self._leader = None

    def _call(self, method: str, request, *, deadline: float | None = None,
              service: type = pb_grpc.MasterStub, attempt_timeout: float | None = None,
              retryable: set = RETRYABLE):
        """Call `method` on the leader, following redirects and retrying until the deadline
        (each attempt waits at most `attempt_timeout`, default the client's; a change that
        must not run twice retries UNAVAILABLE only)."""
        tries = _Attempts(self, deadline, attempt_timeout, retryable)
        while True:
            address, timeout = tries.start()
            stream = self._channels.call_stream(address) if service is pb_grpc.MasterStub \
                else None
            try:
                if stream is not None:
                    response = stream.call(method, request, timeout=timeout,
                                           metadata=self._metadata)
                else:
                    response = getattr(self._stub(address, service), method)(
                        request, timeout=timeout, metadata=self._metadata)
            except grpc.RpcError as err:
                pause = tries.failed(address, err)
            else:
                tries.answered(address)
                return response
            if pause:
                time.sleep(pause)

    async def call_async(self, send: Callable[..., Awaitable], method: str, request):
        """`_call` for asyncio callers: the same leader-following and retries, each attempt
        made by `send(address, method, request, timeout, metadata)` (gfs/aio.py: over a call
        stream or a grpc.aio call), nothing blocking."""
        tries = _Attempts(self, None, None, RETRYABLE)
        while True:
            address, timeout = tries.start()
            try:
                response = await send(address, method, request, timeout, self._metadata)
            except grpc.RpcError as err:
                pause = tries.failed(address, err)
            else:
                tries.answered(address)
                return response
            if pause:
                await asyncio.sleep(pause)

    @property
    def leader(self) -> str | None:
        """The master this client last found to be the leader."""
        return self._leader

    def call(self, method: str, request, deadline: float | None = None):
        """Call any Master RPC on the leader (redirects, retries): for daemons and tools."""
        return self._call(method, request, deadline=deadline)

    def _mutate(self, method: str, request_cls, service: type = pb_grpc.MasterStub, **fields):
        with self.tagged(request_cls, fields) as request:
            return self._call(method, request, service=service)

    @contextmanager
    def tagged(self, request_cls, fields: dict):
        """A mutating request built from `fields`, tagged with this client's (client_id, seq)
        for exactly-once execution; the seq counts as in flight until the block ends."""
        for name, value in fields.items():       # a clear error, not protobuf's UnicodeError
            if isinstance(value, str):
                utf8(value, _FIELD_WORDS.get(name, name))
        seq, ack = self._seq.begin()
        try:
            header = pb.RequestHeader(client_id=self.client_id, seq=seq, ack_seq=ack)
            yield request_cls(header=header, **fields)
        finally:
            self._seq.end(seq)

    # --- namespace -----------------------------------------------------------------------------

    def mkdir(self, path: str, parents: bool = False, mode: int = 0o755, owner: str = "") -> int:
        return self._mutate("Mkdir", pb.MkdirRequest, path=path, parents=parents, mode=mode,
                            owner=owner).inode

    def stat(self, path: str, stale_ok: bool = False, for_read: bool = False,
             span: tuple[int, int] | None = None) -> FileInfo:
        """`for_read`: the data is about to be read (the leader counts it for `auto` tiering).
        `span` (offset, length; -1: to the end; 0: no chunk at all): only the chunks holding
        those bytes (one ranged read of a file of thousands of chunks need not carry them all);
        the FileInfo's `chunk_span` says which bytes its chunks cover."""
        return FileInfo.from_proto(self._call("Stat", stat_request(path, stale_ok, for_read,
                                                                   span)).info)

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
            return True
        except GfsError as err:
            if err.code == "NOT_FOUND":
                return False
            raise

    def list(self, path: str, stale_ok: bool = False, page_size: int = 1000,
             brief: bool = False) -> Iterator[FileInfo]:
        """Entries of a directory (or the file itself), sorted by name, fetched page by page;
        `brief`: without their chunk lists (`chunks` empty: sizes, dates and attributes only,
        much less for the masters to read and send in a directory of large files)."""
        start_after = ""
        while True:
            entries, start_after = self.list_page(path, start_after, page_size, stale_ok, brief)
            yield from entries
            if not start_after:
                return

    def list_page(self, path: str, start_after: str = "", limit: int = 1000,
                  stale_ok: bool = False, brief: bool = False) -> tuple[list[FileInfo], str]:
        """One page of `list`: the entries after the name `start_after`, and the `start_after`
        of the next page ("" after the last)."""
        resp = self._call("List", pb.ListRequest(path=utf8(path), start_after=start_after,
                                                 limit=limit, stale_ok=stale_ok, brief=brief))
        return [FileInfo.from_proto(e) for e in resp.entries], resp.next

    def rename(self, src: str, dst: str, overwrite: bool = False) -> None:
        self._mutate("Rename", pb.RenameRequest, src=src, dst=dst, overwrite=overwrite)

    def compose(self, dest: str, sources: list[str], *, overwrite: bool = False,
                mode: int = 0o644, owner: str = "", storage_class: str = "",
                xattrs: dict[str, str] | None = None) -> int:
        """Make `dest` the concatenation of the files `sources`, in order, without copying a
        byte: their chunks become dest's and the sources are removed, in one atomic step
        (master/compose.py). Returns dest's inode."""
        for source in sources:
            utf8(source, "source path")
        return self._mutate("Compose", pb.ComposeRequest, dest=dest, sources=list(sources),
                            overwrite=overwrite, mode=mode, owner=owner,
                            storage_class=storage_class, xattrs=xattrs or {}).inode

    def delete(self, path: str, recursive: bool = False, skip_trash: bool = False) -> int:
        """Remove a path; it goes to this user's trash unless `skip_trash` (or the cluster keeps
        no trash). Returns the trash entry's id, 0 when deleted for good."""
        return self._mutate("Delete", pb.DeleteRequest, path=path, recursive=recursive,
                            skip_trash=skip_trash).trash_id

    # --- trash ---------------------------------------------------------------------------------

    def trash_list(self, all_users: bool = False) -> list[dict]:
        """This user's trash entries (or everyone's), oldest first."""
        resp = self._call("TrashList", pb.TrashListRequest(user=self.user, all_users=all_users))
        return [_fields(e) for e in resp.entries]

    def trash_restore(self, entry_id: int, dst: str = "") -> str:
        """Put a trash entry back where it was (or at `dst`); returns its path."""
        return self._mutate("TrashRestore", pb.TrashRestoreRequest, id=entry_id, user=self.user,
                            dst=dst).path

    def trash_purge(self, ids: list[int] | None = None, all_users: bool = False) -> int:
        """Delete trash entries for good now (all of this user's when `ids` is empty)."""
        return self._mutate("TrashPurge", pb.TrashPurgeRequest, user=self.user,
                            all_users=all_users, ids=ids or []).purged

    # --- storage classes -----------------------------------------------------------------------

    def set_class(self, path: str, storage_class: str, recursive: bool = False) -> int:
        """Set a file's or directory's storage class (hot, cold, auto; "" clears a directory's);
        returns how many inodes changed."""
        return self._mutate("SetClass", pb.SetClassRequest, path=path,
                            storage_class=storage_class, recursive=recursive).changed

    def set_attr(self, path: str, *, mode: int | None = None,
                 mtime_ms: int | None = None) -> tuple[int, int]:
        """chmod and/or touch a file or directory; returns its (mode, mtime_ms) after."""
        fields = {k: v for k, v in (("mode", mode), ("mtime_ms", mtime_ms)) if v is not None}
        resp = self._mutate("SetAttr", pb.SetAttrRequest, path=path, **fields)
        return resp.mode, resp.mtime_ms

    def backup(self, out: BinaryIO, progress: Callable[[int], None] | None = None) -> dict:
        """Write a backup of the cluster's metadata (master/backup.py format) to `out`
        (administrators); returns its header. The bytes are checked against the header's
        length and SHA-256 as they arrive: DataLoss if they do not match."""
        self._call("Stat", pb.StatRequest(path="/"))            # find the leader
        try:
            stream = self._stub(self._leader or self._candidate()).Backup(
                pb.Empty(), metadata=self._metadata, timeout=max(self.deadline, 3600))
            first = next(stream)
            header = backupfile.make_header(first.applied_index, first.created_ms, first.size,
                                        first.sha256)
            out.write(backupfile.header_bytes(header))
            h, size = hashlib.sha256(), 0
            for message in stream:
                h.update(message.data)
                size += len(message.data)
                out.write(message.data)
                if progress:
                    progress(len(message.data))
        except grpc.RpcError as err:
            raise from_grpc(err.code(), err.details() or "") from None
        except StopIteration:
            raise DataLoss("the master ended the backup before its header") from None
        if size != header["size"] or h.hexdigest() != header["sha256"]:
            raise DataLoss(f"the backup arrived damaged ({size} of {header['size']} bytes, "
                           "or a SHA-256 mismatch)")
        return header

    def tier_status(self, path: str) -> dict:
        resp = self._call("TierStatus", pb.TierStatusRequest(path=utf8(path)))
        out = _fields(resp)
        out["chunks"] = [{**_fields(c), "replicas": [_fields(r) for r in c.replicas]}
                         for c in resp.chunks]
        return out

    # --- administration ------------------------------------------------------------------------

    def health(self) -> dict:
        """The cluster's redundancy as the leader sees it (`gfs health`); `silent`: live
        chunkservers that missed their last heartbeats, [{"address", "for_s"}]."""
        resp = self._call("Health", pb.Empty())
        out = _fields(resp)
        out["silent"] = [{"address": s.address, "for_s": s.for_s} for s in resp.silent]
        return out

    def balance_status(self) -> dict:
        """The disk-use balancer: state (off, starting, paused, balancing, blocked, balanced),
        reason, spread and threshold (fractions), servers (address, use, capacity_bytes,
        free_bytes, chunk_count, moving_out, moving_in), moves_in_flight, moved, moved_bytes,
        failures, rate_bytes_s, bytes_to_move, eta_s (-1 unknown), rate_limit_bytes_s."""
        resp = self._call("BalanceStatus", pb.Empty())
        out = _fields(resp)
        out["servers"] = [_fields(s) for s in resp.servers]
        return out

    def gc_plan(self, limit: int = 0, collect: bool = False) -> dict:
        """Orphan and stale replicas and when each goes; `collect` runs a pass first."""
        resp = self._call("GcPlan", pb.GcPlanRequest(limit=limit, collect=collect))
        out = _fields(resp)
        out["orphans"] = [_fields(o) for o in resp.orphans]
        return out

    # --- the masters' Raft group (master/members.py) ----------------------------------------

    def members(self) -> dict:
        """The group as the leader sees it: members (role, match index), term, commit index."""
        return _members(self._call("Members", pb.Empty()))

    def member_add(self, raft_address: str, grpc_address: str, timeout: float = 60.0) -> dict:
        """Add a master (running with --join); returns once it has caught up."""
        return _members(self._call("MemberAdd", pb.MemberAddRequest(
            raft_address=raft_address, grpc_address=grpc_address), deadline=timeout,
            attempt_timeout=timeout, retryable=ONCE))

    def member_remove(self, member: str, timeout: float = 30.0) -> dict:
        return _members(self._call("MemberRemove", pb.MemberRemoveRequest(member=member),
                                   deadline=timeout, attempt_timeout=timeout, retryable=ONCE))

    def step_down(self, to: str = "", timeout: float = 10.0) -> dict:
        """Hand the leadership to member `to` (default: the most up-to-date follower)."""
        moved = self._call("StepDown", pb.StepDownRequest(to=to), deadline=timeout,
                           attempt_timeout=timeout, retryable=ONCE)
        with self._lock:
            self._leader = moved.leader_grpc or None
        return _fields(moved)

    def rotate_keys(self) -> int:
        """Make a new chunk-capability key on the masters; its id."""
        return self._call("RotateKeys", pb.Empty()).key_id

    def create(self, path: str, *, replication: int = 0, storage_class: str = "",
               chunk_size: int = 0, mode: int = 0o644, owner: str = "",
               overwrite: bool = False, size_hint: int = 0) -> int:
        """Start an upload: a pending file, invisible until `commit`. Returns its inode.
        `size_hint`: the bytes to come, if known (a quota refuses them before they are sent)."""
        return self._mutate("Create", pb.CreateRequest, path=path, replication=replication,
                            storage_class=storage_class, chunk_size=chunk_size, mode=mode,
                            owner=owner, overwrite=overwrite, size_hint=size_hint).inode

    def add_chunk(self, inode: int, index: int, exclude: list[str] | None = None,
                  length_hint: int = 0) -> pb.AddChunkResponse:
        """Allocate chunk `index` of a pending upload; `length_hint`: its bytes if known."""
        return self._mutate("AddChunk", pb.AddChunkRequest, inode=inode, index=index,
                            exclude=exclude or [], length_hint=length_hint)

    def commit(self, inode: int, size: int, chunks: list[tuple[int, int, int]],
               xattrs: dict[str, str] | None = None) -> int:
        """Publish a pending upload atomically; chunks are (handle, length, checksum) in order."""
        return self._commit(inode, size, chunks, xattrs).inode

    def _commit(self, inode: int, size: int, chunks: list[tuple[int, int, int]],
                xattrs: dict[str, str] | None) -> pb.CommitResponse:
        return self._mutate("Commit", pb.CommitRequest, inode=inode, size=size,
                            chunks=[pb.ChunkCommit(handle=h, length=n, checksum=c)
                                    for h, n, c in chunks], xattrs=xattrs or {})

    def upload_chunks(self, inode: int) -> list[ChunkInfo]:
        """The chunks of a pending upload this client's identity created, with fresh read
        capabilities (lengths and checksums are known only at commit: 0)."""
        resp = self._call("UploadChunks", pb.UploadChunksRequest(inode=inode))
        return [ChunkInfo(c.handle, c.index, c.version, c.length, c.checksum, list(c.replicas),
                          capability=c.capability) for c in resp.chunks]

    def abort(self, inode: int) -> None:
        self._mutate("Abort", pb.AbortRequest, inode=inode)

    # --- data ---------------------------------------------------------------------------------

    def put(self, source: str | BinaryIO | UploadSource, path: str, *, replication: int = 0,
            chunk_size: int = 0, storage_class: str = "", overwrite: bool = False,
            parallel: int = 4, progress: Callable[[int], None] | None = None,
            mode: int = 0o644,
            xattrs: Callable[[], dict[str, str]] | None = None) -> FileInfo:
        """Upload a local file (path or binary file object) to `path` with permission bits
        `mode`. The file appears atomically when every chunk is fsync'd on all its replicas; on
        failure nothing appears. Seekable sources upload `parallel` chunks at once and retry a
        failed chunk elsewhere. A seekable source of at most `inline_max` bytes is stored
        inline in the metadata by one command (if the masters accept it), its `xattrs` in the
        same command. `xattrs()`, called once the bytes are read (so it may describe them: the
        S3 gateway's ETag), gives the extended attributes committed with the file."""
        with _opened(source, "rb", UploadSource) as src:
            if src.seekable and 0 <= src.size <= self.inline_max:
                info = self._put_inline(src, path, replication, storage_class, overwrite, mode,
                                        xattrs)
                if info is not None:
                    if progress:
                        progress(info.size)
                    return info
            created = None
            expected = src.expected_size
            try:
                # With bytes to come, chunk 0 is allocated by the create's own command.
                created = self._mutate("Create", pb.CreateRequest, path=path,
                                       replication=replication, storage_class=storage_class,
                                       chunk_size=chunk_size, mode=mode, overwrite=overwrite,
                                       size_hint=max(expected, 0), first_chunk=expected > 0)
                written, size = self._upload_chunks(created, src, parallel, progress)
            except BaseException as err:
                if isinstance(err, GfsError):
                    err.before_commit = True   # the namespace is certainly unchanged
                self._abandon(created, src)
                raise
            chunks = [(w.handle, w.length, w.checksum) for w in written]
            try:
                committed = self._commit(created.inode, size, chunks,
                                         xattrs() if xattrs else None)
            except BaseException:
                self._abandon(created, src)
                raise
        if committed.HasField("info"):      # the file as committed: no Stat needed
            return FileInfo.from_proto(committed.info)
        inode = committed.inode
        try:
            return self.stat(path)
        except GfsError as err:
            if err.code != "NOT_FOUND":
                raise
        # Committed, then removed or replaced by someone else before we could look: describe
        # what this call stored.
        return FileInfo(path=path, inode=inode, type="file", size=size, mode=mode, owner="",
                        ctime_ms=0, mtime_ms=0, replication=created.replication,
                        storage_class=storage_class or "hot", chunk_size=created.chunk_size,
                        chunks=_with_offsets([ChunkInfo(w.handle, i, 1, w.length, w.checksum,
                                                        w.replicas)
                                              for i, w in enumerate(written)]))

    def _put_inline(self, src: "UploadSource", path: str, replication: int, storage_class: str,
                    overwrite: bool, mode: int,
                    xattrs: Callable[[], dict[str, str]] | None) -> FileInfo | None:
        """Store a small file inline (master/inline.py), with its extended attributes in the
        same command; None when the masters want chunks."""
        data = src.read_all()
        if data is None:
            return None
        try:
            resp = self._mutate("PutInline", pb.PutInlineRequest, **self.inline_fields(
                data, path, replication, storage_class, overwrite, mode, xattrs))
        except GfsError as err:
            self.inline_refused(err, len(data))
            return None
        return FileInfo.from_proto(resp.info)

    @staticmethod
    def inline_fields(data: bytes, path: str, replication: int = 0, storage_class: str = "",
                      overwrite: bool = False, mode: int = 0o644,
                      xattrs: Callable[[], dict[str, str]] | None = None) -> dict:
        """The fields of a PutInline request storing `data` at `path`."""
        return dict(path=path, data=data, checksum=inline_checksum(data),
                    replication=replication, storage_class=storage_class, mode=mode,
                    overwrite=overwrite, xattrs=xattrs() if xattrs else None)

    def inline_refused(self, err: GfsError, size: int) -> None:
        """After a PutInline of `size` bytes failed with `err`: re-raise it, unless the masters
        only refused to store that much inline (then offer less from now on)."""
        if err.code != "OUT_OF_RANGE":
            raise err
        self.inline_max = min(self.inline_max, size - 1)

    def _abandon(self, created: pb.CreateResponse | None, src: "UploadSource") -> None:
        """Best-effort abort of an upload; if it fails the upload stays pending and invisible,
        and garbage collection reclaims its chunks."""
        if created is not None:
            src.before_abort()
            try:
                self.abort(created.inode)
            except GfsError:
                pass

    def _upload_chunks(self, created: pb.CreateResponse, src: "UploadSource", parallel: int,
                       progress: Callable[[int], None] | None) -> tuple[list[WrittenChunk], int]:
        chunk_size = created.chunk_size
        workers = parallel if src.seekable else 1
        results: dict[int, Future] = {}
        with ThreadPoolExecutor(max_workers=workers) as pool:
            index = 0
            while True:
                pending = [f for f in results.values() if not f.done()]
                if len(pending) >= workers:
                    wait(pending, return_when=FIRST_COMPLETED)
                for f in results.values():
                    if f.done() and f.exception():
                        raise f.exception()
                piece_source = src.chunk(index, chunk_size)
                if piece_source is None:
                    break
                # Chunks are allocated in index order here; only the bytes move in parallel.
                if index == 0 and created.HasField("first_chunk"):
                    alloc = created.first_chunk
                else:
                    alloc = self.add_chunk(created.inode, index,
                                           length_hint=piece_source.known_length)
                results[index] = pool.submit(self._upload_one, created.inode, index, piece_source,
                                             alloc, progress)
                index += 1
            written = [results[i].result() for i in sorted(results)]
        return written, sum(w.length for w in written)

    def _upload_one(self, inode: int, index: int, pieces: "ChunkPieces",
                    alloc: pb.AddChunkResponse, progress: Callable[[int], None] | None,
                    attempts: int = 3) -> WrittenChunk:
        try:
            return self._write_one(inode, index, pieces, alloc, progress, attempts)
        except BaseException:
            pieces.failed()
            raise

    def _write_one(self, inode: int, index: int, pieces: "ChunkPieces",
                   alloc: pb.AddChunkResponse, progress: Callable[[int], None] | None,
                   attempts: int) -> WrittenChunk:
        failed: list[str] = []
        for attempt in range(attempts):
            if attempt:    # same handle, next version, on a chain without the servers that failed
                alloc = self.add_chunk(inode, index, exclude=failed,
                                       length_hint=pieces.known_length)
            try:
                written = write_chunk(self._channels, list(alloc.replicas), alloc.handle,
                                      alloc.version, pieces.open(), progress=progress,
                                      capability=alloc.capability)
                pieces.durable(ChunkInfo(written.handle, index, alloc.version, written.length,
                                         written.checksum, list(written.replicas),
                                         capability=alloc.read_capability), inode)
                return written
            except GfsError as err:
                if not (pieces.repeatable and is_retryable(err)) or attempt == attempts - 1:
                    raise
                full = full_servers(err, list(alloc.replicas))
                failed += [a for a in alloc.replicas if a not in failed
                           and (a in full or not self._channels.alive(a))]
        raise AssertionError("unreachable")

    def get(self, path: str, sink: str | BinaryIO, *, offset: int = 0, length: int = -1,
            parallel: int = 4, progress: Callable[[int], None] | None = None) -> int:
        """Download `path` (or the range offset..offset+length) into a local path or binary file
        object; returns the number of bytes written. Every byte is checksum-verified; a replica
        that fails is skipped (and reported if its data is bad)."""
        return self.download(self.stat(path, for_read=True, span=read_span(offset, length)), sink,
                             offset=offset, length=length, parallel=parallel, progress=progress)

    def download(self, info: FileInfo, sink: str | BinaryIO, *, offset: int = 0,
                 length: int = -1, parallel: int = 4,
                 progress: Callable[[int], None] | None = None) -> int:
        """`get` of a file already stat'ed (`stat(path, for_read=True)`): readers that fetch many
        ranges of one file (fsspec, the mount) ask the masters once, not once per range."""
        path = info.path
        if info.is_dir:
            raise FailedPrecondition(f"{path} is a directory")
        if length < -1:
            raise InvalidArgument(f"length must be -1 (to the end) or at least 0, not {length}")
        if offset < 0 or offset > info.size:
            raise InvalidArgument(f"offset {offset} is outside {path} ({info.size} bytes)")
        end = info.size if length < 0 else min(info.size, offset + length)
        covered = info.chunk_span
        if covered is not None and not info.inline and not covered[0] <= offset <= end <= covered[1]:
            raise InvalidArgument(f"{path} was stat'ed for bytes {covered[0]}-{covered[1]} only, "
                                  f"not {offset}-{end}: stat it for those bytes")
        if info.inline:
            return self._write_inline(info, sink, offset, end, progress)
        with _opened(sink, "wb", _Sink) as out:
            direct = end - offset >= DIRECT_DOWNLOAD_MIN and direct_downloads()
            ranges = list(_chunk_ranges(info, offset, end))

            def job(c: ChunkInfo, lo: int, hi: int) -> None:
                with out.range_writer(c.index_offset + lo - offset, direct) as w:
                    self._read_range(path, c, lo, hi, w, progress)

            try:
                if parallel <= 1 or len(ranges) <= 1:
                    for r in ranges:
                        job(*r)
                elif out.seekable:            # each chunk's range written where it belongs
                    with ThreadPoolExecutor(max_workers=parallel) as pool:
                        for f in [pool.submit(job, *r) for r in ranges]:
                            f.result()
                else:
                    self._read_ahead_in_order(path, ranges, out, parallel, progress)
            finally:
                out.finish()
        return end - offset

    def _read_ahead_in_order(self, path: str, ranges: list[tuple["ChunkInfo", int, int]],
                             out: "_Sink", parallel: int,
                             progress: Callable[[int], None] | None) -> None:
        """Chunk ranges read `parallel` at a time into a sink that takes bytes only in order (a
        pipe, a terminal): the ranges after the one being written are read ahead into memory,
        at most READ_AHEAD_BYTES each (their readers wait beyond), so the chunkservers' disks
        and streams overlap as they do for a file."""
        pending = [_ReadAhead(READ_AHEAD_BYTES) for _ in ranges]

        def job(r: tuple[ChunkInfo, int, int], into: _ReadAhead) -> None:
            try:
                self._read_range(path, *r, into, None)
            except BaseException as err:
                into.end(err)
            else:
                into.end()

        pool = ThreadPoolExecutor(max_workers=parallel)
        try:
            for r, into in zip(ranges, pending):
                pool.submit(job, r, into)
            pos = 0
            for into in pending:
                for piece in into.drain():
                    out.write_at(pos, piece)
                    pos += len(piece)
                    if progress:
                        progress(len(piece))
        finally:
            for into in pending:
                into.abandon()
            pool.shutdown(wait=True, cancel_futures=True)

    def _write_inline(self, info: FileInfo, sink: str | BinaryIO, offset: int, end: int,
                      progress: Callable[[int], None] | None) -> int:
        """The bytes of an inline file (fetched with the stat) to the sink, checksum-verified."""
        data = info.inline_data
        if data is None:                  # stat'ed without for_read: fetch the bytes now
            data = self.stat(info.path, for_read=True).inline_data
            if data is None:
                raise FailedPrecondition(f"{info.path} changed while it was being read")
        checked_inline(info, data)
        with _opened(sink, "wb", _Sink) as out:
            try:
                if end > offset:
                    out.write_at(0, memoryview(data)[offset:end])
            finally:
                out.finish()
        if progress and end > offset:
            progress(end - offset)
        return end - offset

    def _read_range(self, path: str, chunk: ChunkInfo, lo: int, hi: int, writer,
                    progress: Callable[[int], None] | None) -> None:
        """Bytes [lo, hi) of `chunk` to `writer` (a _RangeWriter or _ReadAhead: `write` and
        `pos`), fetching a fresh capability once if the one held expired meanwhile."""
        start = writer.pos

        def sink(piece: memoryview) -> None:
            writer.write(piece)
            if progress:
                progress(len(piece))

        for attempt in range(2):
            done = writer.pos - start
            try:
                self.read_chunk(chunk, lo + done, hi, sink)
                return
            except Unauthenticated:
                if attempt:
                    raise
                chunk = self._fresh_capability(path, chunk)   # expired during a long download

    def read_chunk(self, chunk: ChunkInfo, lo: int, hi: int,
                   sink: Callable[[memoryview], None]) -> None:
        """Bytes [lo, hi) of one chunk this client holds a read capability for, to `sink` in
        order, every block verified; replicas with bad data are reported."""
        read_chunk(self._channels, chunk.handle, chunk.version, chunk.replicas, chunk.length,
                   chunk.checksum, lo, hi - lo, sink,
                   lambda addr, why: self.report_bad_replica(chunk.handle, chunk.version, addr,
                                                             why),
                   capability=chunk.capability)

    def _fresh_capability(self, path: str, chunk: ChunkInfo) -> ChunkInfo:
        span = (chunk.index_offset, max(1, chunk.length))        # that chunk's bytes only
        for c in self.stat(path, for_read=True, span=span).chunks:
            if (c.handle, c.version) == (chunk.handle, chunk.version):
                return c
        raise FailedPrecondition(f"{path} changed while it was being read")

    def read(self, path: str, offset: int = 0, length: int = -1) -> bytes:
        """Small reads into memory (use `get` for large files)."""
        return self.read_at(self.stat(path, for_read=True, span=read_span(offset, length)), offset,
                            length)

    def read_at(self, info: FileInfo, offset: int = 0, length: int = -1) -> bytes:
        """Small reads of a file already stat'ed, into memory."""
        buf = io.BytesIO()
        self.download(info, buf, offset=offset, length=length, parallel=1)
        return buf.getvalue()

    def report_bad_replica(self, handle: int, version: int, address: str, reason: str) -> None:
        try:
            self._call("ReportBadReplica", pb.BadReplicaRequest(
                handle=handle, version=version, address=address, reason=reason[:500]), deadline=5)
        except GfsError:
            pass    # best effort: the scrubber finds it too

    def chunkservers(self) -> list[dict]:
        resp = self._call("Chunkservers", pb.Empty())
        return [_fields(s) for s in resp.servers]

    # --- status --------------------------------------------------------------------------------

    def master_statuses(self, timeout: float = 2.0) -> list[dict]:
        """Ask every master directly for its status; unreachable ones get {'error': ...}."""
        out = []
        for address in self.masters:
            try:
                s = self._stub(address).Status(pb.Empty(), timeout=timeout,
                                               metadata=self._metadata).status
                out.append({
                    "address": address, "id": s.id, "role": s.role, "term": s.term,
                    "leader": s.leader_grpc or s.leader_raft, "commit_index": s.commit_index,
                    "applied_index": s.applied_index, "log_entries": s.log_entries,
                    "log_bytes": s.log_bytes, "snapshot_index": s.snapshot_index,
                    "snapshot_time_ms": s.snapshot_time_ms, "has_quorum": s.has_quorum,
                    "raft_address": s.raft_address, "pid": s.pid,
                    "metrics_address": s.metrics_address, "uptime_s": round(s.uptime_s, 1)})
            except grpc.RpcError as err:
                out.append({"address": address, "error": err.details() or err.code().name})
        return out


def _members(resp) -> dict:
    out = _fields(resp)
    out["members"] = [_fields(m) for m in resp.members]
    return out
