"""The Master gRPC service: proto requests in, replicated commands or reads out."""
from __future__ import annotations

import asyncio
import functools
import logging
import os

import grpc

from gfs import backupfile
from gfs.auth.capability import READ
from gfs.auth.daemon import body_of
from gfs.auth.insecure import mode_name
from gfs.clock import now_ms
from gfs.errors import GfsError, InvalidArgument, OutOfRange
from gfs.metrics import observe_rpc
from gfs.rpcguard import LIMITER, abort_rpc
from gfs.validate import address, label, non_negative, positive
from master import callstream
from master.callers import caller_of
from master.node import MasterNode, NotLeader
from master.state import AS_SYSTEM
from proto import master_pb2 as pb
from proto import master_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
LEADER_METADATA_KEY = "gfs-leader"
HEARTBEAT_METHOD = "/gfs.master.Master/Heartbeat"


def rpc(method):
    """Instrument an RPC and turn GfsError into a gRPC status (+ leader hint for NotLeader)."""
    @functools.wraps(method)
    async def wrapper(self, request, context):
        with observe_rpc("master", method.__name__) as outcome:
            try:
                return await method(self, request, context)
            except GfsError as err:
                outcome["code"] = err.code
                await abort_with(context, err)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:            # a bug, not bad input: traceback, rate-limited
                LIMITER.log(log, method.__name__, exc)
                outcome["code"] = "INTERNAL"
                await abort_rpc(context, grpc.StatusCode.INTERNAL,
                                f"internal error: {type(exc).__name__}: {exc}")
    return wrapper


async def abort_with(context, err: GfsError) -> None:
    """End an RPC with the error's status and message (and the leader hint for NotLeader)."""
    if isinstance(err, NotLeader) and err.leader:
        context.set_trailing_metadata(((LEADER_METADATA_KEY, err.leader),))
    await abort_rpc(context, err.grpc_code, err.message)


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


def check_heartbeat(request: pb.HeartbeatRequest) -> None:
    """InvalidArgument unless the heartbeat names its sender and reports sane figures."""
    address(request.address, "address")
    label(request.rack, "rack")
    label(request.instance, "instance")
    label(request.report_id, "report_id")
    for field in ("io_load", "cpu_load"):
        non_negative(getattr(request, field), field)
    for t in request.tiers:
        label(t.name, "tiers.name")


def file_info(d: dict, locate=None, capability=None, into=None) -> pb.FileInfo:
    """A stat dict as a proto; `locate(chunk)` gives each chunk's current replica addresses,
    `capability(handle, version)` a read capability for it; `into`: what builds the message
    from its fields, in place (a repeated field's `add`: a List's entries are built where they
    go, instead of built and then copied in — 255 → 151 µs for a 100-entry page). (Fields left
    at their defaults are not set: a List builds one per entry, and an empty map or list costs
    as much as the rest.)"""
    info = (into or pb.FileInfo)(
        path=d["path"], inode=d["inode"], type=d["type"], size=d["size"], mode=d["mode"],
        owner=d["owner"], ctime_ms=d["ctime"], mtime_ms=d["mtime"],
        replication=d["replication"], storage_class=d["storage_class"],
        chunk_size=d["chunk_size"], visibility=d.get("visibility", ""))
    inline = d.get("inline")
    if inline is not None:
        info.inline, info.inline_checksum, info.inline_data = True, inline, d.get("data") or b""
    if d.get("xattrs"):
        info.xattrs.update(d["xattrs"])
    if d["chunks"]:
        locate = locate or (lambda c: c.get("replicas") or [])
        capability = capability or (lambda handle, version: b"")
        add = info.chunks.add
        for c in d["chunks"]:
            add(handle=c["handle"], index=c["index"], version=c["version"], length=c["length"],
                checksum=c["checksum"], replicas=locate(c),
                capability=capability(c["handle"], c["version"]), offset=c.get("offset", 0))
    span = d.get("chunk_span")
    if span is not None:
        info.chunk_span.offset, info.chunk_span.length = span[0], span[1] - span[0]
    return info


class MasterService(callstream.CallsServicer, pb_grpc.MasterServicer):
    """(`Calls`, the unary calls below as messages of one stream: master/callstream.py.)"""

    def __init__(self, node: MasterNode):
        self.node = node

    async def _mutate(self, request, context, command: dict) -> dict:
        """Replicate a client's command, run as the caller (its token hash goes with it)."""
        command.update(header_fields(request.header))
        auth = caller_of(context, self.node.insecure_no_auth)
        if auth is not AS_SYSTEM:             # insecure mode: no auth field, run as SYSTEM
            command["auth"] = auth
            self.node.token_uses.note(auth)
        return await self.node.execute(command, request_timeout(context))

    async def _read(self, context, fn, linearizable: bool = True):
        """`fn(state, auth, now)` on the state, as the caller (after a barrier unless stale reads
        were asked for)."""
        auth, now = caller_of(context, self.node.insecure_no_auth), now_ms()
        if auth is not AS_SYSTEM:
            self.node.token_uses.note(auth)
        return await self.node.read(lambda st: fn(st, auth, now), linearizable,
                                    request_timeout(context))

    async def _admin(self, context) -> None:
        """Refuse unless the caller is an administrator (cluster-wide figures and plans)."""
        await self._read(context, lambda st, auth, now: self.node.require_admin(st, auth, now),
                         linearizable=False)

    @rpc
    async def Mkdir(self, request, context):
        ok = await self._mutate(request, context, {
            "op": "mkdir", "path": request.path, "parents": request.parents,
            "mode": request.mode or 0o755, "owner": request.owner})
        return pb.MkdirResponse(inode=ok["inode"])

    @rpc
    async def Create(self, request, context):
        d = self.node.defaults
        if request.replication:     # asked for explicitly: refuse one that no chunk could get
            self.node.check_replication(request.replication)
        replication = request.replication or d["replication"]
        chunk_size = request.chunk_size or d["chunk_size"]
        command = {
            "op": "create", "path": request.path, "replication": replication,
            "storage_class": request.storage_class, "default_class": d["storage_class"],
            "chunk_size": chunk_size, "mode": request.mode or 0o644, "owner": request.owner,
            "overwrite": request.overwrite, "size": request.size_hint}
        replicas = None
        if request.first_chunk:
            replicas = self.node.place_new_chunk(replication, chunk_size,
                                                 length_hint=request.size_hint)
            command["first_chunk"] = replicas
        ok = await self._mutate(request, context, command)
        response = pb.CreateResponse(inode=ok["inode"], chunk_size=chunk_size,
                                     replication=replication)
        if replicas is not None:
            response.first_chunk.CopyFrom(self._allocated(ok, replicas))
        return response

    def _allocated(self, ok: dict, replicas: list[str]) -> pb.AddChunkResponse:
        """The answer for a chunk the state machine allocated (handle, version) on `replicas`,
        with the capabilities to write it and to read it back."""
        return pb.AddChunkResponse(
            handle=ok["handle"], version=ok["version"], replicas=replicas,
            capability=self.node.capabilities.write(ok["handle"], ok["version"]),
            read_capability=self.node.capabilities.read(ok["handle"], ok["version"]))

    @rpc
    async def AddChunk(self, request, context):
        # place_chunk reads the upload's inode, which the caller's Create just wrote: wait
        # for its LMDB commit here rather than holding the event loop in state_read.
        await self.node.raft.wait_committed_async()
        replicas = self.node.place_chunk(request.inode, set(request.exclude),
                                         request.length_hint)
        ok = await self._mutate(request, context, {
            "op": "add_chunk", "inode": request.inode, "index": request.index,
            "replicas": replicas})
        return self._allocated(ok, replicas)

    @rpc
    async def UploadChunks(self, request, context):
        chunks = await self._read(context, lambda st, auth, now: st.upload_chunks(
            request.inode, auth, now))
        # Only the upload's creator gets here: a capability to read back bytes it wrote itself.
        sign = self.node.capabilities.signer(READ)
        return pb.UploadChunksResponse(chunks=[
            pb.ChunkInfo(handle=c["handle"], index=c["index"], version=c["version"],
                         replicas=self.node.chunk_locations(c),
                         capability=sign(c["handle"], c["version"])) for c in chunks])

    @rpc
    async def Commit(self, request, context):
        ok = await self._mutate(request, context, {
            "op": "commit", "inode": request.inode, "size": request.size,
            "chunks": [{"handle": c.handle, "length": c.length, "checksum": c.checksum}
                       for c in request.chunks],
            **({"xattrs": dict(request.xattrs)} if request.xattrs else {})})
        response = pb.CommitResponse(inode=ok["inode"])
        info = await self._committed(context, ok)
        if info is not None:
            response.info.CopyFrom(file_info(info, self.node.chunk_locations))
        return response

    async def _committed(self, context, ok: dict) -> dict | None:
        """The file a commit just published, read here and now (this master applied the commit,
        so its state has it): what the writer would otherwise Stat for. None when its path names
        another file already, or no longer resolves (a rename or replacement in between)."""
        path = ok.get("path")        # results stored before the path was part of them: none
        if path is None:
            return None
        try:
            info = await self._read(context, lambda st, auth, now: st.stat(path, auth, now),
                                    linearizable=False)
        except GfsError:
            return None
        return info if info["inode"] == ok["inode"] else None

    @rpc
    async def PutInline(self, request, context):
        d = self.node.defaults
        limit = d["inline_max"]
        if len(request.data) > limit:
            raise OutOfRange(
                f"{len(request.data)} bytes is over this cluster's inline limit ({limit} bytes); "
                "write the file as chunks" if limit else
                "inline files are turned off on this cluster (--inline-max 0)")
        if request.replication:
            self.node.check_replication(request.replication)
        ok = await self._mutate(request, context, {
            "op": "put_inline", "path": request.path, "data": request.data,
            "checksum": request.checksum, "replication": request.replication or d["replication"],
            "storage_class": request.storage_class, "default_class": d["storage_class"],
            "chunk_size": d["chunk_size"], "mode": request.mode or 0o644,
            "owner": request.owner, "overwrite": request.overwrite,
            **({"xattrs": dict(request.xattrs)} if request.xattrs else {})})
        return pb.PutInlineResponse(info=pb.FileInfo(
            path=request.path, inode=ok["inode"], type="file", size=ok["size"], mode=ok["mode"],
            owner=ok["owner"], ctime_ms=ok["mtime"], mtime_ms=ok["mtime"],
            replication=ok["replication"], storage_class=ok["storage_class"],
            chunk_size=ok["chunk_size"], inline=True, inline_checksum=request.checksum,
            xattrs=request.xattrs))

    @rpc
    async def Abort(self, request, context):
        await self._mutate(request, context, {"op": "abort", "inode": request.inode})
        return pb.Empty()

    @rpc
    async def Compose(self, request, context):
        ok = await self._mutate(request, context, {
            "op": "compose", "dest": request.dest, "sources": list(request.sources),
            "overwrite": request.overwrite, "mode": request.mode or 0o644,
            "owner": request.owner, "storage_class": request.storage_class,
            "default_class": self.node.defaults["storage_class"],
            **({"xattrs": dict(request.xattrs)} if request.xattrs else {})})
        return pb.ComposeResponse(inode=ok["inode"], size=ok["size"], chunks=ok["chunks"])

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
                                                   "trash": trash,
                                                   "reap_over": self.node.reaper.batch})
        return pb.DeleteResponse(deleted=ok["deleted"], trash_id=ok["trash_id"])

    @rpc
    async def TrashList(self, request, context):
        def entries_of(st, auth, now):
            caller = st.principal(auth, now)
            if request.all_users or (request.user and request.user != caller.user):
                self.node.require_admin(st, auth, now)
                return st.trash_list(None if request.all_users else request.user)
            return st.trash_list(caller.user)

        entries = await self._read(context, entries_of)
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
            "dst": request.dst, "mode": 0o755, "owner": ""})
        return pb.TrashRestoreResponse(path=ok["path"])

    @rpc
    async def TrashPurge(self, request, context):
        ok = await self._mutate(request, context, {
            "op": "trash_purge", "user": request.user, "all_users": request.all_users,
            "ids": list(request.ids), "before": 0, "reap_over": self.node.reaper.batch})
        return pb.TrashPurgeResponse(purged=ok["purged"])

    @rpc
    async def GcPlan(self, request, context):
        self.node.require_leader()
        await self._admin(context)
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
    async def SetAttr(self, request, context):
        command = {"op": "set_attr", "path": request.path}
        for field in ("mode", "mtime_ms"):
            if request.HasField(field):
                command[field] = getattr(request, field)
        ok = await self._mutate(request, context, command)
        return pb.SetAttrResponse(mode=ok["mode"], mtime_ms=ok["mtime_ms"])

    async def Backup(self, request, context):
        """Stream a consistent copy of the metadata (administrators). A barrier first, so the
        copy holds every write acknowledged before the call; the copy is read from one LMDB
        read transaction, so commits go on while it is taken and sent."""
        try:
            auth = caller_of(context, self.node.insecure_no_auth)
            await self.node.read(lambda st: self.node.require_admin(st, auth, now_ms()), True,
                                 request_timeout(context))
            path, header = await asyncio.to_thread(self.node.backup_copy)
            try:
                yield pb.BackupChunk(applied_index=header["applied_index"], size=header["size"],
                                     sha256=header["sha256"], created_ms=header["created_ms"])
                with open(path, "rb") as f:
                    while piece := await asyncio.to_thread(f.read, backupfile.PIECE):
                        yield pb.BackupChunk(data=piece)
            finally:
                os.unlink(path)
        except GfsError as err:
            await abort_with(context, err)

    @rpc
    async def TierStatus(self, request, context):
        info = await self._read(context, lambda st, auth, now: st.stat(request.path, auth, now))
        return pb.TierStatusResponse(**(await asyncio.to_thread(self.node.tier_status, info)))

    @rpc
    async def BalanceStatus(self, request, context):
        await self._admin(context)
        s = await asyncio.to_thread(self.node.balance_status)
        s["servers"] = [pb.BalanceServer(**srv) for srv in s["servers"]]
        return pb.BalanceStatusResponse(**s)

    @rpc
    async def Health(self, request, context):
        await self._admin(context)
        h = await asyncio.to_thread(self.node.health)
        h.pop("repair_blocked_by")                  # per reason: on /metrics only
        h["silent"] = [pb.SilentChunkserver(address=a, for_s=s)
                       for a, s in sorted(h["silent"].items())]
        return pb.HealthResponse(**h)

    @rpc
    async def Stat(self, request, context):
        span = ((request.chunk_span.offset, request.chunk_span.length)
                if request.HasField("chunk_span") else None)
        info = await self._read(context, lambda st, auth, now: st.stat(
            request.path, auth, now, request.for_read, span), not request.stale_ok)
        if request.for_read and info["type"] == "file" and self.node.raft.is_leader():
            self.node.tiering.tracker.note(info["inode"])
        # Read capabilities only for a caller the state machine just allowed to read (a
        # `visible` file's chunk list is no licence to read its bytes).
        sign = self.node.capabilities.signer(READ) if request.for_read else None
        return pb.StatResponse(info=file_info(info, self.node.chunk_locations, sign))

    @rpc
    async def List(self, request, context):
        limit = min(request.limit or 1000, 10_000)
        entries, nxt = await self._read(context, lambda st, auth, now: st.list(
            request.path, request.start_after, limit, auth, now, request.brief),
            not request.stale_ok)
        response = pb.ListResponse(next=nxt)
        add, locate = response.entries.add, self.node.chunk_locations
        for e in entries:
            file_info(e, locate, into=add)
        return response

    @rpc
    async def Heartbeat(self, request, context):
        # Only chunkservers holding the cluster secret are heard (and given orders).
        if not self.node.insecure_no_auth:
            self.node.daemon_auth.verify(context.invocation_metadata(), HEARTBEAT_METHOD,
                                         body_of(request), once=True)
        check_heartbeat(request)
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
            {c.handle: c.stored_bytes for c in request.added if c.tier == "cold"},
            (request.report_id, request.report_part,
             request.report_last or not request.report_id))
        deletes, verifies = registry.take_orders(request.address)
        return pb.HeartbeatResponse(
            need_full_report=need_full,
            delete=[pb.ChunkRef(handle=h, version=v) for h, v in deletes],
            verify=[pb.ChunkRef(handle=h, version=v) for h, v in verifies],
            masters=sorted(g for g in self.node.peers.values() if g),
            capability_keys=[pb.CapabilityKey(key_id=k, salt=salt)
                             for k, salt in self.node.capabilities.announced()])

    @rpc
    async def ReportBadReplica(self, request, context):
        positive(request.handle, "handle")
        address(request.address, "address")
        label(request.reason, "reason", 1000)
        self.node.require_leader()
        log.warning("bad replica reported: chunk %d v%d on %s: %s", request.handle,
                    request.version, request.address, request.reason,
                    extra={"fields": {"handle": request.handle, "replica": request.address}})
        # The chunkserver verifies every block it sends, so a client that saw bad bytes may have
        # been hit in transit: the server checks the replica itself and reports it if corrupt.
        self.node.chunkservers.queue_verify(request.address, request.handle, request.version)
        return pb.Empty()

    @rpc
    async def RotateKeys(self, request, context):
        self.node.require_leader()
        await self._admin(context)
        key_id = await asyncio.to_thread(self.node.capabilities.rotate)
        return pb.RotateKeysResponse(key_id=key_id)

    # --- Raft group membership and leadership (master/members.py) -----------------------------

    async def _group_admin(self, context) -> float:
        """Refuse unless leader and administrator; the time the change may take (it gives up
        well before the caller's deadline, so the caller hears why)."""
        self.node.require_leader()
        await self._admin(context)
        return max(0.5, request_timeout(context) * 0.9 - 0.3)

    @staticmethod
    def _members_response(d: dict) -> pb.MembersResponse:
        return pb.MembersResponse(
            members=[pb.Member(**m) for m in d["members"]], term=d["term"],
            commit_index=d["commit_index"], leader_raft=d["leader_raft"],
            commit_s=d.get("commit_s", 0.0), catch_up_s=d.get("catch_up_s", 0.0))

    @rpc
    async def Members(self, request, context):
        await self._group_admin(context)
        return self._members_response(await asyncio.to_thread(self.node.group.describe))

    @rpc
    async def MemberAdd(self, request, context):
        timeout = await self._group_admin(context)
        return self._members_response(await asyncio.to_thread(
            self.node.group.add, request.raft_address, request.grpc_address, timeout))

    @rpc
    async def MemberRemove(self, request, context):
        timeout = await self._group_admin(context)
        return self._members_response(await asyncio.to_thread(
            self.node.group.remove, request.member, timeout))

    @rpc
    async def StepDown(self, request, context):
        timeout = await self._group_admin(context)
        moved = await asyncio.to_thread(self.node.group.step_down, request.to, timeout)
        return pb.StepDownResponse(**moved)

    @rpc
    async def Chunkservers(self, request, context):
        self.node.require_leader()
        await self._admin(context)
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
            uptime_s=s["uptime_s"], auth_mode=mode_name(self.node.insecure_no_auth)))
