"""The masters' Raft node: pysyncobj for election, replication and transport, with gfs's own
durability pieces plugged into its extension points.

* Journal: `DurableJournal` (fsync with group commit) replaces pysyncobj's never-fsync'd one.
* Acknowledgements: a follower's "I have these entries" message (`next_node_idx`) is held back
  until the journal is fsync'd; the tick loop fsyncs once and then releases all held messages.
  The leader fsyncs its own new entries at the end of every tick, before the next tick counts
  its own log in a commit decision.
* State: every log entry carries a batch of msgpack commands, applied by `MetadataState` in a
  (child) LMDB transaction that also records the entry's index, so replay after a restart skips
  what LMDB already holds and never applies an entry twice. Applied entries are committed to
  LMDB many at a time (master/commit_gate.py); readers see only what is committed.
* Snapshots: a consistent LMDB copy plus the last two log entries, with a checksum of the copy
  (master/snapshot_format.py), written and fsync'd through pysyncobj's serializer hook. It
  exists to bring a lagging follower up to date; a restarting node never needs it because LMDB
  (committed and synced before a snapshot is taken) is always at or beyond it. That is also why
  pysyncobj's own dump loading at start-up — which clears the journal when the dump and the
  journal disagree — is switched off: nothing is ever thrown away on a mismatch.

The pysyncobj version is pinned (requirements.txt); the few private attributes touched here are
named in one place (`_PrivateRaftState`).
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import Future, TimeoutError as FutureTimeout
from typing import Callable

import msgpack
import pysyncobj.syncobj as _syncobj_module
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.journal import Journal
from pysyncobj.transport import TCPTransport

from gfs.auth.insecure import raft_purpose
from gfs.errors import Unavailable
from gfs.fsutil import makedirs_durable
from gfs.logs import RepeatedFailure
from master.catch_up import CatchUpHints
from master.commit_gate import DEFAULT_DELAY as DEFAULT_COMMIT_DELAY, CommitGate
from master.journal import DurableJournal
from master.membership import MembershipLog
from master.raft_group import GroupChanges
from master.raft_private import PrivateRaftState as _PrivateRaftState
from master.raft_auth import FrameAuthenticator
from master.raft_chunks import LargeEntryChunks
from master.raft_snapshots import RaftSnapshots
from master.snapshot_writer import PAUSE as SNAPSHOT_PAUSE
from master.snapshot_receiver import SnapshotReceiver
from master.snapshot_writer import BackgroundSerializer
from master.fastprobe import ProbeCodec
from master.readindex import (ACK_TYPE, LEASE_FRACTION, PROBE_TYPE, READ_MODES, ROUND_OUT,
                              ReadIndex)
from master.sharedlock import SharedLock
from master.state import MetadataState
from master.store import pack

log = logging.getLogger(__name__)

_original_create_journal = _syncobj_module.createJournal


def _create_journal(journal_file):
    """pysyncobj builds its journal from conf.journalFile; let that be a ready Journal object."""
    if isinstance(journal_file, Journal):
        return journal_file
    return _original_create_journal(journal_file)


_syncobj_module.createJournal = _create_journal


class _ResendIsNotDivergence(logging.Filter):
    """pysyncobj logs CRITICAL "truncating already-applied log entries" whenever a leader resends
    entries a follower already has; DurableJournal only cuts entries that really conflict (and
    logs that itself), so the message is noise here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "truncating already-applied" not in record.getMessage()


logging.getLogger("pysyncobj.syncobj").addFilter(_ResendIsNotDivergence())

SNAPSHOT_SEND_CHUNK = 1 << 20      # bytes of a snapshot per message to a follower (pysyncobj: 64 KiB)
COMMITTED_WAIT_S = 5.0             # s a reader waits for the tick thread to commit what it applied
NOT_COMMITTED = "this master's metadata store did not commit in time; retry"
SOCKET_BUFFER = 4 << 20
SNAPSHOT_PROGRESS = "gfs_snapshot_progress"     # follower -> leader while a snapshot arrives
ROLE_NAMES = {0: "follower", 1: "candidate", 2: "leader"}


class DeferredAckTransport(TCPTransport):
    """TCP transport that holds append acknowledgements until the journal is durable, and keeps
    the connections between followers open for elections.

    pysyncobj drops a connection on which nothing was received for `connectionTimeout`, checking
    when it next sends or receives on it. Followers never talk to each other until an election,
    so the first vote request of every election arrived on an "expired" follower-to-follower
    connection and both ends dropped it instead of delivering it: every leader failure cost a
    whole extra election round (another 1–2 s). A follower therefore keeps its connections to
    everyone but the leader fresh (`keep_fresh`, every tick). The connection to the leader keeps
    the timeout (a silent leader is noticed and redialled), and a leader keeps it on all its
    connections; a peer that died closes its socket anyway, and TCP keepalive finds silent
    half-open connections."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._held: list[tuple[object, dict]] = []
        self.hints: CatchUpHints | None = None    # set by MetadataRaft (master/catch_up.py)

    transfer_campaign = False   # set while this node campaigns on a leader's transfer request

    def send(self, node, message):
        kind = message.get("type")
        if kind == "next_node_idx":
            if self.hints is not None:
                message = self.hints.reply(node, message)
            self._held.append((node, message))
            return True
        if kind == "append_entries" and message.get("serialized") == SNAPSHOT_PAUSE:
            return True                 # no snapshot piece this time (master/snapshot_writer.py)
        if kind == "request_vote" and self.transfer_campaign:
            message = {**message, "transfer": True}    # see MetadataRaft._on_message
        return super().send(node, message)

    def keep_fresh(self, leader) -> None:
        """Reset the idle clock of every connection except the one to `leader`."""
        for node, connection in list(self._connections.items()):
            if node != leader:
                _PrivateRaftState.mark_fresh(connection)

    def release_held(self) -> None:
        held, self._held = self._held, []
        for node, message in held:
            super().send(node, message)


class RaftConfig:
    """Timing and compaction knobs (seconds / entries)."""

    def __init__(self, election_min: float = 1.0, election_max: float = 2.0,
                 heartbeat: float = 0.05, compact_entries: int = 50_000,
                 compact_seconds: float = 600.0, tick: float = 0.05, read_mode: str = "index",
                 commit_delay: float = DEFAULT_COMMIT_DELAY):
        if read_mode not in READ_MODES:
            raise ValueError(f"read mode must be one of {', '.join(READ_MODES)}, not {read_mode!r}")
        self.election_min = election_min
        self.election_max = election_max
        self.heartbeat = heartbeat
        self.compact_entries = compact_entries
        self.compact_seconds = compact_seconds
        self.tick = tick
        self.read_mode = read_mode       # master/readindex.py
        self.commit_delay = commit_delay   # master/commit_gate.py


class MetadataRaft(GroupChanges, RaftSnapshots, SyncObj):
    """One master's Raft node applying command batches into `MetadataState`."""

    def __init__(self, self_address: str, members: dict[str, str], data_dir: str,
                 config: RaftConfig | None = None,
                 on_role_change: Callable[[str], None] | None = None, *, cluster_secret: bytes,
                 insecure_no_auth: bool = False, joining: bool = False):
        """`members`: raft address -> gRPC address of the group at its first start (later
        starts use the durable membership, master/membership.py); `joining`: this master was
        added to a running group and must not campaign before a leader has reached it."""
        config = config or RaftConfig()
        # Secure and insecure masters sign frames with different keys: they never form a group.
        self._frame_auth = FrameAuthenticator(cluster_secret, raft_purpose(insecure_no_auth))
        self.probe_codec = ProbeCodec(cluster_secret, raft_purpose(insecure_no_auth))
        self._config = config
        self._raft_dir = os.path.join(data_dir, "raft")
        makedirs_durable(self._raft_dir)
        self._state_dir = os.path.join(data_dir, "meta")
        # Readers (any thread) share it; a snapshot install or close takes it alone. The apply
        # path needs none: it runs in the tick thread, which is also the only one that swaps.
        self._state_lock = SharedLock()
        self._copy_lock = threading.Lock()      # a backup copy in progress (not the apply path)
        self.state = MetadataState(self._state_dir)
        self.members = MembershipLog(self._raft_dir, members)
        self.journal = DurableJournal(self._raft_dir, self.members)
        current = self.members.current()
        if not self.members.from_flags and set(current) != set(members):
            log.info("membership from the data directory (%s), not --peers",
                     ",".join(sorted(current)))
        self.self_address = self_address
        # Only a first start joins: later starts of an added master are those of a member.
        self._joining = joining and self.members.from_flags
        self._init_group_changes()
        self._check_log_covers_state()
        self._snapshot_path = os.path.join(self._raft_dir, "snapshot.bin")
        self.snapshot_index = 0
        self.snapshot_time_ms = 0
        self._snapshot_retry: float | None = None   # ours was moved aside: when to compact
        self._check_own_snapshot()
        self._snapshot_a_restored_log()
        self._read_snapshot_info()
        self._on_role_change = on_role_change
        self._stopping = threading.Event()
        self._tick_failures = RepeatedFailure(log, "raft tick failed")
        conf = SyncObjConf(
            autoTick=False,
            appendEntriesUseBatch=False,
            journalFile=self.journal,
            fullDumpFile=self._snapshot_path,
            serializer=self._begin_snapshot,
            deserializer=self._install_snapshot,
            logCompactionBatchSize=SNAPSHOT_SEND_CHUNK,
            # socket buffers for several snapshot pieces (pysyncobj: 64 KiB, fixed, so ~128 KiB
            # moved per tick; the tick only polls its sockets once)
            sendBufferSize=SOCKET_BUFFER, recvBufferSize=SOCKET_BUFFER,
            logCompactionMinEntries=config.compact_entries,
            logCompactionMinTime=config.compact_seconds,
            raftMinTimeout=config.election_min,
            raftMaxTimeout=config.election_max,
            appendEntriesPeriod=config.heartbeat,
            connectionTimeout=max(3.5, config.election_max),
            connectionRetryTime=0.2,
            leaderFallbackTimeout=max(config.election_max, config.heartbeat * 10),
            commandsWaitLeader=True,
            onStateChanged=self._state_changed,
            dynamicMembershipChange=True,
        )
        super().__init__(self_address, [p for p in current if p != self_address], conf,
                         transportClass=DeferredAckTransport)
        _PrivateRaftState.disable_dump_loading(self)
        self._receiver = SnapshotReceiver(lambda: MetadataState.install_target(self._state_dir))
        self._snapshots = BackgroundSerializer(self._snapshot_path, SNAPSHOT_SEND_CHUNK,
                                               self._begin_snapshot, self._install_snapshot,
                                               self._snapshot_written,
                                               self._snapshot_send_backlog,
                                               self._receiver.piece,
                                               self._snapshot_damaged_while_sent,
                                               lambda: self.journal.size_bytes)
        _PrivateRaftState.use_serializer(self, self._snapshots)
        _PrivateRaftState.start_after(self, max(self.state.applied_index(), 1))
        self._transport = _PrivateRaftState.transport(self)
        _PrivateRaftState.send_frames_uncompressed()
        _PrivateRaftState.pickle_bytes_as_bytes()
        _PrivateRaftState.bound_reads()
        self._transport.hints = CatchUpHints(self.journal, lambda: self.raftLastApplied)
        # Membership and leadership change only through the masters' admin RPCs (which check
        # the caller and allow one change at a time), never by pysyncobj's utility messages.
        for utility in ("add", "remove", "transfer", "set_version"):
            self._transport.setOnUtilityMessageCallback(utility, None)
        self.addOnTickCallback(self._make_durable)
        self._followers_seen = frozenset(_PrivateRaftState.followers(self))
        self._fast_followers: dict = {}           # address -> node, while leading (fastprobe)
        self._fast_for: tuple = (frozenset(), False)   # (followers, leading) it was made for
        self.probe_endpoint = None                # master/fastprobe.py, set on the event loop
        self.fast_rounds = 0                      # read rounds sent over UDP (a metric)
        self._large_entries = LargeEntryChunks()
        self._snapshot_ack_sent = 0.0
        self.commits = CommitGate(lambda: _PrivateRaftState.wake(self), config.commit_delay)
        self.reads = ReadIndex(len(current | {self_address: ""}) // 2 + 1,
                               LEASE_FRACTION * config.election_min
                               if config.read_mode == "lease" else 0.0,
                               wake=lambda: _PrivateRaftState.wake(self))
        self._next_lease_probe = 0.0
        self._leader_contact = float("-inf")      # when a leader last reached us (monotonic)
        self._deliver = _PrivateRaftState.message_handler(self._transport)
        self._transport.setOnMessageReceivedCallback(self._on_message)
        self.addOnTickCallback(self._serve_reads)
        self.addOnTickCallback(self._run_tick_calls)
        self.addOnTickCallback(self._follow_members)
        self._thread = threading.Thread(target=self._run, name="raft-tick", daemon=True)

    @property
    def encryptor(self) -> FrameAuthenticator:
        """What pysyncobj's connections pass every frame through before unpickling it: here a
        signature check (master.raft_auth), never None, so no frame goes unauthenticated."""
        return self._frame_auth

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._doDestroy()
        self._snapshots.wait()          # its copy reads the store about to close
        with self._state_lock.exclusive():
            self.state.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._make_durable()
                self._replace_missing_snapshot()
                unverified = self.journal.unverified_index()
                if not self._isLeader():
                    if unverified is not None:
                        _PrivateRaftState.cap_commit(self, unverified)
                    self._transport.keep_fresh(self._getLeader())
                    self._hold_campaign()
                    self._listen_before_campaigning()
                state = self.state
                self.doTick(self.commits.poll_timeout(state.open_entries, state.open_since,
                                                      self._config.tick))
            except Exception as err:   # never let the tick thread die; pysyncobj state is per message
                self._tick_failures.exception(err)
                time.sleep(self._config.tick)
        try:
            self._commit_applied(force=True)
        except Exception as err:       # the journal still holds them: replayed at the next start
            log.warning("entries applied before stopping not committed: %s", err)

    def _hold_campaign(self) -> None:
        """A follower that joined a running group (until a leader reached it), or that the
        group removed, does not campaign: its votes requests could only depose a leader."""
        if self._joining and self._leader_contact > float("-inf"):
            self._joining = False
        if self._joining or self.self_address not in self.members.current():
            _PrivateRaftState.postpone_election(self, self._config.election_max)

    def _listen_before_campaigning(self) -> None:
        """pysyncobj decides to campaign at the start of a tick, before it reads its sockets.
        After a tick that held this thread past the election deadline (a journal fdatasync or a
        snapshot piece's write behind a busy disk), the leader's appends that arrived meanwhile
        are still unread, and the follower would depose a leader that never went quiet —
        restarting every snapshot transfer in progress. So when the deadline has passed, what
        is waiting is read first; an append among it renews the deadline."""
        if _PrivateRaftState.election_due(self):
            _PrivateRaftState.read_waiting(self)

    def _make_durable(self) -> None:
        """Group commit: one fdatasync for everything appended since the last call, then release
        the acknowledgements that were waiting for it; then commit the entries applied since
        the last commit if that is due (master/commit_gate.py)."""
        self.journal.sync()
        self._transport.release_held()
        self._commit_applied()

    def _commit_applied(self, force: bool = False) -> None:
        """Tick thread: commit the entries applied into LMDB's open transaction, when due or
        `force`d, and release what waited for them. Should the commit fail, pysyncobj applies
        them again from the log (they are in the journal: compaction commits first)."""
        state = self.state
        if not state.open_entries or not (force or self.commits.due(
                state.open_entries, state.open_since, self.reads.awaiting_apply())):
            return
        try:
            state.commit_applied()
        except BaseException:
            _PrivateRaftState.rewind_applied(self, state.committed_index)
            state.forget_open()
            raise
        self.commits.committed(state.committed_index)
        self.reads.on_applied(self.visible_index())

    def visible_index(self) -> int:
        """The last log index whose effects a reader on any thread sees in LMDB: every applied
        entry when none is waiting for its commit, else the last committed one. (Entries that
        change no state — a leader's no-op, membership — count as applied.) pysyncobj counts an
        entry applied after apply_entry returns, by which time open_entries counts it, and
        open_entries drops to 0 only after the commit: so read in this order, never too high."""
        applied = self.raftLastApplied
        state = self.state
        return state.committed_index if state.open_entries else applied

    def wait_committed(self, timeout: float = COMMITTED_WAIT_S) -> None:
        """Return once every entry applied so far is committed to LMDB, where readers on other
        threads see it (a request that reads what its own write just did); UNAVAILABLE if the
        tick thread cannot commit within `timeout`."""
        if threading.current_thread() is self._thread:
            self._commit_applied(force=True)
            return
        future = self._committed_future()
        if future is None:
            return
        try:
            future.result(timeout)
        except FutureTimeout:
            raise Unavailable(NOT_COMMITTED) from None

    async def wait_committed_async(self, timeout: float = COMMITTED_WAIT_S) -> None:
        """wait_committed without holding the event loop."""
        future = self._committed_future()
        if future is None:
            return
        try:
            await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except asyncio.TimeoutError:
            raise Unavailable(NOT_COMMITTED) from None

    def _committed_future(self) -> Future | None:
        """None when every entry applied so far is committed, else a future done when it is."""
        state = self.state
        if state.committed_index >= state.applied_through:
            return None
        return self.commits.when_committed(lambda: self.state.committed_index,
                                           state.applied_through)

    # --- reads without log writes (master/readindex.py) ----------------------------------------

    def _serve_reads(self) -> None:
        """Each tick, after apply: start a probe round for reads waiting (or to keep the lease
        fresh), release reads whose index is applied."""
        leading = self._isLeader()
        keep_lease = False
        if leading and self.reads.lease_s > 0:
            now = time.monotonic()
            if now >= self._next_lease_probe:
                self._next_lease_probe = now + self._config.heartbeat
                keep_lease = True
        followers = frozenset(_PrivateRaftState.followers(self))
        if followers != self._followers_seen:       # the membership changed (master/membership.py)
            self._followers_seen = followers
            self.reads.reconfigure(followers, (len(followers) + 1) // 2 + 1)
        if (followers, leading) != self._fast_for:    # rebuilt only when either changed
            self._fast_for = (followers, leading)
            self._fast_followers = {n.address: n for n in followers} if leading else {}
        term = self._getTerm()
        seq = self.reads.tick(leading, term, self.raftCommitIndex,
                              leading and _PrivateRaftState.own_term_committed(self),
                              self.visible_index(), keep_lease)
        self._commit_applied()       # due now if reads the lease just confirmed wait for it
        if seq is not None:
            probe = {"type": PROBE_TYPE, "term": term, "seq": seq}
            for node in self.reads.probe_targets(seq, _PrivateRaftState.followers(self)):
                self._transport.send(node, probe)

    def _on_message(self, node, message) -> None:
        """Every authenticated Raft message passes here first: read probes and their answers
        are ours; a vote request is ignored while a leader is known to be alive (below);
        everything else goes to pysyncobj."""
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == PROBE_TYPE:
            term, seq = message.get("term"), message.get("seq")
            if type(term) is int and type(seq) is int and self.answer_probe(term):
                self.note_leader_contact()
                self._transport.send(node, {"type": ACK_TYPE, "term": term, "seq": seq})
            return
        if kind == ACK_TYPE:
            term, seq = message.get("term"), message.get("seq")
            if type(term) is int and type(seq) is int and node in self._followers_seen:
                self.reads.on_ack(node, term, seq, self.visible_index())
            return
        if kind == SNAPSHOT_PROGRESS:
            return                      # its arrival kept the connection alive: nothing else
        if kind == "append_entries" and message.get("term", -1) >= self._getTerm():
            self._leader_contact = time.monotonic()
            if "serialized" in message:
                self._acknowledge_snapshot_piece(node)
            prev_idx, prev_term = message.get("prevLogIdx"), message.get("prevLogTerm")
            if "transmission" in message:
                self._large_entries.see(node, message)
            elif type(prev_idx) is int and type(prev_term) is int:
                self.journal.leader_matched(prev_idx, prev_term)
        elif kind == "request_vote" and self._leader_alive() and not message.get("transfer"):
            # A campaign the leader itself asked for (step-down) is not a disruption.
            return
        elif kind == "timeout_now" and node == self._getLeader() \
                and message.get("term", -1) >= self._getTerm():
            self._transport.transfer_campaign = True
        self._deliver(node, message)
        if kind == "append_entries":         # the only message that changes the log here
            self._follow_members()

    # --- pysyncobj's view of the group follows the log's ----------------------------------------

    def _SyncObj__doChangeCluster(self, request, reverse: bool = False) -> bool:
        """pysyncobj undoes the membership entries after a leader's prevLogIdx *before* it cuts
        them, assuming they all go; the journal keeps those that turn out the same (the
        deferred cut, master/journal.py), and undoing those left pysyncobj counting majorities
        over a group the log does not hold. So nothing is undone here: an entry that really
        leaves the log leaves MembershipLog with it, and `_follow_members` follows that."""
        if reverse:
            return False
        return _PrivateRaftState.apply_membership_change(self, request)

    def _follow_members(self) -> None:
        """After each append received and each tick: pysyncobj's group is the latest
        configuration in the log (MembershipLog) — also after a conflicting tail holding a
        membership entry was cut, or a resent old entry was applied again."""
        _PrivateRaftState.follow_members(
            self, {a for a in self.members.current() if a != self.self_address})

    def _acknowledge_snapshot_piece(self, node) -> None:
        """A follower receiving a snapshot answers nothing until the last piece, and the leader
        drops a connection it has read nothing from for connectionTimeout (3.5 s) — and with it
        the transfer, which starts over. So the follower says it is there, once a second."""
        now = time.monotonic()
        if now - self._snapshot_ack_sent >= 1.0:
            self._snapshot_ack_sent = now
            self._transport.send(node, {"type": SNAPSHOT_PROGRESS})

    def _leader_alive(self) -> bool:
        """A follower that heard from its leader less than the minimum election timeout ago
        ignores vote requests (Raft thesis §4.2.3): a member cut off from the leader cannot
        depose it while it still reaches a majority — which is also what makes the leader
        lease safe (master/readindex.py). The leader itself still hears them (and steps down
        to a higher term), so a member that was cut off always gets back in."""
        return (not self._isLeader()
                and time.monotonic() - self._leader_contact < self._config.election_min)

    # --- read probes over UDP (master/fastprobe.py): called on the event loop ---------------

    def answer_probe(self, term: int) -> bool:
        """Answer a read probe or ping of `term` (over TCP or UDP)? Only as a follower in that
        term."""
        return term == self._getTerm() and not self._isLeader()

    def note_leader_contact(self) -> None:
        self._leader_contact = time.monotonic()

    def fast_followers(self) -> dict:
        """{Raft address: node} of the followers while leading, else {}."""
        return self._fast_followers

    def probe_term(self) -> int | None:
        return self.reads.leading_term()

    def on_probe_ack(self, node, term: int, seq: int) -> None:
        self.reads.on_ack(node, term, seq, self.visible_index())
        if self.reads.awaiting_apply() and self.state.open_entries:
            _PrivateRaftState.wake(self)     # the tick thread commits what they wait for
        if self.reads.waiting():           # reads that came while that round was out
            self.start_read_round()

    def start_read_round(self) -> None:
        """Send a probe round for the reads waiting over UDP from this (event loop) thread
        when the followers it asks answer there; else leave it to the tick thread."""
        endpoint = self.probe_endpoint
        started = None if endpoint is None else self.reads.start_round(
            self.raftCommitIndex, list(self._fast_followers.values()),
            lambda targets: endpoint.reachable(n.address for n in targets))
        if started is None:
            self.reads.nudge()
        elif started != ROUND_OUT:
            seq, term, targets = started
            endpoint.probe(term, seq, [n.address for n in targets])
            self.fast_rounds += 1

    def lease_read(self) -> bool:
        """May a linearizable read run right now without waiting (leader lease valid, every
        committed entry applied)? Counted as a lease read when so."""
        if not (self._isLeader() and self.reads.lease_valid(self._getTerm())
                and self.visible_index() >= self.raftCommitIndex):
            return False
        self.reads.note_lease_read()
        return True

    def _state_changed(self, old: int, new: int) -> None:
        if new != 1:                 # the transfer campaign (if any) is over
            self._transport.transfer_campaign = False
        if new == 2:
            self.journal.confirm_all()
        if self._on_role_change is not None:
            self._on_role_change(ROLE_NAMES.get(new, str(new)))

    # --- the replicated operation --------------------------------------------------------------

    @replicated
    def apply_entry(self, payload: bytes):
        """Apply one log entry: a msgpack list of commands. Runs in the tick thread."""
        index = self.raftLastApplied + 1
        try:
            commands = msgpack.unpackb(payload, raw=False)
        except Exception as exc:   # a malformed entry fails the same way everywhere
            return [{"err": ["INVALID_ARGUMENT", f"undecodable command batch: {exc}"]}]
        if not isinstance(commands, list):
            return [{"err": ["INVALID_ARGUMENT", "a command batch must be a list"]}]
        # Readers need no lock against it; they see it once committed (master/commit_gate.py).
        return self.state.apply_deferred(index, commands)

    def _checkCommandsToApply(self) -> None:
        """pysyncobj appends queued commands on the leader, but on a follower it *forwards* them
        to the leader — also commands queued long ago on a deposed leader (partitioned or paused,
        with commandsWaitLeader they wait until a leader is known again). Such a command can
        then run after its client has retried it elsewhere, got the answer and moved on (its
        exactly-once record pruned): a second execution. So commands are only ever appended by
        the node they were given to, while it is the leader; otherwise they fail (NOT_LEADER)
        and the client retries them, with the same request id, on the leader."""
        if self._isLeader():
            if self._transfer is None:     # while leadership moves, commands wait (thesis §3.10)
                super()._checkCommandsToApply()
            return
        queue = self._SyncObj__commandsQueue
        while True:
            try:
                _, callback = queue.get_nowait()
            except Exception:           # queue.Empty
                return
            if callable(callback):
                callback(None, FAIL_REASON.NOT_LEADER)

    def propose(self, commands: list[dict], callback: Callable[[object, int], None]) -> None:
        """Append a batch of commands to the log; callback(results, fail_reason) after apply."""
        self.apply_entry(pack(commands), callback=callback)

    # --- status ------------------------------------------------------------------------------

    def is_leader(self) -> bool:
        return self._isLeader()

    def leader_address(self) -> str:
        leader = self._getLeader()
        return leader.address if leader is not None else ""

    def status(self) -> dict:
        s = self.getStatus()
        return {
            "role": ROLE_NAMES.get(s["state"], "unknown"),
            "term": s["raft_term"],
            "leader": s["leader"].address if s["leader"] is not None else "",
            "commit_index": s["commit_idx"],
            "applied_index": s["last_applied"],
            "log_entries": s["log_len"],
            "log_bytes": self.journal.size_bytes,
            "has_quorum": bool(s["has_quorum"]),
            "snapshot_index": self.snapshot_index,
            "snapshot_time_ms": self.snapshot_time_ms,
            "journal_fsyncs": self.journal.fsyncs,
            "committed_index": self.state.committed_index,
            "state_commits": self.commits.commits,
        }

    # --- start-up ----------------------------------------------------------------------------

    def _check_log_covers_state(self) -> None:
        """Refuse to start if LMDB is behind the start of the log: entries would be skipped."""
        applied = self.state.applied_index()
        first = self.journal.first_index
        if first > 1 and applied < first - 1:
            raise RuntimeError(
                f"metadata store at index {applied} is behind the journal's first entry {first}; "
                "refusing to start (restore the data directory from a backup or re-seed this master)")


FAIL_NAMES = {v: k for k, v in vars(FAIL_REASON).items() if not k.startswith("_")}
