"""A master: its Raft node, the command batcher, and what the gRPC service asks of them."""
from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
import time

from gfs import backupfile
from gfs.auth import s3keys
from gfs.auth.daemon import DaemonAuth
from gfs.auth.insecure import mode_name
from gfs.clock import now_ms
from gfs.errors import (DeadlineExceeded, FailedPrecondition, ResourceExhausted, Unavailable,
                        from_code)
from gfs.planted import planted
from gfs.transfer import Channels
from gfs.units import human_size
from master import handoff, inline, pressure
from master.balance import Balancer
from master.reaper import Reaper
from master.callstream import StreamCounts
from master.capabilities import MasterCapabilities, NoCapabilities
from master.chunkservers import ChunkserverRegistry
from master.gc import GarbageCollector
from master.identity import require_admin
from master.members import GroupAdmin
from master.proposer import Proposer
from master.raft import MetadataRaft, RaftConfig
from master.repair import NO_ROOM, TOO_FEW_SERVERS, Repairer
from master.tiering import TierMover
from master.token_use import TokenUses

log = logging.getLogger(__name__)


class NotLeader(Unavailable):
    """This master is not the leader; `leader` is the leader's gRPC address if known."""

    def __init__(self, leader: str):
        hint = f"; the leader is {leader}" if leader else "; no leader is known yet"
        super().__init__("this master is not the leader" + hint)
        self.leader = leader


class MasterNode:
    """Everything the service needs: leadership checks, replicated commands, linearizable reads."""

    def __init__(self, node_id: int, raft_address: str, grpc_address: str,
                 peers: dict[str, str], data_dir: str, raft_config: RaftConfig | None = None,
                 defaults: dict | None = None, dead_after: float = 10.0,
                 gc_grace: float = 3600.0, trash_retention: float = 86400.0,
                 repair_concurrency: int = 2, repair_rate: int = 0,
                 tiering: dict | None = None, balance: dict | None = None,
                 session_ttl: float = 86400.0, space: dict | None = None,
                 admin_token_hash: bytes | None = None, *, cluster_secret: bytes,
                 capability_ttl: float = 60.0, tls_ca: bytes | None = None,
                 insecure_no_auth: bool = False, joining: bool = False):
        self.node_id = node_id
        # gfs/auth/insecure.py: no caller authentication, no daemon signatures, no capabilities.
        self.insecure_no_auth = insecure_no_auth
        self.daemon_auth = DaemonAuth(cluster_secret)
        self.s3_key = s3keys.s3_key(cluster_secret)     # S3 secrets derive from it (s3keys.py)
        self.raft_address = raft_address
        self.grpc_address = grpc_address
        self._flag_peers = dict(peers)    # raft address -> gRPC address ("" if unknown)
        self._flag_peers[raft_address] = grpc_address
        self.data_dir = data_dir
        self.defaults = {"replication": 3, "chunk_size": 64 << 20, "storage_class": "hot",
                         "inline_max": inline.DEFAULT_MAX}
        self.defaults.update(defaults or {})
        self.started = time.monotonic()
        self.metrics_address = ""
        self.admin_token_hash = admin_token_hash
        self._stopping = threading.Event()
        self.chunkservers = ChunkserverRegistry(dead_after=dead_after)
        self.raft = MetadataRaft(raft_address, self._flag_peers, data_dir, raft_config,
                                 on_role_change=self._role_changed,
                                 cluster_secret=cluster_secret,
                                 insecure_no_auth=insecure_no_auth, joining=joining)
        self.group = GroupAdmin(self.raft)
        self.proposer = Proposer(self.raft.propose)
        self.trash_retention = trash_retention
        periods = [gc_grace, session_ttl] + ([trash_retention] if trash_retention > 0 else [])
        self.gc = GarbageCollector(
            self.chunkservers, lambda handles: self.state_read(lambda st: st.unreferenced(handles)),
            self.raft.is_leader, grace_s=gc_grace,
            interval_s=min(10.0, max(0.5, min(periods) / 4)),
            pending_uploads=lambda: self.state_read(lambda st: st.pending_uploads()),
            propose=self.propose, trash_retention_s=trash_retention,
            trash_list=lambda: self.state_read(lambda st: st.trash_list(None)),
            garbage_before=lambda ms: self.state_read(lambda st: st.garbage_before(ms)),
            session_ttl_s=session_ttl,
            oldest_session_ms=lambda: self.state_read(lambda st: st.oldest_session_ms()),
            space_pressure=(space or {}).get("pressure", 0.9),
            pressure_grace_s=(space or {}).get("pressure_grace_s", 60.0),
            replication=self.defaults["replication"])
        self.reaper = Reaper(lambda: self.state_read(lambda st: st.reaping()), self.propose,
                             self.raft.is_leader)
        self.gc.reap_over = self.reaper.batch
        self.repairer = Repairer(
            self.chunkservers, self._chunk_table,
            self._record_replicas, self.raft.is_leader, concurrency=repair_concurrency,
            rate_bytes_s=repair_rate, settle_s=min(5.0, dead_after / 2))
        self.tiering = TierMover(
            self.chunkservers, self._chunk_table,
            self.propose, self.raft.is_leader, **(tiering or {}))
        self.token_uses = TokenUses(self.propose, self.raft.is_leader)
        self.balancer = Balancer(
            self.chunkservers, self._chunk_table,
            self._record_replicas, self.raft.is_leader, self.repairer, **(balance or {}))
        for loop in (self.repairer, self.tiering, self.balancer):   # orders to chunkservers
            loop.channels = Channels(None if insecure_no_auth else self.daemon_auth, tls_ca)
        self.capabilities = (NoCapabilities() if insecure_no_auth else MasterCapabilities(
            cluster_secret, lambda: self.state_read(lambda st: st.capability_keys()),
            self.propose, capability_ttl))

    @property
    def peers(self) -> dict[str, str]:
        """The group's members now (raft address -> gRPC address; master/membership.py)."""
        members = self.raft.members.current()
        return {r: g or self._flag_peers.get(r, "") for r, g in members.items()}

    def _chunk_table(self) -> list[dict]:
        """Every chunk of the metadata (what the repair, tier and balance loops plan from)."""
        return self.state_read(lambda st: st.chunk_table())

    def backup_copy(self) -> tuple[str, dict]:
        """A consistent copy of the metadata in a temporary file beside the journal, and its
        backup header (master/backup.py). The caller removes the file."""
        fd, path = tempfile.mkstemp(dir=self.raft._raft_dir, prefix=".backup-")
        try:
            self.raft.wait_committed()       # all it acknowledged is in LMDB: in the copy
            with os.fdopen(fd, "wb") as f:
                applied = self.raft.copy_state(f.fileno())
            size, sha256 = backupfile.digest_file(path)
            return path, backupfile.make_header(applied, now_ms(), size, sha256)
        except BaseException:
            os.unlink(path)
            raise

    def state_read(self, fn):
        """`fn(state)` on this master's applied state (not linearizable: for leader loops and
        requests reading what their own write just did), once everything it applied is
        committed to LMDB (master/commit_gate.py; blocks while that commit is made)."""
        self.raft.wait_committed()
        return self._state_now(fn)

    def _state_now(self, fn):
        """`fn(state)` on what this master has committed to LMDB so far."""
        with self.raft._state_lock.shared():
            return fn(self.raft.state)

    def propose(self, command: dict, timeout: float = 10.0) -> dict:
        """Replicate a command of the leader's own (from a worker thread); its ok-result."""
        self.require_leader()
        command["now"] = now_ms()
        result = self.proposer.submit(command).result(timeout)
        if result is None:
            raise Unavailable("the command's log entry was replayed, not applied")
        if "err" in result:
            raise from_code(*result["err"])
        return result["ok"]

    def _record_replicas(self, handle: int, version: int, replicas: list[str]) -> None:
        self.propose({"op": "set_replicas", "handle": handle, "version": version,
                      "replicas": replicas})

    def start(self) -> None:
        self.raft.start()
        self.token_uses.start()
        self.gc.start()
        self.reaper.start()
        self.repairer.start()
        self.tiering.start()
        self.balancer.start()

    def stop(self) -> None:
        self._stopping.set()
        self.token_uses.stop()
        self.balancer.stop()
        self.tiering.stop()
        self.repairer.stop()
        self.gc.stop()
        self.reaper.stop()
        self.raft.stop()

    def _role_changed(self, role: str) -> None:
        # Replica locations are soft state: a new leader rebuilds them from full reports.
        self.chunkservers.reset()
        if role == "leader":
            self.capabilities.ensure_key_soon(self.raft.is_leader)
            threading.Thread(target=self._bootstrap_identity, name="identity-bootstrap",
                             daemon=True).start()
        log.info("raft role is now %s", role, extra={"fields": {"role": role}})

    # --- leadership ----------------------------------------------------------------------------

    def leader_grpc(self) -> str:
        return self.peers.get(self.raft.leader_address(), "")

    def require_leader(self) -> None:
        if not self.raft.is_leader():
            raise NotLeader(self.leader_grpc())

    @staticmethod
    def require_admin(state, auth, now: int) -> None:
        """Refuse (UNAUTHENTICATED / PERMISSION_DENIED) unless `auth` is an administrator's."""
        require_admin(state.principal(auth, now), "cluster administration")

    # --- identity ------------------------------------------------------------------------------

    def _bootstrap_identity(self) -> None:
        """On a new leader: make sure the cluster's first administrator exists (the `admin`
        user with the token of --admin-token-file). The command does nothing once any user
        exists, so every leader may send it; it is retried until it lands or leadership ends."""
        if self.admin_token_hash is None:
            return
        while self.raft.is_leader() and not self._stopping.is_set():
            if self.state_read(lambda st: st.has_users()):
                return
            try:
                created = self.propose({"op": "bootstrap", "token_hash": self.admin_token_hash})
                log.info("identity bootstrap: %s", "admin user created" if created["created"]
                         else "users already exist")
                return
            except Exception as exc:       # not yet committable (election settling): retry
                log.info("identity bootstrap not done yet: %s", exc)
                self._stopping.wait(0.5)

    # --- commands ------------------------------------------------------------------------------

    async def execute(self, command: dict, timeout: float) -> dict:
        """Replicate one command through the log and return its ok-result (or raise its error)."""
        self.require_leader()
        command["now"] = now_ms()
        result = await self.proposer.submit_async(command, timeout)
        if result is None:
            raise Unavailable("the command's log entry was replayed, not applied; retry")
        if "err" in result:
            code, message = result["err"]
            raise from_code(code, message)
        return result["ok"]

    async def read(self, fn, linearizable: bool, timeout: float):
        """Run `fn(state)`; a linearizable read first gets a read index (master/readindex.py:
        leadership confirmed by a majority after the read started, or the leader lease, and
        everything committed before it applied), so it sees every write acknowledged before it
        started — and a deposed or paused leader, which no majority answers, never answers."""
        if linearizable and not planted("follower_read"):
            self.require_leader()
            if not self.raft.lease_read():
                await self._read_index(timeout)     # released once its index is committed
        else:
            await self.raft.wait_committed_async(timeout)
        return self._state_now(fn)

    async def _read_index(self, timeout: float) -> None:
        try:
            waiter = self.raft.reads.submit(timeout, handoff.LoopWaiter(
                asyncio.get_running_loop()), wake=False)
            self.raft.start_read_round()           # over UDP from here, or by the tick thread
            await handoff.wait(waiter, timeout + 0.5)
        except asyncio.TimeoutError:
            raise DeadlineExceeded("leadership not confirmed in time; retry") from None

    def place_chunk(self, inode: int, exclude: set[str] | None = None,
                    length_hint: int = 0) -> list[str]:
        """Choose the replica set for a new chunk of pending upload `inode`, on servers with
        room for `length_hint` bytes (0: unknown, a whole chunk)."""
        self.require_leader()
        record = self.state_read(lambda st: st.inode_record(inode))
        if record is None or record.get("state") != "pending":
            raise FailedPrecondition(f"inode {inode} is not an upload in progress")
        return self.place_new_chunk(record["replication"], record["chunk_size"], exclude,
                                    length_hint)

    def place_new_chunk(self, replication: int, chunk_size: int,
                        exclude: set[str] | None = None, length_hint: int = 0) -> list[str]:
        """`replication` servers for a new chunk of a file of `chunk_size` chunks, with room
        for `length_hint` bytes (0: unknown, a whole chunk)."""
        self.require_leader()
        need = min(length_hint, chunk_size) if length_hint else chunk_size
        try:
            return self.chunkservers.place(replication, exclude, need_bytes=need)
        except ResourceExhausted as err:
            counts = self.state_read(lambda st: st.counts())
            raise ResourceExhausted(
                f"{err.message}; free space by deleting files (`gfs rm --skip-trash`) or "
                f"emptying the trash ({counts.get('trash', 0)} entries, "
                f"{human_size(counts.get('trash_bytes', 0))})") from None

    def check_replication(self, replication: int) -> None:
        """Refuse a replication factor higher than the chunkservers alive (see the table)."""
        self.require_leader()
        self.chunkservers.check_replication(replication)

    def chunk_locations(self, chunk: dict) -> list[str]:
        """Where to read a chunk: healthy replicas that reported it, then the recorded replica
        set (a leader that was just elected may not have heard every report yet), then replicas
        known to be corrupt (their intact blocks still serve when no other copy has them)."""
        healthy, corrupt = self.chunkservers.locations(chunk["handle"], chunk["version"])
        recorded = [r for r in chunk.get("replicas") or [] if r not in healthy and r not in corrupt]
        return healthy + recorded + corrupt

    # --- tiers ---------------------------------------------------------------------------------

    def tier_status(self, info: dict, max_files: int = 100_000) -> dict:
        """Storage class, and where each chunk's replicas are (hot/cold), of a file; for a
        directory, the bytes of the files below it by replica tier."""
        self.require_leader()
        view = self.chunkservers.view(
            {c["handle"] for c in info["chunks"]} if info["type"] == "file" else None)

        def replicas(chunk: dict) -> list[dict]:
            h = chunk["handle"]
            return [{"address": a, "tier": "cold" if h in sv.cold else "hot",
                     "stored_bytes": sv.cold.get(h, chunk["length"])}
                    for a, sv in sorted(view.items()) if sv.chunks.get(h) == chunk["version"]]

        def target(file: dict, record: dict, tiers: list[str]) -> str:
            current = "cold" if tiers and all(t == "cold" for t in tiers) else "hot"
            row = {"inode": file["inode"], "storage_class": file["storage_class"],
                   "atime": record.get("atime", record["mtime"])}
            return self.tiering.target(row, current)

        out = {"path": info["path"], "type": info["type"], "storage_class": info["storage_class"]}
        if info["type"] == "file":
            record = self.state_read(lambda st: st.inode_record(info["inode"]))
            chunks = [{"handle": c["handle"], "index": c["index"], "length": c["length"],
                       "replicas": replicas(c)} for c in info["chunks"]]
            tiers = [r["tier"] for c in chunks for r in c["replicas"]]
            tracker = self.tiering.tracker
            out.update(target_tier=target(info, record, tiers), chunks=chunks,
                       stored_bytes=sum(r["stored_bytes"] for c in chunks for r in c["replicas"]),
                       replica_bytes=sum(c["length"] * len(c["replicas"]) for c in chunks),
                       last_read_ms=max(record.get("atime", record["mtime"]),
                                        tracker.last_ms(info["inode"])),
                       recent_reads=tracker.recent(info["inode"]))
            return out
        files = hot = cold = moving = stored = 0
        for file in self._walk_files(info["path"], max_files):
            record = self.state_read(lambda st, inode=file["inode"]: st.inode_record(inode))
            files += 1
            for chunk in file["chunks"]:
                found = replicas(chunk)
                tiers = [r["tier"] for r in found]
                hot += chunk["length"] * tiers.count("hot")
                cold += chunk["length"] * tiers.count("cold")
                stored += sum(r["stored_bytes"] for r in found)
                if any(t != target(file, record, tiers) for t in tiers):
                    moving += chunk["length"]
        out.update(files=files, hot_bytes=hot, cold_bytes=cold, moving_bytes=moving,
                   stored_bytes=stored, replica_bytes=hot + cold)
        return out

    def _walk_files(self, path: str, limit: int):
        """Files below directory `path` (depth first, at most `limit`)."""
        stack, seen = [path], 0
        while stack and seen < limit:
            directory, start = stack.pop(), ""
            while seen < limit:
                page, start = self.state_read(lambda st: st.list(directory, start, 1000))
                for entry in page:
                    if entry["type"] == "dir":
                        stack.append(entry["path"])
                    elif seen < limit:
                        seen += 1
                        yield entry
                if not start:
                    break

    # --- health --------------------------------------------------------------------------------

    def health(self) -> dict:
        """Redundancy figures of the whole cluster, as this leader sees them."""
        self.require_leader()
        reg = self.chunkservers
        f = self.repairer.figures()
        complete = reg.map_complete()
        orphans = self.gc.orphans.replicas()          # as far as the scan has seen (cheap)
        awaiting = orphans - self.gc.orphans.replicas(within_s=0.0)
        counts = self.state_read(lambda st: st.counts())
        sessions = self.state_read(lambda st: st.session_count())
        if not complete:
            status = "starting"
        elif f["unavailable"]:
            status = "unavailable"
        elif f["at_risk"]:
            status = "at-risk"
        elif f["under_replicated"] or f["corrupt_replicas"] or reg.dead_addresses():
            status = "degraded"
        else:
            status = "healthy"
        view = reg.view(())
        trash_bytes = counts.get("trash_bytes", 0)
        f.update(repair_blocked_reason=",".join(r for r, n in f["repair_blocked_by"].items() if n),
                 repair_blocked_detail=blocked_detail(f, view, trash_bytes, awaiting),
                 disk_use=pressure.disk_use(view), trash_purged_for_space=self.gc.purged_for_space)
        f.update(status=status, chunkservers_alive=len(reg.alive_addresses()),
                 dead=reg.dead_addresses(), silent=reg.silent(), orphan_replicas=orphans,
                 replica_map_complete=complete, leader_for_s=reg.leader_for(),
                 pending_uploads=counts["pending"], trash_entries=counts.get("trash", 0),
                 trash_bytes=counts.get("trash_bytes", 0), session_results=sessions,
                 auth_mode=mode_name(self.insecure_no_auth),
                 reaping_trees=self.state_read(lambda st: st.reaping()),
                 reaped_inodes=self.reaper.reaped,
                 orphan_handles_scanned=self.gc.orphans.scanned,
                 orphan_scan_cycles=self.gc.orphans.cycles,
                 planned_replicas=self.repairer.planned_replicas)
        return f

    def balance_status(self) -> dict:
        self.require_leader()
        return self.balancer.status()

    # --- status ----------------------------------------------------------------------------------

    def status(self) -> dict:
        st = self.raft.status()
        peers = self.peers
        st.update({
            "id": self.node_id,
            "raft_address": self.raft_address,
            "grpc_address": self.grpc_address,
            "leader_raft": st.pop("leader"),
            "peers": sorted(p for p in peers if p != self.raft_address),
            "pid": os.getpid(),
            "metrics_address": self.metrics_address,
            "uptime_s": time.monotonic() - self.started,
            "batches": self.proposer.batches,
            "commands": self.proposer.commands,
        })
        st["leader_grpc"] = peers.get(st["leader_raft"], "")
        return st



def blocked_detail(f: dict, view: dict, trash_bytes: int, waiting: int) -> str:
    """Why repair is blocked, for people (empty when it is not), e.g. "no chunkserver with room
    for 9 chunks: 4 alive, 98-99% full; 1.9 GiB in trash, 34695 orphans awaiting grace"."""
    parts = []
    by = f["repair_blocked_by"]
    if by[NO_ROOM]:
        uses = sorted(sv.use for sv in view.values())
        full = f"{uses[0]:.0%}" if uses[0] == uses[-1] else f"{uses[0]:.0%}-{uses[-1]:.0%}"
        parts.append(f"no chunkserver with room for {by[NO_ROOM]} chunk"
                     f"{'s' if by[NO_ROOM] != 1 else ''}: {len(view)} alive, {full} full; "
                     f"{human_size(trash_bytes)} in trash, {waiting} orphans awaiting grace")
    if by[TOO_FEW_SERVERS]:
        n = f["chunkservers_needed"]
        parts.append(f"{by[TOO_FEW_SERVERS]} chunk{'s' if by[TOO_FEW_SERVERS] != 1 else ''} "
                     f"held by every live chunkserver: needs {n} more chunkserver"
                     f"{'s' if n != 1 else ''}")
    return "; and ".join(parts)


class RaftCollector:
    """Prometheus view of a master's Raft and registry state, read at scrape time."""

    def __init__(self, node: MasterNode):
        self.node = node

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily
        s = self.node.status()
        gauges = {
            "gfs_master_is_leader": ("1 if this master is the Raft leader", int(s["role"] == "leader")),
            "gfs_master_raft_term": ("current Raft term", s["term"]),
            "gfs_master_commit_index": ("Raft commit index", s["commit_index"]),
            "gfs_master_applied_index": ("last log index applied (its results final)",
                                         s["applied_index"]),
            "gfs_master_committed_index": ("last log index committed to LMDB, where reads see "
                                           "it (master/commit_gate.py)", s["committed_index"]),
            "gfs_master_state_commits": ("LMDB commits of applied entries since start, one "
                                         "fdatasync each", s["state_commits"]),
            "gfs_master_log_entries": ("entries in the Raft journal", s["log_entries"]),
            "gfs_master_log_bytes": ("bytes in the Raft journal", s["log_bytes"]),
            "gfs_master_journal_fsyncs": ("journal group commits (fsyncs) since start", s["journal_fsyncs"]),
            "gfs_master_snapshot_index": ("log index of the last snapshot", s["snapshot_index"]),
            "gfs_master_batches": ("log entries proposed by this master's batcher", s["batches"]),
            "gfs_master_commands": ("commands proposed by this master's batcher", s["commands"]),
            "gfs_master_chunkservers_alive": ("chunkservers heartbeating to this leader",
                                              len(self.node.chunkservers.alive_addresses())),
            "gfs_master_group_members": ("members of the Raft group (master/membership.py)",
                                         len(self.node.peers)),
            "gfs_master_read_rounds": ("read-index probe rounds this master sent as leader",
                                       self.node.raft.reads.probes),
            "gfs_master_read_rounds_udp": ("of them, sent over UDP from the event loop "
                                           "(master/fastprobe.py)", self.node.raft.fast_rounds),
            "gfs_master_lease_reads": ("reads answered under the leader lease",
                                       self.node.raft.reads.lease_reads),
            "gfs_master_call_streams": ("clients' call streams open now (master/callstream.py)",
                                        StreamCounts.open),
            "gfs_master_streamed_calls": ("calls that arrived as messages of a call stream",
                                          StreamCounts.calls),
            "gfs_master_streamed_calls_refused": ("of them refused: too many of one stream at "
                                                  "once", StreamCounts.refused),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=value)
        if s["role"] != "leader":
            return
        try:
            h = self.node.health()
        except Exception:           # leadership lost between the two calls
            return
        for key, doc in HEALTH_GAUGES.items():
            yield GaugeMetricFamily(f"gfs_health_{key}", doc, value=float(h[key]))
        blocked = GaugeMetricFamily("gfs_health_repair_blocked",
                                    "queued chunks no repair copy can start for, by reason "
                                    "(no_room: no server without a replica has room; "
                                    "too_few_chunkservers: every live server holds one)",
                                    labels=["reason"])
        for reason, n in h["repair_blocked_by"].items():
            blocked.add_metric([reason], n)
        yield blocked
        yield GaugeMetricFamily("gfs_health_chunkservers_dead",
                                "chunkservers seen by this leader that stopped heartbeating",
                                value=len(h["dead"]))
        yield GaugeMetricFamily("gfs_health_chunkservers_silent",
                                "live chunkservers that missed their last heartbeats (not dead "
                                "yet: see --dead-after)", value=len(h["silent"]))
        b = self.node.balancer.status()
        for key, doc in BALANCE_GAUGES.items():
            yield GaugeMetricFamily(f"gfs_balance_{key}", doc, value=float(b[key]))
        use = GaugeMetricFamily("gfs_chunkserver_disk_use",
                                "1 - free/capacity of each live chunkserver", labels=["address"])
        for s in b["servers"]:
            use.add_metric([s["address"]], s["use"])
        yield use


BALANCE_GAUGES = {
    "spread": "disk use of the fullest minus the emptiest chunkserver (0..1)",
    "threshold": "spread above which chunks move (0..1)",
    "moves_in_flight": "balancing moves running",
    "moved": "chunks moved by this leader to even out disk use",
    "moved_bytes": "bytes moved by this leader to even out disk use",
    "failures": "balancing moves that failed",
    "bytes_to_move": "about how many bytes must still move to get within the threshold",
}

HEALTH_GAUGES = {
    "chunkservers_alive": "chunkservers heartbeating to this leader",
    "chunks": "committed chunks",
    "under_replicated": "chunks with fewer healthy replicas than their replication factor",
    "unavailable": "chunks without any healthy replica",
    "at_risk": "chunks with exactly one healthy replica",
    "corrupt_replicas": "replicas their chunkserver found corrupt",
    "stale_replicas": "replicas of an outdated chunk version",
    "orphan_replicas": "replicas no file references (deleted after the grace period)",
    "surplus_replicas": "replicas beyond the replication factor",
    "repair_queue": "chunks waiting for a repair copy",
    "repair_in_flight": "repair copies running",
    "repair_bytes_pending": "bytes still to copy to reach full redundancy",
    "repair_rate_bytes_s": "repair throughput over the last minute",
    "eta_s": "estimated seconds to full redundancy (-1 unknown, e.g. repair blocked)",
    "disk_use": "disk use of the live chunkservers together (0..1)",
    "trash_purged_for_space": "trash entries this leader purged under space pressure",
    "repaired": "repair copies completed by this leader",
    "repair_failures": "repair copies that failed",
    "session_results": "exactly-once results kept (forgotten after --session-ttl)",
    "orphan_handles_scanned": "handles the orphan scan looked up in the metadata (work done)",
    "orphan_scan_cycles": "orphan scan cycles started (each looks at every held handle once)",
    "planned_replicas": "replicas the last repair pass planned over (the metadata's chunks only)",
}
