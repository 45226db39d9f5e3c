"""The synchronous Python client for the masters.

It follows leader redirects, retries across masters with exponential backoff under one overall
deadline, and tags every mutating request with (client_id, seq) so a retry after a leader change
returns the original result instead of applying the command twice.
"""
from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Iterator

import grpc

from gfs.config import resolve_masters
from gfs.errors import GfsError, Unavailable, from_grpc
from proto import master_pb2 as pb
from proto import master_pb2_grpc as pb_grpc

LEADER_METADATA_KEY = "gfs-leader"
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20),
                   ("grpc.enable_retries", 0)]


@dataclass
class ChunkInfo:
    handle: int
    index: int
    version: int
    length: int
    checksum: int
    replicas: list[str] = field(default_factory=list)


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

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_proto(cls, m: pb.FileInfo) -> "FileInfo":
        return cls(path=m.path, inode=m.inode, type=m.type, size=m.size, mode=m.mode,
                   owner=m.owner, ctime_ms=m.ctime_ms, mtime_ms=m.mtime_ms,
                   replication=m.replication, storage_class=m.storage_class,
                   chunk_size=m.chunk_size,
                   chunks=[ChunkInfo(c.handle, c.index, c.version, c.length, c.checksum,
                                     list(c.replicas)) for c in m.chunks])


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


class Client:
    """Namespace operations against a gfs cluster (thread-safe)."""

    def __init__(self, masters: str | list[str] | None = None, *, deadline: float = 30.0,
                 attempt_timeout: float = 5.0, client_id: bytes | None = None):
        self.masters = resolve_masters(masters)
        self.deadline = deadline
        self.attempt_timeout = attempt_timeout
        self.client_id = client_id or os.urandom(16)
        self._seq = _Sequencer()
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}
        self._leader: str | None = None
        self._rr = random.randrange(len(self.masters))

    # --- plumbing ------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            for ch in self._channels.values():
                ch.close()
            self._channels.clear()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _stub(self, address: str) -> pb_grpc.MasterStub:
        with self._lock:
            ch = self._channels.get(address)
            if ch is None:
                ch = self._channels[address] = grpc.insecure_channel(address, CHANNEL_OPTIONS)
            return pb_grpc.MasterStub(ch)

    def _candidate(self) -> str:
        with self._lock:
            if self._leader:
                return self._leader
            self._rr = (self._rr + 1) % len(self.masters)
            return self.masters[self._rr]

    def _note(self, address: str, ok: bool, hint: str | None) -> None:
        with self._lock:
            if hint:
                self._leader = hint
            elif ok:
                self._leader = address
            elif self._leader == address:
                self._leader = None

    def _call(self, method: str, request, *, deadline: float | None = None):
        """Call `method` on the leader, following redirects and retrying until the deadline."""
        stop_at = time.monotonic() + (deadline or self.deadline)
        attempt, last = 0, "no attempt made"
        while True:
            address = self._candidate()
            remaining = stop_at - time.monotonic()
            try:
                response = getattr(self._stub(address), method)(
                    request, timeout=max(0.05, min(self.attempt_timeout, remaining)))
                self._note(address, True, None)
                return response
            except grpc.RpcError as err:
                code, details = err.code(), err.details() or ""
                if code not in RETRYABLE:
                    self._note(address, True, None)
                    raise from_grpc(code, details) from None
                hint = dict(err.trailing_metadata() or ()).get(LEADER_METADATA_KEY)
                self._note(address, False, hint if hint != address else None)
                last = f"{address}: {details or code.name}"
            attempt += 1
            if time.monotonic() >= stop_at:
                raise Unavailable(f"no master leader answered within {deadline or self.deadline:.0f}s "
                                  f"(tried {', '.join(self.masters)}; last: {last})")
            if not hint:
                time.sleep(min(1.0, 0.02 * (2 ** min(attempt, 6))) * random.uniform(0.5, 1.0))

    def _mutate(self, method: str, request_cls, **fields):
        seq, ack = self._seq.begin()
        try:
            header = pb.RequestHeader(client_id=self.client_id, seq=seq, ack_seq=ack)
            return self._call(method, request_cls(header=header, **fields))
        finally:
            self._seq.end(seq)

    # --- namespace -----------------------------------------------------------------------------

    def mkdir(self, path: str, parents: bool = False, mode: int = 0o755, owner: str = "") -> int:
        return self._mutate("Mkdir", pb.MkdirRequest, path=path, parents=parents, mode=mode,
                            owner=owner).inode

    def stat(self, path: str, stale_ok: bool = False) -> FileInfo:
        return FileInfo.from_proto(self._call("Stat", pb.StatRequest(path=path, stale_ok=stale_ok)).info)

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
            return True
        except GfsError as err:
            if err.code == "NOT_FOUND":
                return False
            raise

    def list(self, path: str, stale_ok: bool = False, page_size: int = 1000) -> Iterator[FileInfo]:
        """Entries of a directory (or the file itself), sorted by name, fetched page by page."""
        start_after = ""
        while True:
            resp = self._call("List", pb.ListRequest(path=path, start_after=start_after,
                                                     limit=page_size, stale_ok=stale_ok))
            for e in resp.entries:
                yield FileInfo.from_proto(e)
            if not resp.next:
                return
            start_after = resp.next

    def rename(self, src: str, dst: str, overwrite: bool = False) -> None:
        self._mutate("Rename", pb.RenameRequest, src=src, dst=dst, overwrite=overwrite)

    def delete(self, path: str, recursive: bool = False) -> int:
        return self._mutate("Delete", pb.DeleteRequest, path=path, recursive=recursive).deleted

    def create(self, path: str, *, replication: int = 0, storage_class: str = "",
               chunk_size: int = 0, mode: int = 0o644, owner: str = "",
               overwrite: bool = False) -> int:
        """Start an upload: a pending file, invisible until `commit`. Returns its inode."""
        return self._mutate("Create", pb.CreateRequest, path=path, replication=replication,
                            storage_class=storage_class, chunk_size=chunk_size, mode=mode,
                            owner=owner, overwrite=overwrite).inode

    def add_chunk(self, inode: int, index: int) -> pb.AddChunkResponse:
        return self._mutate("AddChunk", pb.AddChunkRequest, inode=inode, index=index)

    def commit(self, inode: int, size: int, chunks: list[tuple[int, int, int]]) -> int:
        """Publish a pending upload atomically; chunks are (handle, length, checksum) in order."""
        return self._mutate("Commit", pb.CommitRequest, inode=inode, size=size,
                            chunks=[pb.ChunkCommit(handle=h, length=n, checksum=c)
                                    for h, n, c in chunks]).inode

    def abort(self, inode: int) -> None:
        self._mutate("Abort", pb.AbortRequest, inode=inode)

    # --- status --------------------------------------------------------------------------------

    def master_statuses(self, timeout: float = 2.0) -> list[dict]:
        """Ask every master directly for its status; unreachable ones get {'error': ...}."""
        out = []
        for address in self.masters:
            try:
                s = self._stub(address).Status(pb.Empty(), timeout=timeout).status
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
