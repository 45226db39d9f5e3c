"""Online changes of the masters' Raft group: add a member, remove one, hand leadership over.

The group changes one server at a time (Raft's single-server change, as pysyncobj implements
it; the result is durable through master/membership.py). The leader checks each request before
it appends anything, so a change that would leave the group without a working majority is
refused with a reason instead of stalling the cluster:

* one change at a time: none while an earlier membership entry is uncommitted, while a new
  member is still catching up, or while leadership is being handed over;
* adding needs enough *reachable* members to make a majority of the larger group (otherwise
  the new, empty member would be needed for every commit until it caught up: replace a dead
  member by removing it first, then adding the new one);
* removing needs the members left to still make a majority of the smaller group; the last
  member is never removed, and the leader is removed only after handing leadership over.

An added member counts as done when its log has caught up with the commit index of the moment
it was added (pysyncobj sends a snapshot when the log it needs was compacted away).
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, TimeoutError as FutureTimeout

from pysyncobj import FAIL_REASON

from gfs.errors import (Aborted, AlreadyExists, DeadlineExceeded, FailedPrecondition,
                        InvalidArgument, NotFound, Unavailable)
from gfs.validate import address
from master.membership import ADD, REMOVE
from master.raft import MetadataRaft

log = logging.getLogger(__name__)


def majority(members: int) -> int:
    return members // 2 + 1


class GroupAdmin:
    """Checks and runs membership and leadership changes on the leader."""

    def __init__(self, raft: MetadataRaft, poll_s: float = 0.05):
        self.raft = raft
        self.poll_s = poll_s
        self._one_change = threading.Lock()

    # --- reading -------------------------------------------------------------------------------

    def view(self, timeout: float = 5.0) -> dict:
        """The group as the tick thread sees it (raft.group_view)."""
        try:
            return self.raft.run_in_tick(self.raft.group_view).result(timeout)
        except FutureTimeout:
            raise Unavailable("this master's Raft thread did not answer in time") from None

    def describe(self) -> dict:
        """Members (raft, grpc, role, match index, connected) with the term and commit index."""
        v = self.view()
        me = self.raft.self_address
        rows = []
        for raft_address, grpc_address in sorted(v["members"].items()):
            mine = raft_address == me
            rows.append({
                "raft_address": raft_address, "grpc_address": grpc_address,
                "role": ("leader" if v["leader"] else self.raft.status()["role"]) if mine
                else ("follower" if v["leader"] else ""),
                "match_index": v["last_index"] if mine else v["match"].get(raft_address, 0),
                "connected": mine or raft_address in v["connected"]})
        return {"members": rows, "term": v["term"], "commit_index": v["commit_index"],
                "leader_raft": me if v["leader"] else self.raft.leader_address()}

    # --- changes -------------------------------------------------------------------------------

    def add(self, raft_address: str, grpc_address: str, timeout: float) -> dict:
        """Add a member (already running with --join) and wait until it has caught up."""
        address(raft_address, "raft address")
        address(grpc_address, "gRPC address")
        stop_at = time.monotonic() + timeout
        with self._exclusive():
            v = self._ready_view()
            members = v["members"]
            if raft_address in members:
                raise AlreadyExists(f"{raft_address} is already a member")
            if grpc_address in members.values():
                raise AlreadyExists(f"gRPC address {grpc_address} is already a member's")
            live = self._live(v)
            need = majority(len(members) + 1)
            if len(live) < need:
                raise FailedPrecondition(
                    f"a group of {len(members) + 1} needs {need} members for a majority but "
                    f"only {len(live)} of the {len(members)} are reachable; remove a dead "
                    f"member first (`gfs master remove`), then add")
            started = time.monotonic()
            self._append(ADD, raft_address, grpc_address, stop_at)
            committed = time.monotonic()
            target = self.view()["commit_index"]
            while True:
                v = self.view()
                if v["match"].get(raft_address, 0) >= target:
                    break
                if not v["leader"]:
                    raise Aborted(f"{raft_address} was added, but this master lost the "
                                  "leadership while it caught up (see `gfs master list`)")
                if time.monotonic() >= stop_at:
                    raise DeadlineExceeded(
                        f"{raft_address} was added but has not caught up yet (match index "
                        f"{v['match'].get(raft_address, 0)} of {target}): is it running with "
                        f"--join and reachable? See `gfs master list`")
                time.sleep(self.poll_s)
            done = time.monotonic()
        log.info("master %s added to the group (commit %.2f s, catch-up %.2f s)", raft_address,
                 committed - started, done - committed)
        return {**self.describe(), "commit_s": committed - started, "catch_up_s": done - committed}

    def remove(self, member: str, timeout: float) -> dict:
        """Remove a member given by its Raft or gRPC address."""
        if not member:
            raise InvalidArgument("name the member to remove (its Raft or gRPC address)")
        stop_at = time.monotonic() + timeout
        with self._exclusive():
            v = self._ready_view()
            members = v["members"]
            raft_address = self.resolve(member, members)
            if len(members) == 1:
                raise FailedPrecondition("the last member of the group cannot be removed")
            if raft_address == self.raft.self_address:
                raise FailedPrecondition(
                    f"{raft_address} is the leader: hand leadership over first "
                    f"(`gfs master step-down`), then remove it")
            live = self._live(v) - {raft_address}
            need = majority(len(members) - 1)
            if len(live) < need:
                raise FailedPrecondition(
                    f"without {raft_address} the group of {len(members) - 1} needs {need} "
                    f"members for a majority but only {len(live)} are reachable")
            started = time.monotonic()
            self._append(REMOVE, raft_address, "", stop_at)
            committed = time.monotonic()
        log.info("master %s removed from the group", raft_address)
        return {**self.describe(), "commit_s": committed - started}

    def step_down(self, to: str, timeout: float) -> dict:
        """Hand leadership to member `to` ("": the most up-to-date follower); the new leader."""
        started = time.monotonic()
        with self._exclusive():
            v = self.view()
            if not v["leader"]:
                raise Unavailable("this master is not the leader")
            target = self.resolve(to, v["members"]) if to else ""
            try:
                moved: Future = self.raft.run_in_tick(
                    lambda: self.raft.start_transfer(target, timeout)).result(5.0)
                moved.result(timeout + 1.0)
            except FutureTimeout:
                raise DeadlineExceeded("leadership did not move in time") from None
        stop_at = time.monotonic() + max(5.0, timeout)
        while time.monotonic() < stop_at:           # until the group has elected someone else
            leader = self.raft.leader_address()
            if leader and leader != self.raft.self_address:
                return {"leader_raft": leader, "leader_grpc": v["members"].get(leader, ""),
                        "seconds": time.monotonic() - started}
            time.sleep(self.poll_s)
        raise DeadlineExceeded("this master stepped down but no new leader was elected in time")

    # --- helpers -------------------------------------------------------------------------------

    @staticmethod
    def resolve(member: str, members: dict[str, str]) -> str:
        """The Raft address of the member named by its Raft or gRPC address."""
        if member in members:
            return member
        for raft_address, grpc_address in members.items():
            if grpc_address and grpc_address == member:
                return raft_address
        raise NotFound(f"{member} is not a member of the group (members: "
                       f"{', '.join(sorted(members))})")

    def _exclusive(self):
        if not self._one_change.acquire(blocking=False):
            raise FailedPrecondition("another membership or leadership change is in progress "
                                     "on this leader; one at a time")
        return _Held(self._one_change)

    def _ready_view(self) -> dict:
        v = self.view()
        if not v["leader"]:
            raise Unavailable("this master is not the leader")
        if not v["ready"]:
            raise Unavailable("the leader was just elected and has not committed its first "
                              "entry yet; retry")
        if v["transferring"]:
            raise FailedPrecondition("leadership is being handed over; retry on the new leader")
        if v["last_change_index"] > v["commit_index"]:
            raise FailedPrecondition(
                f"a membership change is in progress (log entry {v['last_change_index']} is "
                f"not committed yet); one change at a time")
        return v

    def _live(self, v: dict) -> set[str]:
        """Members this leader reaches: itself and its connected followers."""
        me = self.raft.self_address
        return {m for m in v["members"] if m == me or m in v["connected"]}

    def _append(self, kind: str, raft_address: str, grpc_address: str, stop_at: float) -> None:
        """Append the change and wait until it is committed."""
        done: Future = Future()
        self.raft.append_change(kind, raft_address, grpc_address,
                                lambda _, err: done.done() or done.set_result(err))
        try:
            err = done.result(max(0.1, stop_at - time.monotonic()))
        except FutureTimeout:
            raise DeadlineExceeded(
                f"the change ({kind} {raft_address}) was not committed in time; it may still "
                f"take effect: see `gfs master list`") from None
        if err == FAIL_REASON.SUCCESS:
            return
        if err == FAIL_REASON.REQUEST_DENIED:
            raise FailedPrecondition(f"the leader refused the change ({kind} {raft_address}): "
                                     "another change is in progress or it was just elected")
        raise Aborted(f"the leadership moved during the change ({kind} {raft_address}); it may "
                      "have taken effect: see `gfs master list`")


class _Held:
    """Context manager releasing a lock acquired without blocking."""

    def __init__(self, lock: threading.Lock):
        self._lock = lock

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()
