"""Membership and leadership changes on the Raft node, in its tick thread (pysyncobj's state is
only consistent there). `MetadataRaft` mixes this in; master/members.py decides what is allowed
and calls it."""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Callable

from pysyncobj import FAIL_REASON

from gfs.errors import DeadlineExceeded, FailedPrecondition, NotFound
from master.membership import MembershipLog, encode_change
from master.raft_private import PrivateRaftState
from master.readindex import NotLeading


class GroupChanges:
    """Needs from the Raft node: `members` (MembershipLog), `_config` (RaftConfig), pysyncobj's
    SyncObj methods; call `_init_group_changes()` in its constructor and `_run_tick_calls()` from
    a tick callback."""

    members: MembershipLog

    def _init_group_changes(self) -> None:
        self._transfer: dict | None = None      # a leadership transfer in progress (tick thread)
        self._tick_calls: list[Callable[[], None]] = []
        self._tick_calls_lock = threading.Lock()


    def run_in_tick(self, fn: Callable[[], object]) -> Future:
        """Run `fn` in the tick thread (pysyncobj's state is only consistent there)."""
        future: Future = Future()

        def call() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:        # handed to the caller
                future.set_exception(exc)

        with self._tick_calls_lock:
            self._tick_calls.append(call)
        PrivateRaftState.wake(self)
        return future

    def _run_tick_calls(self) -> None:
        with self._tick_calls_lock:
            calls, self._tick_calls = self._tick_calls, []
        for call in calls:
            call()
        self._continue_transfer()

    def group_view(self) -> dict:
        """The group as this node sees it (call in the tick thread: `run_in_tick`)."""
        return {"leader": self._isLeader(), "term": self._getTerm(),
                "commit_index": self.raftCommitIndex,
                "last_index": PrivateRaftState.last_log_index(self),
                "ready": self._isLeader() and PrivateRaftState.own_term_committed(self),
                "members": self.members.current(),
                "last_change_index": self.members.last_change_index(),
                "match": PrivateRaftState.match_indexes(self) if self._isLeader() else {},
                "connected": PrivateRaftState.connected(self),
                "transferring": self._transfer is not None}

    def append_change(self, kind: str, raft: str, grpc_address: str,
                      callback: Callable[[object, int], None]) -> None:
        """Append a membership entry (on the leader); callback(None, fail_reason) once it is
        committed, or at once with REQUEST_DENIED if pysyncobj refuses it."""
        self._applyCommand(encode_change(kind, raft, grpc_address), callback)

    def start_transfer(self, target: str, timeout: float) -> Future:
        """Hand leadership to member `target` ("": the most up-to-date follower). Call in the
        tick thread; the future ends when this node is no longer the leader."""
        if not self._isLeader():
            raise NotLeading("this master is not the leader")
        if self._transfer is not None:
            raise FailedPrecondition("a leadership transfer is already in progress")
        followers = {n.address for n in PrivateRaftState.followers(self)}
        if not followers:
            raise FailedPrecondition("this master is the only member: no one to hand "
                                     "leadership to")
        if target and target not in followers:
            raise NotFound(f"{target} is not a member besides the leader")
        future: Future = Future()
        self._transfer = {"target": target or None, "until": time.monotonic() + timeout,
                          "future": future, "sent_at": None}
        return future

    def _continue_transfer(self) -> None:
        """Each tick while a transfer is on: commands wait (so a follower can catch up), and
        as soon as the target (or the most up-to-date follower) has the whole log it gets
        pysyncobj's TimeoutNow; it campaigns at once, and the others let it."""
        t = self._transfer
        if t is None:
            return
        now = time.monotonic()
        if not self._isLeader():
            self._transfer = None
            t["future"].set_result(True)
            return
        if now > t["until"]:
            self._transfer = None
            t["future"].set_exception(DeadlineExceeded(
                "no follower caught up and took over in time; this master stays the leader"))
            return
        if t["sent_at"] is not None and now - t["sent_at"] < self._config.election_max:
            return                                  # the target is campaigning
        outcome: list[int] = []
        self.transferLeadership(t["target"], callback=lambda _, err: outcome.append(err))
        if outcome and outcome[0] == FAIL_REASON.SUCCESS:
            t["sent_at"] = now
