"""Space pressure: when the cluster is nearly full, what already deleted data gives way.

The policy (the leader's garbage collector applies it; documented in docs/self-healing.md):
the cluster is *under pressure* while the live chunkservers' disk use, all together
(1 − Σfree / Σcapacity), is at or above the threshold (master flag `--space-pressure`, default
0.9). Then, and only then:

1. orphan replicas whose chunk the metadata recorded as garbage (deleted for good, overwritten,
   aborted, purged from the trash) go after the short pressure grace (`--gc-pressure-grace`,
   default 60 s) instead of the full grace period; replicas the metadata never knew keep the
   full grace;
2. trash gives way, oldest first: one batch of entries at a time, just enough (by their size
   times the default replication) to bring the use back under the threshold less
   HYSTERESIS (less what the orphans due within the pressure grace will free), at most
   MAX_PURGE_ENTRIES, purged through the Raft log and each logged; the next
   batch waits until the previous one's replicas have had time to go (the pressure grace plus
   two collection passes). Nothing outside the trash is ever purged.

This module is pure (no clock, no I/O): unit-tested alone.
"""
from __future__ import annotations

from master.chunkservers import ServerView

HYSTERESIS = 0.05          # a purge aims this far below the threshold
MAX_PURGE_ENTRIES = 1000   # trash entries purged for space in one batch (one log entry)


def disk_totals(view: dict[str, ServerView]) -> tuple[int, int]:
    """(capacity, free) bytes over the live chunkservers that report a capacity."""
    servers = [sv for sv in view.values() if sv.capacity_bytes]
    return (sum(sv.capacity_bytes for sv in servers),
            sum(min(sv.free_bytes, sv.capacity_bytes) for sv in servers))


def disk_use(view: dict[str, ServerView]) -> float:
    """The live chunkservers' disk use all together, 0..1 (0 when none reports a capacity)."""
    capacity, free = disk_totals(view)
    return 1.0 - free / capacity if capacity else 0.0


def under_pressure(view: dict[str, ServerView], threshold: float) -> bool:
    """Is the cluster at or above `threshold` disk use? (threshold ≥ 1 or ≤ 0: never)"""
    return 0.0 < threshold < 1.0 and disk_use(view) >= threshold


def bytes_to_free(view: dict[str, ServerView], threshold: float, going: int = 0) -> int:
    """Replica bytes still to delete to bring the use to HYSTERESIS below the threshold, when
    `going` orphan replicas are about to be deleted anyway (each counted at the average size of
    the replicas the servers hold)."""
    capacity, free = disk_totals(view)
    replicas = sum(sv.replica_count for sv in view.values() if sv.capacity_bytes)
    average = (capacity - free) / replicas if replicas else 0.0
    target_used = max(0.0, threshold - HYSTERESIS) * capacity
    return max(0, int((capacity - free) - target_used - going * average))


def trash_to_purge(entries: list[dict], need_bytes: int, replication: int,
                   limit: int = MAX_PURGE_ENTRIES) -> list[dict]:
    """The oldest trash entries (by deletion time, then id) whose size times `replication`
    adds up to `need_bytes`, at most `limit` of them."""
    chosen, freed = [], 0
    for entry in sorted(entries, key=lambda e: (e["deleted"], e["id"])):
        if freed >= need_bytes or len(chosen) >= limit:
            break
        chosen.append(entry)
        freed += entry["size"] * max(1, replication)
    return chosen
