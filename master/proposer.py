"""Batching of client commands into Raft log entries.

Concurrent requests that reach the leader while earlier entries are still being replicated are
packed into one log entry (one fsync per node, one LMDB transaction), which is what lets a
Python Raft group keep up with many clients. Up to `max_inflight` entries are in the log at
once, so a lone client still gets one round trip per command. An entry holds at most
`max_batch` commands and about `max_batch_bytes` of inline file data (master/inline.py), and at
most `max_pending` commands wait for an entry: beyond that a command is refused at once with
RESOURCE_EXHAUSTED (the leader is overloaded; the client backs off) instead of queueing without
bound.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Callable

from pysyncobj import FAIL_REASON

from gfs.errors import DeadlineExceeded, ResourceExhausted, Unavailable
from master.handoff import LoopWaiter, Waiter, running_future, settle, wait

ProposeFn = Callable[[list[dict], Callable[[object, int], None]], None]

_FAIL_MESSAGES = {
    FAIL_REASON.QUEUE_FULL: "the leader's command queue is full",
    FAIL_REASON.MISSING_LEADER: "no leader is elected right now",
    FAIL_REASON.DISCARDED: "the leader changed before the command was committed",
    FAIL_REASON.NOT_LEADER: "this master is no longer the leader",
    FAIL_REASON.LEADER_CHANGED: "the leader changed before the command was committed",
    FAIL_REASON.REQUEST_DENIED: "the command was refused by the leader",
    FAIL_REASON.UNKNOWN_OUTCOME: "the command's outcome is unknown",
}


class _Slot:
    __slots__ = ("command", "waiter", "weight")

    def __init__(self, command: dict, waiter: Waiter):
        self.command = command
        data = command.get("data")
        self.weight = len(data) if isinstance(data, bytes) else 0     # inline file bytes
        self.waiter = waiter


class Proposer:
    """Thread-safe; results arrive as futures (or loop waiters: master/handoff.py), resolved by
    the Raft tick thread."""

    def __init__(self, propose: ProposeFn, max_batch: int = 1024, max_inflight: int = 2,
                 max_batch_bytes: int = 4 << 20, max_pending: int = 50_000):
        self._propose = propose
        self._max_batch = max_batch
        self._max_batch_bytes = max_batch_bytes
        self._max_pending = max_pending
        self._max_inflight = max_inflight
        self._lock = threading.Lock()
        self._pending: list[_Slot] = []
        self._inflight = 0
        self.batches = 0
        self.commands = 0

    def submit(self, command: dict, waiter: Waiter | None = None) -> Waiter:
        """Append `command` to the log; `waiter` (a new concurrent Future if None) gets its
        result once applied on this node (or an Unavailable error if the entry was lost to a
        leader change)."""
        slot = _Slot(command, waiter if waiter is not None else running_future())
        with self._lock:
            if len(self._pending) >= self._max_pending:
                raise ResourceExhausted(f"the leader has {len(self._pending)} commands waiting "
                                        "for the log; retry later")
            self._pending.append(slot)
        self._pump()
        return slot.waiter

    async def submit_async(self, command: dict, timeout: float) -> dict:
        """`submit` for asyncio callers, with a deadline."""
        waiter = self.submit(command, LoopWaiter(asyncio.get_running_loop()))
        try:
            return await wait(waiter, timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(f"command not committed within {timeout:.1f}s (outcome "
                                   "unknown; retrying with the same request id is safe)") from None

    def _pump(self) -> None:
        """Start as many batches as the in-flight limit allows."""
        while True:
            with self._lock:
                if not self._pending or self._inflight >= self._max_inflight:
                    return
                take, weight = 0, 0
                for slot in self._pending[:self._max_batch]:
                    if take and weight + slot.weight > self._max_batch_bytes:
                        break
                    take, weight = take + 1, weight + slot.weight
                batch = self._pending[:take]
                del self._pending[:take]
                self._inflight += 1
                self.batches += 1
                self.commands += len(batch)
            try:
                self._propose([s.command for s in batch], self._callback_for(batch))
            except Exception as exc:  # e.g. the node is shutting down
                self._finish(batch, None, Unavailable(f"cannot propose: {exc}"))

    def _callback_for(self, batch: list[_Slot]) -> Callable[[object, int], None]:
        def done(results, reason: int) -> None:
            if reason == FAIL_REASON.SUCCESS and isinstance(results, list) and len(results) == len(batch):
                self._finish(batch, results, None)
            else:
                message = _FAIL_MESSAGES.get(reason, f"raft failure {reason}")
                self._finish(batch, None, Unavailable(message))
        return done

    def _finish(self, batch: list[_Slot], results: list | None, error: Exception | None) -> None:
        if error is not None:
            settle([(slot.waiter, None, error) for slot in batch])
        else:
            settle([(slot.waiter, result, None) for slot, result in zip(batch, results)])
        with self._lock:
            self._inflight -= 1
        self._pump()


