"""The Master gRPC service: proto requests in, replicated commands or reads out."""
from __future__ import annotations

import asyncio
import functools
import logging

import grpc

from gfs.errors import GfsError, InvalidArgument
from gfs.metrics import observe_rpc
from master.node import MasterNode, NotLeader
from proto import master_pb2 as pb
from proto import master_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
LEADER_METADATA_KEY = "gfs-leader"


def rpc(method):
    """Instrument an RPC and turn GfsError into a gRPC status (+ leader hint for NotLeader)."""
    @functools.wraps(method)
    async def wrapper(self, request, context):
        with observe_rpc("master", method.__name__) as outcome:
            try:
                return await method(self, request, context)
            except GfsError as err:
                outcome["code"] = err.code
                if isinstance(err, NotLeader) and err.leader:
                    context.set_trailing_metadata(((LEADER_METADATA_KEY, err.leader),))
                await context.abort(err.grpc_code, err.message)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                log.exception("%s failed", method.__name__)
                outcome["code"] = "INTERNAL"
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc}")
    return wrapper


def request_timeout(context) -> float:
    remaining = context.time_remaining()
    if remaining is None:
        return DEFAULT_TIMEOUT
    return max(0.05, min(remaining - 0.05, 60.0))


def header_fields(header: pb.RequestHeader) -> dict:
    """(client_id, seq, ack_seq) for exactly-once; omitted when the client sent none."""
    if not header.client_id:
        return {}
    if len(header.client_id) != 16 or header.seq == 0:
        raise InvalidArgument("request header needs a 16-byte client_id and a seq > 0")
    return {"client_id": header.client_id, "seq": header.seq, "ack_seq": header.ack_seq}


def file_info(d: dict, locate=None) -> pb.FileInfo:
    """A stat dict as a proto; `locate(chunk)` gives each chunk's current replica addresses."""
    locate = locate or (lambda c: c.get("replicas") or [])
    return pb.FileInfo(
        path=d["path"], inode=d["inode"], type=d["type"], size=d["size"], mode=d["mode"],
        owner=d["owner"], ctime_ms=d["ctime"], mtime_ms=d["mtime"],
        replication=d["replication"], storage_class=d["storage_class"],
        chunk_size=d["chunk_size"],
        chunks=[pb.ChunkInfo(handle=c["handle"], index=c["index"], version=c["version"],
                             length=c["length"], checksum=c["checksum"],
                             replicas=locate(c)) for c in d["chunks"]])


class MasterService(pb_grpc.MasterServicer):
    def __init__(self, node: MasterNode):
        self.node = node

    async def _mutate(self, request, context, command: dict) -> dict:
        command.update(header_fields(request.header))
        return await self.node.execute(command, request_timeout(context))

    @rpc
    async def Mkdir(self, request, context):
        ok = await self._mutate(request, context, {
            "op": "mkdir", "path": request.path, "parents": request.parents,
            "mode": request.mode or 0o755, "owner": request.owner})
        return pb.MkdirResponse(inode=ok["inode"])

    @rpc
    async def Create(self, request, context):
        d = self.node.defaults
        replication = request.replication or d["replication"]
        chunk_size = request.chunk_size or d["chunk_size"]
        ok = await self._mutate(request, context, {
            "op": "create", "path": request.path, "replication": replication,
            "storage_class": request.storage_class, "default_class": d["storage_class"],
            "chunk_size": chunk_size, "mode": request.mode or 0o644, "owner": request.owner,
            "overwrite": request.overwrite})
        return pb.CreateResponse(inode=ok["inode"], chunk_size=chunk_size, replication=replication)

    @rpc
    async def AddChunk(self, request, context):
        replicas = self.node.place_chunk(request.inode, set(request.exclude),
                                         request.length_hint)
        ok = await self._mutate(request, context, {
            "op": "add_chunk", "inode": request.inode, "index": request.index,
            "replicas": replicas})
        return pb.AddChunkResponse(handle=ok["handle"], version=ok["version"], replicas=replicas)

    @rpc
    async def Commit(self, request, context):
        ok = await self._mutate(request, context, {
            "op": "commit", "inode": request.inode, "size": request.size,
            "chunks": [{"handle": c.handle, "length": c.length, "checksum": c.checksum}
                       for c in request.chunks]})
        return pb.CommitResponse(inode=ok["inode"])

    @rpc
    async def Abort(self, request, context):
        await self._mutate(request, context, {"op": "abort", "inode": request.inode})
        return pb.Empty()

    @rpc
    async def Rename(self, request, context):
        await self._mutate(request, context, {"op": "rename", "src": request.src, "dst": request.dst,
                                        "overwrite": request.overwrite})
        return pb.Empty()

    @rpc
    async def Delete(self, request, context):
        trash = not request.skip_trash and self.node.trash_retention > 0
        ok = await self._mutate(request, context, {"op": "delete", "path": request.path,
                                                   "recursive": request.recursive,
                                                   "trash": trash, "user": request.user})
        return pb.DeleteResponse(deleted=ok["deleted"], trash_id=ok["trash_id"])

    @rpc
    async def TrashList(self, request, context):
        user = None if request.all_users else request.user     # "" is the anonymous user
        entries = await self.node.read(lambda st: st.trash_list(user), True,
                                       request_timeout(context))
        return pb.TrashListResponse(entries=[self._trash_entry(e) for e in entries],
                                    retention_s=self.node.trash_retention)

    def _trash_entry(self, e: dict) -> pb.TrashEntry:
        keep_ms = int(self.node.trash_retention * 1000)
        return pb.TrashEntry(id=e["id"], user=e["user"], path=e["path"], type=e["type"],
                             size=e["size"], files=e["files"], deleted_ms=e["deleted"],
                             expires_ms=e["deleted"] + keep_ms if keep_ms else 0)

    @rpc
    async def TrashRestore(self, request, context):
        ok = await self._mutate(request, context, {
            "op": "trash_restore", "id": request.id, "user": request.user,
            "dst": request.dst, "mode": 0o755, "owner": request.user})
        return pb.TrashRestoreResponse(path=ok["path"])

    @rpc
    async def TrashPurge(self, request, context):
        ok = await self._mutate(request, context, {
            "op": "trash_purge", "user": request.user, "all_users": request.all_users,
            "ids": list(request.ids), "before": 0})
        return pb.TrashPurgeResponse(purged=ok["purged"])

    @rpc
    async def GcPlan(self, request, context):
        self.node.require_leader()
        gc = self.node.gc

        def survey() -> pb.GcPlanResponse:      # LMDB scans: off the event loop
            if request.collect and self.node.chunkservers.warmed_up():
                gc.expire_uploads()
                gc.collect()
            orphans = [pb.OrphanReplica(reason="orphan", **o) for o in gc.plan()]
            stale = [pb.OrphanReplica(handle=h, version=v, server=a, reason="stale")
                     for a, h, v, why in self.node.repairer.last.deletes if why == "stale"]
            rows = sorted(stale + orphans, key=lambda o: (o.delete_in_s, o.server, o.handle))
            pending = self.node.state_read(lambda st: st.pending_uploads())
            return pb.GcPlanResponse(
                orphans=rows[:request.limit] if request.limit else rows, total=len(rows),
                grace_s=gc.grace_s, replica_map_complete=self.node.chunkservers.map_complete(),
                pending_uploads=len(pending), expiring_uploads=len(gc.abandoned_uploads()))

        return await asyncio.to_thread(survey)

    @rpc
    async def SetClass(self, request, context):
        ok = await self._mutate(request, context, {
            "op": "set_class", "path": request.path, "storage_class": request.storage_class,
            "recursive": request.recursive})
        return pb.SetClassResponse(changed=ok["changed"])

    @rpc
    async def TierStatus(self, request, context):
        info = await self.node.read(lambda st: st.stat(request.path), True,
                                    request_timeout(context))
        return pb.TierStatusResponse(**(await asyncio.to_thread(self.node.tier_status, info)))

    @rpc
    async def BalanceStatus(self, request, context):
        s = await asyncio.to_thread(self.node.balance_status)
        s["servers"] = [pb.BalanceServer(**srv) for srv in s["servers"]]
        return pb.BalanceStatusResponse(**s)

    @rpc
    async def Health(self, request, context):
        h = await asyncio.to_thread(self.node.health)
        h.pop("repair_blocked_by")                  # per reason: on /metrics only
        return pb.HealthResponse(**h)

    @rpc
    async def Stat(self, request, context):
        info = await self.node.read(lambda st: st.stat(request.path), not request.stale_ok,
                                    request_timeout(context))
        if request.for_read and info["type"] == "file" and self.node.raft.is_leader():
            self.node.tiering.tracker.note(info["inode"])
        return pb.StatResponse(info=file_info(info, self.node.chunk_locations))

    @rpc
    async def List(self, request, context):
        limit = min(request.limit or 1000, 10_000)
        entries, nxt = await self.node.read(lambda st: st.list(request.path, request.start_after, limit),
                                      not request.stale_ok, request_timeout(context))
        return pb.ListResponse(entries=[file_info(e, self.node.chunk_locations) for e in entries],
                               next=nxt)

    @rpc
    async def Heartbeat(self, request, context):
        self.node.require_leader()
        figures = {k: getattr(request, k) for k in (
            "capacity_bytes", "used_bytes", "free_bytes", "chunk_count", "io_load", "cpu_load",
            "rss_bytes", "mem_total_bytes", "mem_available_bytes")}
        registry = self.node.chunkservers
        need_full = registry.heartbeat(
            request.address, request.rack, request.instance, request.full_report,
            [(c.handle, c.version) for c in request.added],
            [(c.handle, c.version) for c in request.removed], figures,
            [(c.handle, c.version) for c in request.corrupt],
            {c.handle: c.stored_bytes for c in request.added if c.tier == "cold"})
        deletes, verifies = registry.take_orders(request.address)
        return pb.HeartbeatResponse(
            need_full_report=need_full,
            delete=[pb.ChunkRef(handle=h, version=v) for h, v in deletes],
            verify=[pb.ChunkRef(handle=h, version=v) for h, v in verifies])

    @rpc
    async def ReportBadReplica(self, request, context):
        self.node.require_leader()
        log.warning("bad replica reported: chunk %d v%d on %s: %s", request.handle,
                    request.version, request.address, request.reason,
                    extra={"fields": {"handle": request.handle, "replica": request.address}})
        # The chunkserver verifies every block it sends, so a client that saw bad bytes may have
        # been hit in transit: the server checks the replica itself and reports it if corrupt.
        self.node.chunkservers.queue_verify(request.address, request.handle, request.version)
        return pb.Empty()

    @rpc
    async def Chunkservers(self, request, context):
        self.node.require_leader()
        return pb.ChunkserversResponse(servers=[pb.ChunkserverInfo(**s)
                                                for s in self.node.chunkservers.describe()])

    @rpc
    async def Status(self, request, context):
        s = self.node.status()
        return pb.StatusResponse(status=pb.MasterStatus(
            id=s["id"], raft_address=s["raft_address"], grpc_address=s["grpc_address"],
            role=s["role"], term=s["term"], leader_raft=s["leader_raft"],
            leader_grpc=s["leader_grpc"], commit_index=s["commit_index"],
            applied_index=s["applied_index"], log_entries=s["log_entries"],
            log_bytes=s["log_bytes"], snapshot_index=s["snapshot_index"],
            snapshot_time_ms=s["snapshot_time_ms"], has_quorum=s["has_quorum"],
            peers=s["peers"], pid=s["pid"], metrics_address=s["metrics_address"],
            uptime_s=s["uptime_s"]))
