"""The leader's disk-use balancer: evens out how full the chunkservers are.

A server's use is 1 − free/capacity as its heartbeats report it (with `gfs chunkserver
--capacity` the capacity is what gfs may store there, so servers sharing one disk still differ).
When the spread — the fullest server's use minus the emptiest's — is above the threshold, the
balancer moves replicas from the fullest server to the least used ones until the spread is
within it. A new, empty chunkserver therefore fills up gradually, at the balancing rate.

A move is a copy and a delete: the target pulls the replica (`CopyChunk`, every block verified
against the metadata's checksum), the new replica set is recorded through the log, and only then,
if the chunk still has its full replication without the source, is the source's replica ordered
deleted. A move never lowers the number of healthy replicas. Only chunks at exactly their
replication factor with no stale or corrupt copy around are moved, never onto a server holding any
version of the chunk, never to a host (then rack) that would put two replicas in one failure
domain when the source did not, and never so far that the target would end up fuller than the
source (no flapping). Re-replication goes first: while chunks are short of replicas, balancing
waits. Heartbeats lag behind moves, so until a server's figures have caught up (two heartbeats
after the move) the balancer adds the moved bytes to its reported use itself.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import grpc

from master.chunkservers import ChunkserverRegistry, ServerView
from master.loops import WorkerLoop, copy_chunk
from master.repair import RepairRate, Repairer, replicas_by_handle

log = logging.getLogger(__name__)

CAUGHT_UP_BEATS = 2     # heartbeats after a move until a server's own figures include it
FAILED_MOVE_COOLDOWN_S = 30.0


@dataclass(frozen=True)
class Move:
    handle: int
    version: int
    length: int
    checksum: int
    replication: int
    source: str
    target: str
    sources: tuple[str, ...]          # healthy replicas to copy from, the source first


@dataclass
class BalancePlan:
    moves: list[Move] = field(default_factory=list)
    uses: dict[str, float] = field(default_factory=dict)    # after the planned moves
    spread: float = 0.0                                     # before the planned moves
    bytes_to_move: int = 0
    blocked: str = ""          # why nothing can move while the spread is above the threshold


def projected_uses(view: dict[str, ServerView], pending: dict[str, int]) -> dict[str, float]:
    """Use of every live server that reports a capacity, with `pending` bytes (moves its
    heartbeats do not show yet: + on targets, − on sources) added."""
    return {a: min(1.0, max(0.0, sv.use + pending.get(a, 0) / sv.capacity_bytes))
            for a, sv in view.items() if sv.capacity_bytes}


def spread_of(uses: dict[str, float]) -> float:
    return max(uses.values()) - min(uses.values()) if len(uses) > 1 else 0.0


def bytes_to_move(uses: dict[str, float], view: dict[str, ServerView], threshold: float) -> int:
    """About how many bytes must leave the servers above the mean use + threshold/2 (after
    which every server is within the threshold of every other, give or take a chunk)."""
    if len(uses) < 2:
        return 0
    caps = {a: view[a].capacity_bytes for a in uses}
    mean = sum(uses[a] * caps[a] for a in uses) / sum(caps.values())
    return int(sum(max(0.0, uses[a] - mean - threshold / 2) * caps[a] for a in uses))


def _domains(addresses: list[str], view: dict[str, ServerView]) -> tuple[int, int]:
    """(distinct hosts, distinct racks) of a replica set."""
    return (len({view[a].host for a in addresses}),
            len({view[a].rack or view[a].host for a in addresses}))


def _pick(source: str, target: str, view: dict[str, ServerView],
          by_handle: dict[int, list[tuple[str, int, bool]]], rows: dict[int, dict],
          uses: dict[str, float], busy: set[int]) -> Move | None:
    """The best chunk to move from `source` to `target`: hot before cold (a cold replica frees
    only its compressed size), then the biggest that does not overshoot."""
    sv, tv = view[source], view[target]
    best, best_key = None, None
    for h, v in sv.chunks.items():
        row = rows.get(h)
        if (row is None or h in busy or h in tv.chunks or not row["committed"]
                or row["version"] != v or not row["length"]):
            continue
        replicas = by_handle.get(h, ())
        healthy = [a for a, ver, bad in replicas if ver == v and not bad]
        if len(healthy) != len(replicas) or len(healthy) != row["replication"]:
            continue            # short, surplus, stale or corrupt copies: the repairer's job
        length = row["length"]
        if uses[target] + length / tv.capacity_bytes > uses[source] - length / sv.capacity_bytes:
            continue            # the target would end up fuller than the source
        others = [a for a in healthy if a != source]
        after, before = _domains(others + [target], view), _domains(others + [source], view)
        if after[0] < before[0] or after[1] < before[1]:
            continue            # would put two replicas in one failure domain
        key = (h in sv.cold, -length, h)
        if best_key is None or key < best_key:
            best_key = key
            best = Move(h, v, length, row["checksum"], row["replication"], source, target,
                        tuple([source] + others))
    return best


def plan_balance(rows: list[dict], view: dict[str, ServerView], threshold: float,
                 pending: dict[str, int], busy: set[int], limit: int) -> BalancePlan:
    """Up to `limit` moves that shrink the spread (a pure function: unit-tested alone)."""
    uses = projected_uses(view, pending)
    p = BalancePlan(uses=dict(uses), spread=spread_of(uses),
                    bytes_to_move=bytes_to_move(uses, view, threshold))
    if p.spread <= threshold:
        return p
    by_handle = replicas_by_handle(view)
    table = {r["handle"]: r for r in rows}
    busy = set(busy)
    while len(p.moves) < limit and spread_of(uses) > threshold:
        source = max(uses, key=lambda a: (uses[a], a))
        move = None
        for target in sorted(uses, key=lambda a: (uses[a], a)):
            if uses[target] >= uses[source]:
                break
            move = _pick(source, target, view, by_handle, table, uses, busy)
            if move is not None:
                break
        if move is None:
            p.blocked = (f"no chunk on {source} can move to a less used chunkserver (none at "
                         f"full redundancy that fits without overshooting or sharing a host)")
            break
        p.moves.append(move)
        busy.add(move.handle)
        uses[source] -= move.length / view[source].capacity_bytes
        uses[move.target] += move.length / view[move.target].capacity_bytes
    p.uses = uses
    return p


class Balancer(WorkerLoop):
    """Runs `plan_balance` on the leader every `interval_s` and carries out the moves, at most
    `concurrency` at once, copying at `rate_bytes_s` in total (0: unthrottled)."""

    def __init__(self, registry: ChunkserverRegistry, chunk_table: Callable[[], list[dict]],
                 record_replicas: Callable[[int, int, list[str]], None],
                 is_leader: Callable[[], bool], repairer: Repairer, threshold: float = 0.10,
                 rate_bytes_s: int = 64 << 20, concurrency: int = 1, enabled: bool = True,
                 interval_s: float = 1.0, clock=time.monotonic):
        super().__init__("balance", registry, chunk_table, is_leader, concurrency, interval_s,
                         clock)
        self.record_replicas = record_replicas
        self.repairer = repairer
        self.threshold = threshold
        self.rate_bytes_s = rate_bytes_s
        self.enabled = enabled
        self.rate = RepairRate(clock)
        self.moved = 0
        self.moved_bytes = 0
        self.state, self.reason = ("balanced", "") if enabled else ("off", "")
        self._moving: dict[int, Move] = {}
        self._settling: list[tuple[str, int, int]] = []   # (server, bytes, beats when moved)
        self._failed: dict[int, float] = {}               # handle -> retry after (clock)
        repairer.claimed = self.claimed

    def claimed(self) -> set[int]:
        """Chunks being moved (their extra replica is not surplus)."""
        with self._lock:
            return set(self._moving)

    def tick(self) -> None:
        if self.enabled and self.is_leader():
            self.run_pass()
        else:       # a later term starts from fresh heartbeats: old adjustments do not apply
            with self._lock:
                self._settling.clear()

    def _pending(self, view: dict[str, ServerView]) -> dict[str, int]:
        """Bytes of moves in flight and of moves the servers' figures do not show yet."""
        out: dict[str, int] = {}
        with self._lock:
            self._settling = [(a, n, beats) for a, n, beats in self._settling
                              if a in view and view[a].beats < beats + CAUGHT_UP_BEATS]
            for a, n, _ in self._settling:
                out[a] = out.get(a, 0) + n
            for m in self._moving.values():
                out[m.source] = out.get(m.source, 0) - m.length
                out[m.target] = out.get(m.target, 0) + m.length
        return out

    def run_pass(self) -> BalancePlan:
        if not self.registry.map_complete():
            self.state, self.reason = "starting", "the leader is still hearing chunkserver reports"
            return BalancePlan()
        rows = self.chunk_table()
        view = self.planning_view(rows)
        now = self.clock()
        with self._lock:
            self._failed = {h: t for h, t in self._failed.items() if t > now}
            busy = set(self._moving) | set(self._failed)
            free_slots = self.concurrency - len(self._moving)
        short = self.repairer.last.tasks
        limit = 0 if short else free_slots
        p = plan_balance(rows, view, self.threshold, self._pending(view),
                         busy | self.repairer.copying(), limit)
        for m in p.moves:
            with self._lock:
                self._moving[m.handle] = m
            self._pool.submit(self._move, m)
        with self._lock:
            moving = bool(self._moving)
        self.rate.busy(moving)
        if short:
            self.state, self.reason = "paused", f"re-replication first: {len(short)} chunks short"
        elif moving:
            self.state, self.reason = "balancing", ""
        elif p.blocked:
            self.state, self.reason = "blocked", p.blocked
        elif p.spread > self.threshold:
            self.state, self.reason = "balancing", ""
        else:
            self.state, self.reason = "balanced", ""
        return p

    def _move(self, m: Move) -> None:
        per_copy = self.rate_bytes_s // self.concurrency if self.rate_bytes_s else 0
        started = self.clock()
        try:
            copy_chunk(self.channels, m.target, m.handle, m.version, m.length, m.checksum,
                       list(m.sources), per_copy)
            self.registry.add_replica(m.target, m.handle, m.version)
            self._settle(m.target, m.length)
            self._finish(m)
            self.moved += 1
            self.moved_bytes += m.length
            self.rate.add(m.length)
            log.info("moved chunk %d v%d from %s to %s (%d bytes in %.2fs)", m.handle, m.version,
                     m.source, m.target, m.length, self.clock() - started,
                     extra={"fields": {"handle": m.handle, "source": m.source,
                                       "target": m.target}})
        except grpc.RpcError as err:
            self._failure(m, err.details() or err.code().name)
        except Exception as err:       # recording failed (e.g. leadership lost): source stays
            self._failure(m, str(err))
        finally:
            with self._lock:
                self._moving.pop(m.handle, None)
            self.poke()

    def _finish(self, m: Move) -> None:
        """The target holds the copy: record the new replica set, then drop the source's."""
        others = [a for a in m.sources if a != m.source]
        self.record_replicas(m.handle, m.version, others + [m.target])
        with self.repairer.plan_lock:
            healthy = [a for a, sv in self.registry.view({m.handle}).items() if a != m.source
                       and sv.chunks.get(m.handle) == m.version
                       and sv.corrupt.get(m.handle) != m.version]    # deletions left out
            if len(healthy) < m.replication:
                log.warning("chunk %d lost a replica while it was moved: keeping the source "
                            "replica on %s", m.handle, m.source)
                return
            self.registry.queue_delete(m.source, m.handle, m.version)
        self._settle(m.source, -m.length)

    def _settle(self, address: str, nbytes: int) -> None:
        beats = self.registry.view(()).get(address)
        with self._lock:
            self._settling.append((address, nbytes, beats.beats if beats else 0))

    def _failure(self, m: Move, why: str) -> None:
        self.failures += 1
        with self._lock:
            self._failed[m.handle] = self.clock() + FAILED_MOVE_COOLDOWN_S
        log.warning("moving chunk %d from %s to %s failed: %s", m.handle, m.source, m.target,
                    why, extra={"fields": {"handle": m.handle, "target": m.target}})

    def status(self) -> dict:
        """What `gfs admin balance --status` shows: the servers' reported use, the spread, the
        state of the last pass, the moves running and done, the rate and an ETA."""
        view = self.registry.view(())
        uses = projected_uses(view, {})
        with self._lock:
            moving = list(self._moving.values())
        spread = spread_of(uses)
        state, reason = self.state, self.reason
        if self.enabled and not self.registry.map_complete():
            state, reason = "starting", "the leader is still hearing chunkserver reports"
        elif state == "balanced" and spread > self.threshold:
            state = "balancing"            # reported figures are a heartbeat behind the plan
        pending = bytes_to_move(uses, view, self.threshold) if spread > self.threshold else 0
        rate = self.rate.rate()
        servers = [{"address": a, "use": uses.get(a, 0.0),
                    "capacity_bytes": sv.capacity_bytes, "free_bytes": sv.free_bytes,
                    "chunk_count": sv.replica_count,
                    "moving_out": sum(m.source == a for m in moving),
                    "moving_in": sum(m.target == a for m in moving)}
                   for a, sv in sorted(view.items())]
        return {"state": state, "reason": reason, "spread": spread, "threshold": self.threshold,
                "servers": servers, "moves_in_flight": len(moving), "moved": self.moved,
                "moved_bytes": self.moved_bytes, "failures": self.failures,
                "rate_bytes_s": rate, "bytes_to_move": pending,
                "eta_s": 0.0 if not pending else (pending / rate if rate else -1.0),
                "rate_limit_bytes_s": self.rate_bytes_s}
