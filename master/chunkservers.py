"""The leader's soft state about chunkservers: who is alive, what they hold, where new chunks go.

Replica locations are never written to the Raft log (as in GFS): they are rebuilt from
heartbeats. A leader that has just been elected starts empty and asks every chunkserver that
heartbeats to it for a full report, so it acts only on what the chunkservers say they hold now.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

from gfs.errors import FailedPrecondition, Unavailable


@dataclass
class ServerState:
    address: str
    rack: str = ""
    instance: str = ""
    last_seen: float = 0.0
    capacity_bytes: int = 0
    used_bytes: int = 0
    free_bytes: int = 0
    chunk_count: int = 0
    io_load: float = 0.0
    cpu_load: float = 0.0
    rss_bytes: int = 0
    full_report: bool = False
    chunks: dict[int, int] = field(default_factory=dict)   # handle -> version held
    to_delete: set[int] = field(default_factory=set)       # sent with the next heartbeat reply

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0]


class ChunkserverRegistry:
    """Thread-safe registry fed by Heartbeat RPCs (only on the leader)."""

    def __init__(self, dead_after: float = 10.0, clock=time.monotonic):
        self.dead_after = dead_after
        self._clock = clock
        self._lock = threading.Lock()
        self._servers: dict[str, ServerState] = {}
        self._warm_until = 0.0

    @property
    def warmup(self) -> float:
        """How long a new leader waits for reports before it believes a server is missing."""
        return min(self.dead_after, 5.0)

    def warmed_up(self) -> bool:
        """Has this leader been collecting reports long enough to trust its picture?"""
        return self._clock() >= self._warm_until

    def holdings(self) -> dict[str, set[int]]:
        """Live server -> handles it reported."""
        with self._lock:
            return {s.address: set(s.chunks) for s in self._alive()}

    def queue_delete(self, address: str, handle: int) -> None:
        with self._lock:
            s = self._servers.get(address)
            if s is not None:
                s.to_delete.add(handle)

    def take_deletes(self, address: str) -> list[int]:
        """Deletions to send to `address` now (each is sent once; GC re-queues if still held)."""
        with self._lock:
            s = self._servers.get(address)
            if s is None or not s.to_delete:
                return []
            out, s.to_delete = sorted(s.to_delete), set()
            return out

    def reset(self) -> None:
        """Forget everything (leadership changed: rebuild from fresh full reports)."""
        with self._lock:
            self._servers.clear()
            self._warm_until = self._clock() + self.warmup

    def heartbeat(self, address: str, rack: str, instance: str, full: bool,
                  added: list[tuple[int, int]], removed: list[tuple[int, int]],
                  figures: dict) -> bool:
        """Record one heartbeat; returns True when the server must send a full report."""
        with self._lock:
            s = self._servers.get(address)
            if s is None or s.instance != instance:
                s = self._servers[address] = ServerState(address=address, instance=instance)
            s.rack = rack
            s.last_seen = self._clock()
            for key, value in figures.items():
                setattr(s, key, value)
            if full:
                s.chunks = dict(added)
                s.full_report = True
                return False
            if not s.full_report:
                return True
            for handle, version in added:
                s.chunks[handle] = version
            for handle, version in removed:
                if s.chunks.get(handle) == version:
                    del s.chunks[handle]
            return False

    def _alive(self) -> list[ServerState]:
        now = self._clock()
        return [s for s in self._servers.values()
                if s.full_report and now - s.last_seen <= self.dead_after]

    def alive_addresses(self) -> list[str]:
        with self._lock:
            return sorted(s.address for s in self._alive())

    def locations(self, handle: int, version: int) -> list[str]:
        """Live servers that reported holding exactly this version of the chunk."""
        with self._lock:
            return [s.address for s in self._alive() if s.chunks.get(handle) == version]

    def forget_replica(self, handle: int, address: str) -> None:
        """A reader found this replica bad: stop handing it out until it is reported again."""
        with self._lock:
            s = self._servers.get(address)
            if s is not None:
                s.chunks.pop(handle, None)

    def place(self, count: int, exclude: set[str] | None = None) -> list[str]:
        """Choose `count` live servers for a new chunk: distinct hosts first, then racks, and
        within that the ones with the most free space and the least load."""
        with self._lock:
            candidates = [s for s in self._alive() if s.address not in (exclude or set())]
        if len(candidates) < count and self._clock() < self._warm_until:
            raise Unavailable("the leader is still collecting chunkserver reports; retry shortly")
        if len(candidates) < count:
            raise FailedPrecondition(
                f"not enough chunkservers for replication {count}: {len(candidates)} alive"
                + (" (none has registered yet)" if not candidates else ""))
        rng = random.Random()
        rng.shuffle(candidates)
        candidates.sort(key=placement_score, reverse=True)
        chosen: list[ServerState] = []
        for spread in (lambda s: s.host, lambda s: s.rack or s.host, lambda s: s.address):
            for s in candidates:
                if len(chosen) == count:
                    break
                if s not in chosen and spread(s) not in {spread(c) for c in chosen}:
                    chosen.append(s)
        return [s.address for s in chosen]

    def describe(self) -> list[dict]:
        now = self._clock()
        with self._lock:
            return [{"address": s.address, "rack": s.rack,
                     "alive": s.full_report and now - s.last_seen <= self.dead_after,
                     "last_seen_s": now - s.last_seen, "capacity_bytes": s.capacity_bytes,
                     "used_bytes": s.used_bytes, "free_bytes": s.free_bytes,
                     "chunk_count": s.chunk_count, "io_load": s.io_load, "cpu_load": s.cpu_load,
                     "rss_bytes": s.rss_bytes} for s in sorted(self._servers.values(),
                                                               key=lambda s: s.address)]


def placement_score(s: ServerState) -> float:
    """Higher is better: free space fraction, discounted by disk and CPU load."""
    free = s.free_bytes / s.capacity_bytes if s.capacity_bytes else 0.0
    return free * (1.0 - 0.5 * min(1.0, s.io_load)) * (1.0 - 0.3 * min(1.0, s.cpu_load))
