"""The leader's replica manager: re-replication, corrupt and stale replicas, surplus trimming.

Every pass compares the metadata's chunk table (handle, version, replication of every chunk) with
the replica map rebuilt from heartbeats (`ChunkserverRegistry.view`), and:

- copies every committed chunk that has fewer healthy replicas than its replication factor to a
  new chunkserver chosen by placement (`CopyChunk` on the target, which pulls the bytes from the
  healthy replicas and verifies them against the checksum in the metadata). Chunks with the
  fewest healthy replicas go first; a bounded number of copies run at once, each throttled.
  A corrupt replica of a chunk with a healthy copy is rebuilt in place (it already takes the
  room: this works on a full server); a chunk whose replicas are all corrupt is rebuilt block by
  block from them when every block is intact somewhere. Repair copies may use the chunkservers'
  repair reserve (gfs/space.py), which new chunks leave free. A chunk no copy can start for is
  *blocked* (`blocker`: no room, or too few chunkservers), which health reports instead of an
  ETA.
- deletes replicas that are stale (a lower version than the metadata's: they missed a rewrite
  while their server was away) at once, corrupt replicas once the chunk is back at full
  redundancy, and surplus replicas (e.g. of a server that came back after its chunks were
  re-replicated) keeping the replicas that spread over the most hosts.

Nothing happens until the replica map is complete (`map_complete`: every live chunkserver has
had the dead-after timeout to report since this leader took over), and a chunk that a live
server of its recorded replica set has not reported yet must stay short for a few seconds
before it is repaired, so that heartbeats lagging behind a commit do not cause copies. Deletions only ever go out when the chunk keeps at least its replication
factor of healthy replicas (stale replicas excepted: a newer version is referenced).
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import grpc

from gfs.errors import GfsError
from master.chunkservers import ChunkserverRegistry, ServerView
from master.loops import WorkerLoop, copy_chunk

log = logging.getLogger(__name__)

RATE_WINDOW_S = 60.0
FAILED_TARGET_COOLDOWN_S = 30.0
MAX_COPIES_PER_SERVER = 2
RECORD_PER_PASS = 100     # replica-set hints written through the log per pass (at most)


@dataclass
class RepairTask:
    handle: int
    version: int
    length: int
    checksum: int
    replication: int
    healthy: list[str]
    corrupt: list[str]
    holders: set[str]                 # every server holding any version of the chunk
    awaited: bool = False             # a live server of the recorded set has not reported it

    @property
    def missing(self) -> int:
        return self.replication - len(self.healthy)

    @property
    def priority(self) -> tuple:
        return (len(self.healthy), -self.missing, self.handle)


@dataclass
class Plan:
    tasks: list[RepairTask] = field(default_factory=list)         # best first
    deletes: list[tuple[str, int, int, str]] = field(default_factory=list)  # server, handle, version, why
    figures: dict = field(default_factory=dict)
    # handle -> (version, replica set) to record where it differs from the metadata's hint
    record: dict[int, tuple[int, list[str]]] = field(default_factory=dict)


NO_ROOM = "no_room"
TOO_FEW_SERVERS = "too_few_chunkservers"
BLOCKED_REASONS = (NO_ROOM, TOO_FEW_SERVERS)


def blocker(task: RepairTask, view: dict[str, ServerView]) -> str:
    """Why no repair copy of `task` can start (a pure function of the replica map): NO_ROOM
    (every live server without a replica lacks room for it, repair reserve included),
    TOO_FEW_SERVERS (every live server already holds it), or "" (it can: onto another server,
    or in place over a corrupt replica, which takes no more room)."""
    if task.corrupt:
        return ""
    others = [sv for a, sv in view.items() if a not in task.holders]
    if not others:
        return TOO_FEW_SERVERS
    return "" if any(sv.free_bytes >= task.length for sv in others) else NO_ROOM


def blocked_figures(tasks: list[RepairTask], view: dict[str, ServerView]) -> dict:
    """How many of `tasks` are blocked, by reason, and how many more chunkservers the chunks
    blocked by TOO_FEW_SERVERS need (their replication less the live servers)."""
    counts = collections.Counter(blocker(t, view) for t in tasks)
    more = max((t.replication - len(view) for t in tasks if blocker(t, view) == TOO_FEW_SERVERS),
               default=0)
    return {"repair_blocked": sum(counts[r] for r in BLOCKED_REASONS),
            "repair_blocked_by": {r: counts[r] for r in BLOCKED_REASONS},
            "chunkservers_needed": max(more, 1) if counts[TOO_FEW_SERVERS] else 0}


def replicas_by_handle(view: dict[str, ServerView]) -> dict[int, list[tuple[str, int, bool]]]:
    """handle -> [(server, version held, corrupt?)] from every live server."""
    out: dict[int, list[tuple[str, int, bool]]] = collections.defaultdict(list)
    for address, sv in view.items():
        for handle, version in sv.chunks.items():
            out[handle].append((address, version, sv.corrupt.get(handle) == version))
    return out


def _keep_spread(healthy: list[str], view: dict[str, ServerView], recorded: list[str],
                 count: int) -> list[str]:
    """Which `count` of the healthy replicas to keep: distinct hosts first, then the recorded
    replica set, then the servers with the most room."""
    order = sorted(healthy, key=lambda a: (a not in recorded, -view[a].score, a))
    keep: list[str] = []
    for a in order:
        if len(keep) < count and view[a].host not in {view[k].host for k in keep}:
            keep.append(a)
    for a in order:
        if len(keep) < count and a not in keep:
            keep.append(a)
    return keep


def plan(rows: list[dict], view: dict[str, ServerView], in_flight: set[int]) -> Plan:
    """Compare the chunk table with the replica map (a pure function: unit-tested alone)."""
    by_handle = replicas_by_handle(view)
    p = Plan()
    f = dict(chunks=0, under_replicated=0, unavailable=0, at_risk=0, corrupt_replicas=0,
             stale_replicas=0, surplus_replicas=0, repair_bytes_pending=0)
    for row in rows:
        h, v = row["handle"], row["version"]
        replicas = by_handle.get(h, ())
        healthy = sorted(a for a, ver, bad in replicas if ver == v and not bad)
        corrupt = sorted(a for a, ver, bad in replicas if ver == v and bad)
        for a, ver, _ in replicas:
            if ver < v:
                p.deletes.append((a, h, ver, "stale"))
                f["stale_replicas"] += 1
        if not row["committed"]:
            continue            # an upload in progress: its writer owns the replicas
        r = row["replication"]
        f["chunks"] += 1
        f["corrupt_replicas"] += len(corrupt)
        if len(healthy) < r:
            f["under_replicated"] += 1
            f["unavailable"] += not healthy
            f["at_risk"] += len(healthy) == 1 and r > 1
            if healthy or corrupt:
                holders = {a for a, _, _ in replicas}
                awaited = any(a in view and a not in holders for a in row.get("replicas") or ())
                p.tasks.append(RepairTask(h, v, row["length"], row["checksum"], r, healthy,
                                          corrupt, holders, awaited))
                f["repair_bytes_pending"] += row["length"] * (r - len(healthy))
            continue
        for a in corrupt:
            p.deletes.append((a, h, v, "corrupt"))
        keep = healthy
        if len(healthy) > r and h not in in_flight:
            keep = _keep_spread(healthy, view, row.get("replicas") or [], r)
            for a in healthy:
                if a not in keep:
                    p.deletes.append((a, h, v, "surplus"))
                    f["surplus_replicas"] += 1
        if h not in in_flight and sorted(keep) != sorted(row.get("replicas") or []):
            # At full redundancy only: a shortfall is recorded by the copy that ends it.
            p.record[h] = (v, sorted(keep))
    p.tasks.sort(key=lambda t: t.priority)
    p.figures = f
    return p


class RepairRate:
    """Bytes copied per second over the last minute of repair activity."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._done: collections.deque[tuple[float, int]] = collections.deque()
        self._busy_since: float | None = None
        self._lock = threading.Lock()

    def busy(self, busy: bool) -> None:
        with self._lock:
            if not busy:
                self._busy_since = None
            elif self._busy_since is None:
                self._busy_since = self._clock()

    def add(self, nbytes: int) -> None:
        with self._lock:
            self._done.append((self._clock(), nbytes))

    def rate(self) -> float:
        now = self._clock()
        with self._lock:
            while self._done and self._done[0][0] < now - RATE_WINDOW_S:
                self._done.popleft()
            if self._busy_since is None or not self._done:
                return 0.0
            window = min(RATE_WINDOW_S, max(1.0, now - self._busy_since))
            return sum(n for _, n in self._done) / window


class Repairer(WorkerLoop):
    """Runs `plan` on the leader every `interval_s` and carries it out.

    `claimed()` names the chunks another loop is copying (the balancer's moves): their extra
    replica is not surplus. `plan_lock` is held while a pass plans and queues its deletions; a
    loop that adds a replica and then deletes another holds it for that step, so a pass never
    plans from the moment in between."""

    def __init__(self, registry: ChunkserverRegistry, chunk_table: Callable[[], list[dict]],
                 record_replicas: Callable[[int, int, list[str]], None],
                 is_leader: Callable[[], bool], concurrency: int = 2,
                 rate_bytes_s: int = 0, interval_s: float = 1.0, settle_s: float = 5.0,
                 clock=time.monotonic):
        super().__init__("repair", registry, chunk_table, is_leader, concurrency, interval_s,
                         clock)
        self.record_replicas = record_replicas
        self.rate_bytes_s = rate_bytes_s
        self.settle_s = settle_s
        self.rate = RepairRate(clock)
        self.repaired = 0
        self.repaired_bytes = 0
        self.last: Plan = Plan()
        self._in_flight: dict[int, str] = {}         # handle -> target
        self._short_since: dict[int, float] = {}
        self._failed: dict[tuple[int, str], float] = {}
        self.plan_lock = threading.Lock()
        self.claimed: Callable[[], set[int]] = set

    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def copying(self) -> set[int]:
        """Handles with a repair copy running."""
        with self._lock:
            return set(self._in_flight)

    def tick(self) -> None:
        if self.is_leader() and self.registry.map_complete():
            self.run_pass()
        else:
            self._short_since.clear()
            self.last = Plan()
            self.rate.busy(False)

    def run_pass(self) -> Plan:
        """Plan once, send the deletions, start copies up to the concurrency limit."""
        rows = self.chunk_table()
        with self.plan_lock:
            with self._lock:
                in_flight = set(self._in_flight)
            p = plan(rows, self.planning_view(rows), in_flight | self.claimed())
            for address, handle, version, why in p.deletes:
                log.info("deleting %s replica of chunk %d v%d on %s", why, handle, version,
                         address, extra={"fields": {"handle": handle, "replica": address,
                                                    "reason": why}})
                self.registry.queue_delete(address, handle, version)
        for handle, (version, replicas) in list(p.record.items())[:RECORD_PER_PASS]:
            self._pool.submit(self._record, handle, version, replicas)
        now = self.clock()
        short = {t.handle for t in p.tasks}
        self._short_since = {h: self._short_since.get(h, now) for h in short}
        # A live server of the recorded replica set that has not reported the chunk is most
        # likely a heartbeat behind a fresh commit: give it settle_s before copying.
        ready = [t for t in p.tasks if t.handle not in in_flight
                 and (not t.awaited or now - self._short_since[t.handle] >= self.settle_s)]
        self.last = p
        self.rate.busy(bool(p.tasks) or bool(in_flight))
        self._failed = {k: t for k, t in self._failed.items() if t > now}
        for task in ready:
            if self.in_flight() >= self.concurrency:
                break
            target = self._choose_target(task)
            if target is None:
                continue
            with self._lock:
                self._in_flight[task.handle] = target
            self._pool.submit(self._copy, task, target)
        return p

    def _choose_target(self, task: RepairTask) -> str | None:
        with self._lock:
            busy = collections.Counter(self._in_flight.values())
        full = {a for a, n in busy.items() if n >= MAX_COPIES_PER_SERVER}
        failed = {a for (h, a) in self._failed if h == task.handle}
        in_place = [a for a in task.corrupt if a not in full and a not in failed]
        if in_place and task.healthy:
            # Rebuild the corrupt replica where it is: it already takes the room, and its
            # server reads every block from the healthy replicas.
            return in_place[0]
        try:
            return self.registry.place(1, exclude=task.holders | full | failed,
                                       existing=task.healthy, need_bytes=task.length,
                                       repair=True)[0]
        except GfsError:
            pass
        # Only corrupt replicas and no other server can take it: rebuild one in place.
        return in_place[0] if in_place else None

    def _copy(self, task: RepairTask, target: str) -> None:
        per_copy = self.rate_bytes_s // self.concurrency if self.rate_bytes_s else 0
        sources = task.healthy + [a for a in task.corrupt if a != target]
        started = self.clock()
        try:
            copy_chunk(self.channels, target, task.handle, task.version, task.length,
                       task.checksum, sources, per_copy)
            # Into the map before the chunk leaves in_flight: the next pass (poked below) must
            # not see it short and copy it again.
            self.registry.add_replica(target, task.handle, task.version)
        except grpc.RpcError as err:
            self.failures += 1
            self._failed[(task.handle, target)] = self.clock() + FAILED_TARGET_COOLDOWN_S
            log.warning("copy of chunk %d v%d to %s failed: %s", task.handle, task.version,
                        target, err.details() or err.code().name,
                        extra={"fields": {"handle": task.handle, "target": target}})
            return
        finally:
            with self._lock:
                self._in_flight.pop(task.handle, None)
            self.poke()
        self.repaired += 1
        self.repaired_bytes += task.length
        self.rate.add(task.length)
        log.info("re-replicated chunk %d v%d to %s (%d bytes in %.2fs)", task.handle,
                 task.version, target, task.length, self.clock() - started,
                 extra={"fields": {"handle": task.handle, "target": target}})
        self._record(task.handle, task.version,
                     [a for a in task.healthy if a != target] + [target])

    def _record(self, handle: int, version: int, replicas: list[str]) -> None:
        """Write a chunk's replica set into the metadata (the hint a new leader reads from)."""
        try:
            self.record_replicas(handle, version, replicas)
        except Exception as err:       # only the recorded hint is stale; the replicas stand
            log.info("could not record the replica set of chunk %d: %s", handle, err)

    def figures(self) -> dict:
        """The redundancy figures of a fresh plan (nothing is acted on), with the repair queue,
        copies in flight, the measured rate and the time to full redundancy it implies, and how
        many queued chunks no copy can start for (and why: see `blocker`). When every queued
        chunk is blocked and no copy runs, the time is unknown (-1), not bytes / a stale rate.
        Every figure comes from one look at the copies in flight, so they agree with each other
        (a copy ending between two looks made health report none in flight and an ETA)."""
        with self._lock:
            in_flight = set(self._in_flight)
        rows = self.chunk_table()
        view = self.planning_view(rows)
        p = plan(rows, view, in_flight | self.claimed())
        f = dict(p.figures)
        queued = [t for t in p.tasks if t.handle not in in_flight]
        f["repair_queue"] = len(queued)
        # A partial map (a leader that is still hearing reports) would blame missing room or
        # servers that are only missing from the map: nothing is blocked until it is complete.
        f.update(blocked_figures(queued if self.registry.map_complete() else [], view))
        rate = self.rate.rate()
        pending = f["repair_bytes_pending"]
        stuck = queued and f["repair_blocked"] == len(queued) and not in_flight
        f.update(repair_in_flight=len(in_flight), repair_rate_bytes_s=rate,
                 eta_s=0.0 if not pending else (pending / rate if rate and not stuck else -1.0),
                 repaired=self.repaired, repair_failures=self.failures)
        return f
