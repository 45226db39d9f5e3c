"""When the Raft tick thread commits the entries it applied, and who waits for that.

The tick thread applies committed log entries into one open LMDB write transaction
(`MetadataState.apply_deferred`) and hands each entry's results to its caller at once: the entry
is already durable in a majority's journal and its results are final, so the reply need not wait
for LMDB's own fdatasync. Those entries reach LMDB — and readers on other threads — when the
transaction commits: one fdatasync for every entry applied meanwhile instead of one each (on
every master: with three on one disk, those fdatasyncs also queued behind each other's journal
syncs). A crash before the commit only undoes what the journal replays at start-up.

The gate says when to commit: at once when anyone waits for an applied entry (a linearizable
read released at its read index, a request reading its own write, a snapshot), else once the
oldest uncommitted entry is `delay` seconds old or `max_entries` are open. A reader that must
see everything applied so far asks `when_committed(target)`; the tick thread commits at its next
pass (woken for it) and settles the waiters with `committed`.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Callable

DEFAULT_DELAY = 0.01          # s the oldest applied entry may wait for its commit
DEFAULT_MAX_ENTRIES = 256     # log entries in one commit at most (bounds the dirty pages)


class CommitGate:
    """Commit policy and waiters for the applied-but-uncommitted entries; thread-safe."""

    def __init__(self, wake: Callable[[], None], delay: float = DEFAULT_DELAY,
                 max_entries: int = DEFAULT_MAX_ENTRIES):
        """`wake` nudges the tick thread out of its poll; `delay` 0 commits after every pass."""
        self.delay = delay
        self.max_entries = max_entries
        self._wake = wake
        self._lock = threading.Lock()
        self._waiters: list[tuple[int, Future]] = []
        self._requested = False
        self.commits = 0              # commits made (a metric: entries ÷ commits = batching)

    def due(self, open_entries: int, open_since: float, readers_waiting: bool,
            now: float | None = None) -> bool:
        """Should the tick thread commit now? (`open_entries` 0: nothing to commit.)"""
        if open_entries == 0:
            return False
        if self._requested or readers_waiting or open_entries >= self.max_entries:
            return True
        return (time.monotonic() if now is None else now) - open_since >= self.delay

    def poll_timeout(self, open_entries: int, open_since: float, tick: float) -> float:
        """How long the tick thread may sleep in its poll: no longer than the oldest open
        entry may wait for its commit."""
        if open_entries == 0:
            return tick
        return max(0.0, min(tick, open_since + self.delay - time.monotonic()))

    def when_committed(self, committed: Callable[[], int], target: int) -> Future:
        """A future done once the entries up to `target` are committed (`committed()`: the
        index committed so far); the tick thread is asked to commit at its next pass."""
        future: Future = Future()
        with self._lock:
            if committed() >= target:
                future.set_result(None)
                return future
            self._waiters.append((target, future))
            self._requested = True
        self._wake()
        return future

    def committed(self, index: int) -> None:
        """Tick thread: a commit made everything up to `index` visible; settle its waiters."""
        with self._lock:
            self.commits += 1
            done = [f for t, f in self._waiters if t <= index]
            self._waiters = [(t, f) for t, f in self._waiters if t > index]
            self._requested = bool(self._waiters)
        for future in done:
            future.set_result(None)
