"""Finding orphan replicas a bounded piece at a time (the leader's garbage collection).

An orphan is a replica that a chunkserver reports but no file references (master/gc.py says
which and when it goes). Whether a handle is referenced is a question for the metadata, one
LMDB lookup per handle; a chunkserver may report hundreds of thousands of replicas the metadata
does not know (a disk moved from another cluster, a store restored from an old backup). Asking
about all of them on every pass kept the leader's CPU busy and every metadata request slower for
as long as they were held (issue 15), so the scanner walks the handles the live servers hold in
*cycles*: each pass (every `interval_s`) checks the next batches of the current cycle's sorted
handle list until its time budget is spent, then stops where it is. A cycle starts from a fresh
list of held handles once the last one is done and `cycle_s` has passed since the last one
started (the garbage collector's own period): a small cluster is checked every `cycle_s` as
before, a big one every few minutes, at a bounded cost per second either way. An orphan already
found is not looked up again until its grace period is over (then once more, just before its
deletion is ordered): each unknown handle costs two lookups, not one per cycle for an hour.

Safety is unchanged: a replica is ordered deleted only by the pass that has just found its
handle unreferenced in the metadata (committed files, pending uploads — a create or AddChunk in
progress references its chunk before any replica is written — and the trash all count) and past
its grace period, and only the version its server holds. What the scan defers is only *when*
an orphan is noticed (at most one cycle late), never what is deleted.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from master import pressure
from master.chunkservers import ChunkserverRegistry
from master.loops import PeriodicThread

log = logging.getLogger(__name__)

SCAN_BATCH = 2_000          # handles looked up in the metadata at once
SCAN_BUDGET_S = 0.02        # per pass: with a pass a second, about 2 % of a core at most
SCAN_INTERVAL_S = 1.0


@dataclass(frozen=True)
class Orphan:
    since: float          # unreferenced since (clock seconds)
    recorded: bool        # the metadata recorded it as garbage (else: a handle it never knew)


class OrphanScanner(PeriodicThread):
    """Keeps `orphans` (handle -> Orphan) current, a budgeted piece per pass, and orders each
    orphan's replicas deleted once its grace period is over."""

    def __init__(self, registry: ChunkserverRegistry,
                 unreferenced: Callable[[list[int]], dict[int, int | None]],
                 is_leader: Callable[[], bool], clock: Callable[[], float],
                 grace_s: float = 3600.0, space_pressure: float = 0.9,
                 pressure_grace_s: float = 60.0, interval_s: float = SCAN_INTERVAL_S,
                 budget_s: float = SCAN_BUDGET_S, batch: int = SCAN_BATCH,
                 cycle_s: float = 0.0):
        super().__init__("orphan-scan", interval_s)
        self.registry = registry
        self.unreferenced = unreferenced   # handles -> {handle: garbage-since ms | None}
        self.is_leader = is_leader
        self.clock = clock
        self.grace_s = grace_s
        self.space_pressure = space_pressure
        self.pressure_grace_s = pressure_grace_s
        self.budget_s = budget_s
        self.batch = max(1, batch)
        self.cycle_s = cycle_s            # at least this long from one cycle's start to the next
        self.orphans: dict[int, Orphan] = {}
        self.deleted = 0          # replicas ordered deleted
        self.scanned = 0          # handles looked up in the metadata (work done, for tests)
        self.cycles = 0           # cycles started
        self._cycle: list[int] = []
        self._cursor = 0
        self._cycle_started: float | None = None     # time.monotonic()
        self._lock = threading.Lock()

    def tick(self) -> None:
        if self.is_leader() and self.registry.warmed_up():
            self.step(self.budget_s)
        else:
            self.forget()

    def forget(self) -> None:
        """Not (or not yet) a leader with a replica map: start from nothing next time."""
        with self._lock:
            self.orphans.clear()
            self._cycle, self._cursor, self._cycle_started = [], 0, None

    def step(self, budget_s: float | None) -> int:
        """Check the next handles of the current cycle until `budget_s` is spent (at least one
        batch; None: a whole fresh cycle) and order the replicas of the orphans past their grace
        deleted; returns how many replicas were ordered deleted."""
        started = time.monotonic()
        queued = 0
        with self._lock:
            if budget_s is None or (self._cursor >= len(self._cycle) and (
                    self._cycle_started is None
                    or started - self._cycle_started >= self.cycle_s)):
                self._new_cycle()
            while self._cursor < len(self._cycle):
                batch = self._cycle[self._cursor:self._cursor + self.batch]
                self._cursor += len(batch)
                for o in self._survey(batch):
                    if o["delete_in_s"] <= 0:
                        self.registry.queue_delete(o["server"], o["handle"], o["version"])
                        queued += 1
                if budget_s is not None and time.monotonic() - started >= budget_s:
                    break
        if queued:
            log.info("garbage collection: deleting %d unreferenced replicas", queued)
        self.deleted += queued
        return queued

    def plan(self) -> list[dict]:
        """Every orphan replica now (a fresh look at every held handle: for admins, on demand):
        handle, version, server, age, and when it will go."""
        with self._lock:
            out = self._survey(self.registry.held_handles(), waiting_too=True)
        return sorted(out, key=lambda o: (o["server"], o["handle"]))

    def replicas(self, within_s: float | None = None) -> int:
        """Orphan replicas as far as the scan has seen (None: all; else those whose grace ends
        within `within_s` seconds) — cheap, for health and metrics."""
        now = self.clock()
        short = self._short_grace(self.registry.view(()))
        with self._lock:
            if within_s is None:
                handles = set(self.orphans)
            else:
                handles = {h for h, o in self.orphans.items()
                           if o.since + self._grace(o.recorded, short) - now <= within_s}
        return self.registry.count_held(handles)

    # --- internals (under self._lock) --------------------------------------------------------

    def _new_cycle(self) -> None:
        # Replicas ordered deleted but not yet confirmed gone keep their orphan record (and
        # age): if the order is lost, the next order goes out without a new grace period.
        self._cycle, self._cursor = self.registry.held_handles(ordered_deleted=True), 0
        self._cycle_started = time.monotonic()
        held = set(self._cycle)
        self.orphans = {h: o for h, o in self.orphans.items() if h in held}
        self.cycles += 1

    def _short_grace(self, view: dict) -> float | None:
        """Under space pressure, recorded garbage goes after the (shorter) pressure grace."""
        if pressure.under_pressure(view, self.space_pressure):
            return min(self.grace_s, self.pressure_grace_s)
        return None

    def _grace(self, recorded: bool, short: float | None) -> float:
        return short if short is not None and recorded else self.grace_s

    def _waiting(self, orphan: Orphan | None, now: float, short: float | None) -> bool:
        """A known orphan whose grace period is not over yet."""
        return orphan is not None and orphan.since + self._grace(orphan.recorded, short) > now

    def _survey(self, handles: list[int], waiting_too: bool = False) -> list[dict]:
        """Look `handles` up in the metadata now (those already known as orphans still in their
        grace period only with `waiting_too`): forget those referenced, remember the
        unreferenced ones (an unknown handle's age counts from when it was first seen), and
        return one entry per replica of them that a live server holds."""
        now = self.clock()
        short = self._short_grace(self.registry.view(()))
        if not waiting_too:
            handles = [h for h in handles if not self._waiting(self.orphans.get(h), now, short)]
            if not handles:
                return []
        view = self.registry.view(handles)
        held = sorted({h for sv in view.values() for h in sv.chunks})
        unreferenced = self.unreferenced(held) if held else {}
        self.scanned += len(held)
        for h in held:
            if h not in unreferenced:
                self.orphans.pop(h, None)
        out = []
        for h, garbage_ms in unreferenced.items():
            known = self.orphans.get(h)
            if garbage_ms:
                since = garbage_ms / 1000
            else:
                since = known.since if known is not None and not known.recorded else now
            self.orphans[h] = Orphan(since, bool(garbage_ms))
            delete_in = max(0.0, since + self._grace(bool(garbage_ms), short) - now)
            for address, sv in view.items():
                version = sv.chunks.get(h)
                if version is not None:
                    out.append({"handle": h, "version": version, "server": address,
                                "age_s": now - since, "delete_in_s": delete_in})
        return out
