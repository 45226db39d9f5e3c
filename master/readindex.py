"""Linearizable reads without log writes: the read index, and the optional leader lease.

A read must see every write acknowledged before it started, and a deposed leader must never
answer one. Putting a barrier entry in the log for each read proves both, at the price of a
write (an fsync on a majority). The read index proves them with one message round instead
(Raft thesis §6.4):

1. The leader notes its commit index R when it takes the read.
2. It confirms that it still leads: it sends a *probe* (its term and a sequence number) to every
   follower; a follower answers a probe of its own current term. Answers from a majority
   (the leader counts itself) to a probe sent after the read was taken prove no other leader
   was elected before that moment (one leader per term, and terms only grow). One round is out
   at a time: reads arriving while it is out share the next probe, sent when it is answered
   (or after `PROBE_PATIENCE`, should its answers be lost) — under load, one round for many
   reads instead of one per tick, which costs the leader and every follower a message each.
3. It waits until it has applied up to R, then reads its state.

A round goes to as few followers as make a majority with the leader: those that answered the
previous probe first (`probe_targets`) — in a group of 3, one follower. Each message costs
both ends a wake-up and a pass through pysyncobj's framing, and the answers beyond a majority
confirm nothing more. When those followers did not all answer the previous probe (one slowed
down or died, or this is the first round), the round goes to every follower; so a follower
that dies costs the reads of one round at most `PROBE_PATIENCE` before they are asked again of
everyone. Which followers are asked never affects what counts: any majority of answers to a
probe sent after the read confirms it.

A new leader's commit index may lag entries earlier leaders committed until it commits an
entry of its own term (the no-op every leader appends when elected), so reads wait for that.

Leader lease (`read_mode="lease"`): the leader also skips step 2 while a majority answered a
probe sent less than `lease_s` ago. That is safe because a follower that heard from the leader
ignores vote requests for `election_min` seconds after (`sticky_followers`, Raft thesis
§4.2.3), so no other leader can be elected within `election_min` of the probe's sending.
`lease_s` is `LEASE_FRACTION` of `election_min`: the assumption is that no two masters' steady
clocks (the monotonic clock: it keeps counting while a process is stopped or starved) run more
than 1/LEASE_FRACTION - 1 (33 %) apart in rate over one lease — far beyond real clock drift
(NTP-disciplined or not: crystals drift by parts per million). A leader paused (SIGSTOP, a
stalled VM) longer than the lease finds it expired when it wakes and falls back to a probe round,
which followers of a newer term never answer.

This module is the bookkeeping only (no sockets, no threads of its own): the Raft tick thread
calls `tick`, `on_ack` and `on_applied`; request handlers call `submit` from any thread.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Iterable

from gfs.errors import Unavailable
from master.handoff import Waiter, running_future, settle

READ_MODES = ("index", "lease")
LEASE_FRACTION = 0.75        # lease = this × the minimum election timeout (see above)
MAX_PROBES_KEPT = 4096      # send times of unanswered probes remembered (a lost leader's)
PROBE_PATIENCE = 0.05       # s a round may stay unanswered before the next one goes out anyway
PROBE_TYPE = "gfs_read_probe"
ACK_TYPE = "gfs_read_ack"
ROUND_OUT = "round out"


class NotLeading(Unavailable):
    """The master stopped leading (or never did) while a read waited: retry on the leader."""


class _Read:
    __slots__ = ("waiter", "deadline", "index")

    def __init__(self, deadline: float, waiter: Waiter):
        self.waiter = waiter
        self.deadline = deadline
        self.index = 0


class ReadIndex:
    """Reads waiting for leadership confirmation and for apply; thread-safe."""

    def __init__(self, majority: int, lease_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic, wake: Callable[[], None] = lambda: None):
        """`majority`: members that make a majority (the leader included); `lease_s` > 0 turns
        the lease on; `wake` nudges the tick thread when a read arrives."""
        self.majority = majority
        self.lease_s = lease_s
        self.clock = clock
        self.wake = wake
        self._lock = threading.Lock()
        self._new: list[_Read] = []                   # not yet covered by a probe
        self._probing: dict[int, list[_Read]] = {}    # probe seq -> reads it confirms
        self._confirmed: list[_Read] = []             # leadership confirmed, waiting for apply
        self._sent_at: dict[int, float] = {}          # probe seq -> when it was sent
        self._acked: dict[object, int] = {}           # follower -> highest probe seq it answered
        self._first: list[object] = []                 # who answered probe _first_seq, in order
        self._first_seq = 0
        self._term = -1
        self._nudged = False          # the tick thread was woken for the reads in _new
        self._leading_ready = False   # the last tick: leading in _term, own entry committed
        self._seq = 0
        self._lease_until = float("-inf")
        self.probes = 0          # probe rounds started (a metric)
        self.lease_reads = 0     # reads answered under the lease

    # --- request side (any thread) -------------------------------------------------------------

    def submit(self, timeout: float, waiter: Waiter | None = None, wake: bool = True) -> Waiter:
        """`waiter` (a new concurrent Future if None), resolved with the read index once the
        read may run (this master's state has applied it), or failed with NotLeading /
        Unavailable (master/handoff.py: a LoopWaiter is resolved on its event loop).
        `wake=False`: the caller starts the round itself (`start_round`), or leaves the read
        to the next tick."""
        read = _Read(self.clock() + timeout, waiter if waiter is not None else running_future())
        with self._lock:
            self._new.append(read)
        if wake:
            self.nudge()
        return read.waiter

    def nudge(self) -> None:
        """Wake the tick thread for the reads waiting, unless it was woken for them already
        (once per batch of reads, not once per read)."""
        with self._lock:
            if self._nudged or not self._new:
                return
            self._nudged = True
        self.wake()

    def start_round(self, commit: int, followers: list, usable: Callable[[list], bool]
                    ) -> tuple[int, int, list] | str | None:
        """From any thread: a probe round now for the reads waiting, if the last tick saw this
        master leading with its own term's entry committed, no round is out, and `usable`
        accepts the followers the round would ask. Returns (seq, term, followers to ask) — the
        caller sends the probes —, ROUND_OUT (the reads go with the next round, which the
        answer to this one starts), or None (then wake the tick thread, which sends rounds
        itself). `commit`: the commit index now (read after the reads arrived)."""
        with self._lock:
            now = self.clock()
            if not (self._leading_ready and self._new):
                return None
            if self._round_out(now):
                return ROUND_OUT
            targets = self._targets(self._seq + 1, followers)
            if not usable(targets):
                return None
            seq = self._start_round(commit, now)
            return seq, self._term, targets

    def leading_term(self) -> int | None:
        """The term this master leads in with its own entry committed, as of the last tick
        (None when it did not): the term of the probes it may send."""
        with self._lock:
            return self._term if self._leading_ready else None

    def waiting(self) -> bool:
        """Are reads waiting for a round to start?"""
        return bool(self._new)

    def awaiting_apply(self) -> bool:
        """Are confirmed reads waiting for their index to be applied (committed to LMDB)?"""
        return bool(self._confirmed)

    def lease_valid(self, term: int) -> bool:
        """Does the leader lease of `term` cover a read starting now? (False without a lease.)"""
        return term == self._term and self.clock() < self._lease_until

    # --- tick thread ---------------------------------------------------------------------------

    def tick(self, leading: bool, term: int, commit: int, ready: bool, applied: int,
             keep_lease: bool = False) -> int | None:
        """Called by the Raft thread every tick. `ready`: the leader's commit index covers an
        entry of its own term. Returns the seq of a probe to send now to every follower (with
        the current term), or None. `keep_lease`: send one anyway to keep the lease fresh."""
        now = self.clock()
        with self._lock:
            if not leading or term != self._term:
                # Reads not yet under a probe may stay for a new term's leader: they get their
                # index and their confirmation in that term.
                self._reset(term, leading)
                if not leading:
                    return None
            self._expire(now)
            self._leading_ready = ready
            if not ready:
                return None
            if self._new and now < self._lease_until:      # the lease covers them: no round
                for read in self._new:
                    read.index = commit
                self.lease_reads += len(self._new)
                self._confirmed.extend(self._new)
                self._new, self._nudged = [], False
            # A round for new reads, for the lease, or again for reads whose round nobody
            # answered within PROBE_PATIENCE (its follower died): they would otherwise wait
            # for some other read to start one, or for their deadline.
            asking = self._new or keep_lease or any(self._probing.values())
            if not asking or (not keep_lease and self._round_out(now)):
                seq = None
            else:
                seq = self._start_round(commit, now)
        self.on_applied(applied)
        return seq

    def on_ack(self, follower: object, term: int, seq: int, applied: int) -> None:
        """A follower answered probe `seq` of term `term`."""
        with self._lock:
            if term != self._term or seq > self._seq:
                return
            if seq <= self._acked.get(follower, 0):
                return
            self._acked[follower] = seq
            if seq > self._first_seq:
                self._first_seq, self._first = seq, [follower]
            elif seq == self._first_seq:
                self._first.append(follower)
            self._confirm()
        self.on_applied(applied)

    def on_applied(self, applied: int) -> None:
        """Release confirmed reads whose index this master has applied."""
        with self._lock:
            if not self._confirmed:
                return
            ready = [r for r in self._confirmed if r.index <= applied]
            if not ready:
                return
            self._confirmed = [r for r in self._confirmed if r.index > applied]
        settle([(read.waiter, read.index, None) for read in ready])

    def probe_targets(self, seq: int, followers: list) -> list:
        """Whom to send probe `seq` (just returned by `tick`): the followers that answered
        probe seq - 1 first, as many as a majority needs, or all of `followers` unless enough
        of them did (see the module doc)."""
        with self._lock:
            return self._targets(seq, followers)

    def reconfigure(self, followers: frozenset, majority: int) -> None:
        """The group's membership changed: count answers of its current followers only, against
        its new majority; a lease earned under the old membership is dropped."""
        with self._lock:
            self.majority = majority
            for gone in [f for f in self._acked if f not in followers]:
                del self._acked[gone]
            self._first, self._first_seq = [], 0
            self._lease_until = float("-inf")

    def note_lease_read(self) -> None:
        """A read answered at once under the lease (counted for the metrics)."""
        self.lease_reads += 1

    # --- internals (lock held) -----------------------------------------------------------------

    def _targets(self, seq: int, followers: list) -> list:
        need = self.majority - 1
        if self._first_seq != seq - 1 or len(self._first) < need:
            return followers
        quick = [f for f in self._first[:need] if f in followers]
        return quick if len(quick) == need else followers

    def _start_round(self, commit: int, now: float) -> int:
        """A new probe for the reads waiting (their index: `commit`); returns its seq."""
        self._seq += 1
        seq = self._seq
        for read in self._new:
            read.index = commit
        if self._new:
            self._probing[seq] = self._new
        self._new, self._nudged = [], False
        self._sent_at[seq] = now
        if len(self._sent_at) > MAX_PROBES_KEPT:   # never answered: forget the oldest
            for old in sorted(self._sent_at)[:MAX_PROBES_KEPT // 2]:
                del self._sent_at[old]
        self.probes += 1
        self._confirm()
        return seq

    def _confirm(self) -> None:
        """Move the reads of every probe a majority answered to `_confirmed`; extend the lease."""
        confirmed = self._confirmed_seq()
        if not confirmed:
            return
        for s in [s for s in self._probing if s <= confirmed]:
            self._confirmed.extend(self._probing.pop(s))
        sent = self._sent_at.get(confirmed)
        if sent is not None and self.lease_s > 0:
            self._lease_until = max(self._lease_until, sent + self.lease_s)
        for s in [s for s in self._sent_at if s < confirmed]:
            del self._sent_at[s]

    def _round_out(self, now: float) -> bool:
        """Is the latest probe still unanswered by a majority, and recent enough to wait for?"""
        sent = self._sent_at.get(self._seq)
        return sent is not None and now - sent < PROBE_PATIENCE and self._confirmed_seq() < self._seq

    def _confirmed_seq(self) -> int:
        """The highest probe seq a majority (the leader included) answered."""
        need = self.majority - 1                       # followers besides the leader
        if need <= 0:
            return self._seq
        answered = sorted(self._acked.values(), reverse=True)
        return answered[need - 1] if len(answered) >= need else 0

    def _reset(self, term: int, leading: bool) -> None:
        failed = [r for reads in self._probing.values() for r in reads] + self._confirmed
        if not leading:
            failed += self._new
            self._new, self._nudged = [], False
        self._probing, self._confirmed = {}, []
        self._sent_at.clear()
        self._acked.clear()
        self._first, self._first_seq = [], 0
        self._term = term
        self._leading_ready = False
        self._seq = 0
        self._lease_until = float("-inf")
        _fail(failed, NotLeading("this master is no longer the leader"))

    def _expire(self, now: float) -> None:
        late: list[_Read] = []
        for reads in (self._new, self._confirmed, *self._probing.values()):
            late.extend(r for r in reads if r.deadline <= now)
        if not late:
            return
        gone = set(map(id, late))
        self._new = [r for r in self._new if id(r) not in gone]
        self._nudged = self._nudged and bool(self._new)
        self._confirmed = [r for r in self._confirmed if id(r) not in gone]
        for seq in list(self._probing):
            self._probing[seq] = [r for r in self._probing[seq] if id(r) not in gone]
        _fail(late, Unavailable("could not confirm this master's leadership in time (a newer "
                                "leader may exist); retry"))


def _fail(reads: Iterable[_Read], error: Exception) -> None:
    settle([(read.waiter, None, error) for read in reads])
