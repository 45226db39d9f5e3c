"""The leader's tier mover: keeps each replica in the tier its file's storage class asks for.

- `hot` files live in the hot tier, `cold` files in the cold tier (zstd frames).
- `auto` files go cold once nobody has read them for `cold_after_s`, and come back hot when
  they are read `warm_reads` times within `warm_window_s`. The two rules are deliberately
  asymmetric (hysteresis): one stray read does not warm a cold file, and a warmed file stays hot
  for a whole idle period again, so chunks do not flap.

Reads are what clients announce when they fetch a file's data (`Stat` with `for_read`); the
leader counts them in memory and writes each file's last-read time into the metadata (`note_reads`)
every few seconds, so a new leader knows how long files have been idle.

A move happens inside one chunkserver (`MoveChunk`): the new tier's copy is written and fsync'd
before the old one is removed, so a move never lowers the number of healthy replicas. Only
healthy replicas of chunks at full redundancy are moved, a few at a time.
"""
from __future__ import annotations

import collections
import logging
import threading
from typing import Callable

import grpc

from master.chunkservers import ChunkserverRegistry, ServerView
from master.loops import WorkerLoop
from proto import chunkserver_pb2 as cpb
from gfs.clock import now as gfs_now

log = logging.getLogger(__name__)

HOT, COLD = "hot", "cold"


class ReadTracker:
    """Recent data reads per inode (soft state) and the last-read times not yet persisted."""

    def __init__(self, window_s: float, clock=gfs_now):
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._reads: dict[int, collections.deque[float]] = {}
        self._unsaved: dict[int, int] = {}

    def note(self, inode: int) -> None:
        now = self._clock()
        with self._lock:
            q = self._reads.setdefault(inode, collections.deque(maxlen=64))
            q.append(now)
            self._unsaved[inode] = int(now * 1000)

    def recent(self, inode: int) -> int:
        cutoff = self._clock() - self.window_s
        with self._lock:
            return sum(1 for t in self._reads.get(inode, ()) if t >= cutoff)

    def last_ms(self, inode: int) -> int:
        with self._lock:
            q = self._reads.get(inode)
            return int(q[-1] * 1000) if q else 0

    def take_unsaved(self) -> dict[int, int]:
        with self._lock:
            out, self._unsaved = self._unsaved, {}
            cutoff = self._clock() - self.window_s
            for inode in [i for i, q in self._reads.items() if not q or q[-1] < cutoff]:
                del self._reads[inode]
            return out

    def restore(self, unsaved: dict[int, int]) -> None:
        """Saving failed: keep them for the next attempt."""
        with self._lock:
            for inode, ms in unsaved.items():
                self._unsaved[inode] = max(ms, self._unsaved.get(inode, 0))


def target_tier(row: dict, current: str, tracker: ReadTracker, now_ms: int,
                cold_after_s: float, warm_reads: int) -> str:
    """Where a chunk of this file should live now."""
    cls = row.get("storage_class") or HOT
    if cls in (HOT, COLD):
        return cls
    last = max(row.get("atime", 0), tracker.last_ms(row["inode"]))
    if current == COLD:
        return HOT if tracker.recent(row["inode"]) >= warm_reads else COLD
    return COLD if now_ms - last >= cold_after_s * 1000 else HOT


def plan_moves(rows: list[dict], view: dict[str, ServerView], tracker: ReadTracker,
               now_ms: int, cold_after_s: float, warm_reads: int) -> list[tuple[str, int, int, str]]:
    """(server, handle, version, tier) for every healthy replica of a fully replicated,
    committed chunk that is not in the tier its file wants."""
    holders: dict[int, list[tuple[str, bool]]] = collections.defaultdict(list)
    for address, sv in view.items():
        for handle, version in sv.chunks.items():
            if sv.corrupt.get(handle) != version:
                holders[handle].append((address, handle in sv.cold))
    moves = []
    for row in rows:
        h, v = row["handle"], row["version"]
        if not row["committed"]:
            continue
        replicas = [(a, cold) for a, cold in holders.get(h, ()) if view[a].chunks.get(h) == v]
        if len(replicas) < row["replication"]:
            continue                    # repair first; never touch a chunk short of replicas
        current = COLD if all(cold for _, cold in replicas) else HOT
        want = target_tier(row, current, tracker, now_ms, cold_after_s, warm_reads)
        moves += [(a, h, v, want) for a, cold in replicas if (COLD if cold else HOT) != want]
    return moves


class TierMover(WorkerLoop):
    def __init__(self, registry: ChunkserverRegistry, chunk_table: Callable[[], list[dict]],
                 propose: Callable[[dict], dict], is_leader: Callable[[], bool],
                 cold_after_s: float = 7 * 86400.0, warm_reads: int = 2,
                 warm_window_s: float = 3600.0, concurrency: int = 2,
                 interval_s: float = 2.0, clock=gfs_now):
        super().__init__("tiering", registry, chunk_table, is_leader, concurrency, interval_s,
                         clock)
        self.propose = propose
        self.cold_after_s = cold_after_s
        self.warm_reads = warm_reads
        self.tracker = ReadTracker(warm_window_s, clock)
        self.moved = 0
        self.moved_bytes = 0
        self._busy: set[tuple[str, int]] = set()

    def target(self, row: dict, current: str) -> str:
        return target_tier(row, current, self.tracker, int(self.clock() * 1000),
                           self.cold_after_s, self.warm_reads)

    def tick(self) -> None:
        if self.is_leader():
            self.save_reads()
            if self.registry.map_complete():
                self.run_pass()

    def save_reads(self) -> None:
        unsaved = self.tracker.take_unsaved()
        if not unsaved:
            return
        try:
            self.propose({"op": "note_reads", "reads": sorted(unsaved.items())})
        except Exception:
            self.tracker.restore(unsaved)
            raise

    def run_pass(self) -> int:
        rows = self.chunk_table()
        moves = plan_moves(rows, self.planning_view(rows), self.tracker,
                           int(self.clock() * 1000), self.cold_after_s, self.warm_reads)
        started = 0
        for address, handle, version, tier in moves:
            with self._lock:
                if len(self._busy) >= self.concurrency:
                    break
                if (address, handle) in self._busy:
                    continue
                self._busy.add((address, handle))
            self._pool.submit(self._move, address, handle, version, tier)
            started += 1
        return started

    def _move(self, address: str, handle: int, version: int, tier: str) -> None:
        try:
            resp = self.channels.stub(address).MoveChunk(
                cpb.MoveRequest(handle=handle, version=version, tier=tier), timeout=600)
            self.registry.set_tier(address, handle, tier, resp.stored_bytes)
            self.moved += 1
            self.moved_bytes += resp.stored_bytes
            log.info("moved chunk %d v%d on %s to the %s tier", handle, version, address, tier,
                     extra={"fields": {"handle": handle, "replica": address, "tier": tier}})
        except grpc.RpcError as err:
            self.failures += 1
            log.warning("moving chunk %d on %s to %s failed: %s", handle, address, tier,
                        err.details() or err.code().name)
        finally:
            with self._lock:
                self._busy.discard((address, handle))
            self.poke()
