"""The leader's soft state about chunkservers: who is alive, what they hold, where new chunks go.

Replica locations are never written to the Raft log (as in GFS): they are rebuilt from
heartbeats. A leader that has just been elected starts empty and asks every chunkserver that
heartbeats to it for a full report, so it acts only on what the chunkservers say they hold now.
Until `dead_after` seconds have passed since it took over, its picture may still be missing
servers that are alive, so nothing is repaired or trimmed before then (`map_complete`).
"""
from __future__ import annotations

import random
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from gfs.errors import FailedPrecondition, ResourceExhausted, Unavailable
from gfs.space import repair_reserve
from gfs.units import human_size

DELETE_HOLD_S = 30.0     # a replica ordered deleted is treated as gone this long (or until reported)
MAX_ORDERS = 20_000      # deletions (and verifications) per heartbeat reply; the rest go next time
SILENT_BEATS = 3         # heartbeats missed in a row before a live server is reported silent
SILENT_MIN_S = 2.0       # ...and at least this long (pieces of a report come closer together)
FIRST_GAP_S = 1.0        # the pace assumed after one heartbeat (chunkservers' default interval)


@dataclass
class PartialReport:
    """A full report arriving in pieces: what the pieces so far hold, and the next expected."""
    report_id: str
    next_part: int = 0
    chunks: dict[int, int] = field(default_factory=dict)
    cold: dict[int, int] = field(default_factory=dict)


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
    mem_total_bytes: int = 0
    mem_available_bytes: int = 0
    beats: int = 0                  # heartbeats received from this instance
    gap: float = 0.0                # its usual time between heartbeats (moving average)
    full_report: bool = False
    chunks: dict[int, int] = field(default_factory=dict)   # handle -> version held
    corrupt: dict[int, int] = field(default_factory=dict)  # handle -> version found corrupt
    cold: dict[int, int] = field(default_factory=dict)     # handle -> bytes on disk, cold tier
    to_delete: dict[int, int] = field(default_factory=dict)  # handle -> version (0 any), next reply
    to_verify: dict[int, int] = field(default_factory=dict)  # handle -> version, next reply
    deleting: dict[int, float] = field(default_factory=dict)  # handle -> until (clock)
    partial: PartialReport | None = None   # a full report whose last piece has not come yet

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0]


@dataclass(frozen=True)
class ServerView:
    """A consistent copy of one live server's state, for the repair and GC planners."""
    address: str
    host: str
    rack: str
    score: float
    chunks: dict[int, int]       # replicas ordered deleted are left out
    corrupt: dict[int, int]
    cold: dict[int, int] = field(default_factory=dict)  # cold-tier handle -> bytes on disk
    capacity_bytes: int = 0
    free_bytes: int = 0
    beats: int = 0                       # heartbeats received so far (figures' freshness)
    replicas: int | None = None          # all it holds (`chunks` may be a subset); None: chunks

    @property
    def use(self) -> float:
        return disk_use(self.capacity_bytes, self.free_bytes)

    @property
    def replica_count(self) -> int:
        """Replicas the server holds (less those ordered deleted), whatever `chunks` shows."""
        return len(self.chunks) if self.replicas is None else self.replicas


class ChunkserverRegistry:
    """Thread-safe registry fed by Heartbeat RPCs (only on the leader)."""

    def __init__(self, dead_after: float = 10.0, clock=time.monotonic):
        self.dead_after = dead_after
        self._clock = clock
        self._lock = threading.Lock()
        self._servers: dict[str, ServerState] = {}
        self._warm_until = 0.0
        self._reset_at = clock()

    @property
    def warmup(self) -> float:
        """How long a new leader waits for reports before it believes a server is missing."""
        return min(self.dead_after, 5.0)

    def warmed_up(self) -> bool:
        """Has this leader been collecting reports long enough to place new chunks?"""
        return self._clock() >= self._warm_until

    def map_complete(self) -> bool:
        """Has every live chunkserver had `dead_after` to report since this leader took over?
        Only then may a missing replica be believed lost (no repair storm after a failover)."""
        return self._clock() >= self._reset_at + self.dead_after

    def leader_for(self) -> float:
        return self._clock() - self._reset_at

    def reset(self) -> None:
        """Forget everything (leadership changed: rebuild from fresh full reports)."""
        with self._lock:
            self._servers.clear()
            self._reset_at = self._clock()
            self._warm_until = self._reset_at + self.warmup

    # --- heartbeats --------------------------------------------------------------------------

    def heartbeat(self, address: str, rack: str, instance: str, full: bool,
                  added: list[tuple[int, int]], removed: list[tuple[int, int]],
                  figures: dict, corrupt: list[tuple[int, int]] = (),
                  cold: dict[int, int] | None = None,
                  part: tuple[str, int, bool] = ("", 0, True)) -> bool:
        """Record one heartbeat; returns True when the server must send a full report.
        `cold`: the handles among `added` that are held in the cold tier, with the bytes each
        takes on disk (compressed). `part`: (report id, piece number, last piece?) of a full
        report sent in pieces; the server's replicas are replaced only when the last piece is
        in (until then the previous picture stands), so a replica missing from the whole report
        is dropped exactly as with a one-message report. A piece out of order (one lost, or a
        leader change in between) makes the server start its report again."""
        with self._lock:
            s = self._servers.get(address)
            if s is None or s.instance != instance:
                s = self._servers[address] = ServerState(address=address, instance=instance)
            s.rack = rack
            now = self._clock()
            if s.beats:
                gap = now - s.last_seen
                s.gap = gap if s.beats == 1 else 0.8 * s.gap + 0.2 * gap
            s.last_seen = now
            s.beats += 1
            for key, value in figures.items():
                setattr(s, key, value)
            s.corrupt = dict(corrupt)
            cold = cold or {}
            if full:
                report_id, number, last = part
                if number == 0:
                    s.partial = PartialReport(report_id)
                elif s.partial is None or (s.partial.report_id, s.partial.next_part) != (
                        report_id, number):
                    s.partial = None
                    return True
                s.partial.chunks.update(added)
                s.partial.cold.update(cold)
                s.partial.next_part = number + 1
                if not last:
                    return False
                s.chunks, s.cold, s.partial = s.partial.chunks, s.partial.cold, None
                s.full_report = True
                s.deleting = {h: t for h, t in s.deleting.items() if h in s.chunks}
                return False
            if not s.full_report:
                return True
            for handle, version in added:
                s.chunks[handle] = version
                if handle in cold:
                    s.cold[handle] = cold[handle]
                else:
                    s.cold.pop(handle, None)
            for handle, version in removed:
                if s.chunks.get(handle) == version:
                    del s.chunks[handle]
                    s.cold.pop(handle, None)
                    s.deleting.pop(handle, None)
            return False

    def take_orders(self, address: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(deletions, verifications) to send to `address` with this heartbeat reply; each order
        is sent once (the planners re-issue what is still needed)."""
        with self._lock:
            s = self._servers.get(address)
            if s is None:
                return [], []
            return _take(s.to_delete), _take(s.to_verify)

    def queue_delete(self, address: str, handle: int, version: int = 0) -> None:
        """Order `address` to delete its replica (of `version`, 0 = whatever it holds). From now
        on the planners count that replica as gone."""
        with self._lock:
            s = self._servers.get(address)
            if s is not None:
                s.to_delete[handle] = version
                s.deleting[handle] = self._clock() + DELETE_HOLD_S

    def queue_verify(self, address: str, handle: int, version: int) -> None:
        """A reader says this replica is bad: ask its server to check it now. Only replicas
        the server reported are queued (one entry each), so a caller cannot make the queue grow
        or the servers do anything but re-verify what they hold."""
        with self._lock:
            s = self._servers.get(address)
            if s is not None and handle in s.chunks:
                s.to_verify[handle] = version

    def set_tier(self, address: str, handle: int, tier: str, stored_bytes: int = 0) -> None:
        """A move between tiers succeeded (its next heartbeat will say so too)."""
        with self._lock:
            s = self._servers.get(address)
            if s is not None and handle in s.chunks:
                if tier == "cold":
                    s.cold[handle] = stored_bytes
                else:
                    s.cold.pop(handle, None)

    def add_replica(self, address: str, handle: int, version: int) -> None:
        """A copy onto `address` succeeded (its next heartbeat will say so too)."""
        with self._lock:
            s = self._servers.get(address)
            if s is not None and s.full_report:
                s.chunks[handle] = version
                s.cold.pop(handle, None)          # copies land in the hot tier
                if s.corrupt.get(handle) == version:
                    del s.corrupt[handle]
                s.deleting.pop(handle, None)

    # --- views -------------------------------------------------------------------------------

    def _is_alive(self, s: ServerState, now: float) -> bool:
        return s.full_report and now - s.last_seen <= self.dead_after

    def _alive(self) -> list[ServerState]:
        now = self._clock()
        return [s for s in self._servers.values() if self._is_alive(s, now)]

    def _gone(self, s: ServerState, now: float) -> set[int]:
        """`s`'s replicas ordered deleted within DELETE_HOLD_S (older orders are forgotten)."""
        gone = {h for h, until in s.deleting.items() if until > now}
        if len(gone) != len(s.deleting):
            s.deleting = {h: s.deleting[h] for h in gone}
        return gone

    def view(self, handles: Collection[int] | None = None) -> dict[str, ServerView]:
        """Every live server's replicas, leaving out those ordered deleted. With `handles`, each
        server's `chunks` (and `cold`) hold only the replicas of those chunks: a planner over
        the metadata's chunk table passes its handles, so replicas the metadata does not know
        (however many a server reports) cost it nothing; `handles=()` gives the figures alone.
        The cost is the smaller of a server's replicas and `handles`, in C (set intersection)."""
        now = self._clock()
        wanted = None if handles is None else (
            handles if isinstance(handles, set) else set(handles))
        with self._lock:
            out = {}
            for s in self._alive():
                gone = self._gone(s, now)
                out[s.address] = ServerView(
                    s.address, s.host, s.rack, placement_score(s),
                    _subset(s.chunks, wanted, gone), dict(s.corrupt),
                    _subset(s.cold, wanted, set()), s.capacity_bytes, s.free_bytes, s.beats,
                    len(s.chunks) - sum(1 for h in gone if h in s.chunks))
            return out

    def held_handles(self, ordered_deleted: bool = False) -> list[int]:
        """Every handle some live server holds, sorted (replicas ordered deleted left out unless
        `ordered_deleted`: until a report confirms the deletion, the server still has them)."""
        now = self._clock()
        with self._lock:
            held: set[int] = set()
            for s in self._alive():
                gone = set() if ordered_deleted else self._gone(s, now)
                held.update(s.chunks.keys() - gone if gone else s.chunks.keys())
        return sorted(held)

    def count_held(self, handles: Collection[int]) -> int:
        """Replicas of `handles` the live servers hold (ordered deleted left out)."""
        return sum(len(sv.chunks) for sv in self.view(handles).values())

    def holdings(self) -> dict[str, dict[int, int]]:
        """Live server -> {handle: version} it reported (replicas ordered deleted left out)."""
        return {a: v.chunks for a, v in self.view().items()}

    def alive_addresses(self) -> list[str]:
        with self._lock:
            return sorted(s.address for s in self._alive())

    def silent(self) -> dict[str, float]:
        """Live servers that missed SILENT_BEATS heartbeats in a row (by their own usual pace —
        FIRST_GAP_S after a single one — and at least SILENT_MIN_S): address -> seconds since
        the last. Not dead yet — dead is `dead_after`, when repair starts — but most likely
        gone: `gfs health` says so at once instead of counting them alive until then."""
        now = self._clock()
        with self._lock:
            return {s.address: now - s.last_seen for s in self._servers.values()
                    if self._is_alive(s, now) and now - s.last_seen > max(
                        SILENT_BEATS * (s.gap if s.beats >= 2 else FIRST_GAP_S), SILENT_MIN_S)}

    def dead_addresses(self) -> list[str]:
        """Servers this leader has heard from that stopped heartbeating."""
        now = self._clock()
        with self._lock:
            return sorted(s.address for s in self._servers.values() if not self._is_alive(s, now))

    def locations(self, handle: int, version: int) -> tuple[list[str], list[str]]:
        """(healthy, corrupt): live servers that reported exactly this version of the chunk,
        split by whether they found it corrupt. A corrupt replica still serves its good blocks."""
        healthy, corrupt = [], []
        with self._lock:
            for s in self._alive():
                if s.chunks.get(handle) == version:
                    (corrupt if s.corrupt.get(handle) == version else healthy).append(s.address)
        return healthy, corrupt

    # --- placement ---------------------------------------------------------------------------

    def check_replication(self, count: int) -> None:
        """FailedPrecondition if fewer than `count` chunkservers are alive now, so a file is not
        created with a replication no chunk of it could get (Unavailable, which clients retry,
        while a new leader is still collecting reports, as in `place`)."""
        with self._lock:
            alive = len(self._alive())
        if alive < count and self._clock() < self._warm_until:
            raise Unavailable("the leader is still collecting chunkserver reports; retry shortly")
        if alive < count:
            raise _too_few(count, alive)

    def place(self, count: int, exclude: set[str] | None = None,
              existing: list[str] = (), need_bytes: int = 0, repair: bool = False) -> list[str]:
        """Choose `count` live servers for new replicas: hosts not yet used by the chunk's
        `existing` replicas (or each other) first, then new racks, and within that the ones with
        the most free space and the least load (`placement_score`).

        Servers whose last report leaves no room for `need_bytes` are left out: for a new chunk
        (repair False) room beyond their repair reserve (gfs.space), for a repair copy any room.
        The bytes placed are taken off the chosen servers' free space until their next report,
        so a burst of placements between two heartbeats does not pick a server it has filled.
        Not enough room for a new chunk: ResourceExhausted ("cluster full")."""
        with self._lock:
            alive = self._alive()
            skip = set(exclude or ()) | set(existing)
            candidates = [s for s in alive if s.address not in skip]
            roomy = [s for s in candidates if room(s, repair) >= need_bytes]
            if need_bytes and len(roomy) < count <= len(candidates):
                what = "" if repair else " beyond their repair reserve"
                raise ResourceExhausted(
                    f"cluster full: only {len(roomy)} of the {len(candidates)} eligible "
                    f"chunkservers have {human_size(need_bytes)} free{what}; {count} needed "
                    f"({fullness(candidates)})")
            candidates = roomy
            if len(candidates) < count and self._clock() < self._warm_until:
                raise Unavailable("the leader is still collecting chunkserver reports; "
                                  "retry shortly")
            if len(candidates) < count:
                raise _too_few(count + len(existing), len(candidates) + len(existing))
            rng = random.Random()
            rng.shuffle(candidates)
            candidates.sort(key=placement_score, reverse=True)
            holders = [s for s in alive if s.address in set(existing)]
            chosen: list[ServerState] = []
            for spread in (lambda s: s.host, lambda s: s.rack or s.host, lambda s: s.address):
                for s in candidates:
                    if len(chosen) == count:
                        break
                    if s not in chosen and spread(s) not in {spread(c) for c in chosen + holders}:
                        chosen.append(s)
            for s in chosen:
                s.free_bytes = max(0, s.free_bytes - need_bytes)
            return [s.address for s in chosen]

    def describe(self) -> list[dict]:
        now = self._clock()
        with self._lock:
            return [{"address": s.address, "rack": s.rack, "alive": self._is_alive(s, now),
                     "last_seen_s": now - s.last_seen, "capacity_bytes": s.capacity_bytes,
                     "used_bytes": s.used_bytes, "free_bytes": s.free_bytes,
                     "chunk_count": s.chunk_count, "io_load": s.io_load, "cpu_load": s.cpu_load,
                     "rss_bytes": s.rss_bytes, "corrupt_replicas": len(s.corrupt),
                     "mem_total_bytes": s.mem_total_bytes,
                     "mem_available_bytes": s.mem_available_bytes,
                     "disk_use": disk_use(s.capacity_bytes, s.free_bytes)}
                    for s in sorted(self._servers.values(), key=lambda s: s.address)]


def _subset(held: dict[int, int], wanted: set[int] | None, gone: set[int]) -> dict[int, int]:
    """A copy of `held` without `gone`, and (unless `wanted` is None) only `wanted`'s keys."""
    if wanted is None:
        return {h: v for h, v in held.items() if h not in gone} if gone else dict(held)
    keys = held.keys() & wanted            # iterates the smaller of the two
    if gone:
        keys -= gone
    return {h: held[h] for h in keys}


def _take(orders: dict[int, int]) -> list[tuple[int, int]]:
    """Remove and return at most MAX_ORDERS of `orders` (lowest handles first), so a reply
    stays far below the 4 MiB message limit however many orders are queued."""
    taken = sorted(orders.items())[:MAX_ORDERS]
    for handle, _ in taken:
        del orders[handle]
    return taken


def room(s: ServerState, repair: bool = False) -> int:
    """Bytes a server's last report leaves for a new chunk (beyond its repair reserve) or,
    with `repair`, for a repair copy."""
    return s.free_bytes - (0 if repair else repair_reserve(s.capacity_bytes))


def fullness(servers: list[ServerState]) -> str:
    """'a:1 98% of 2.0 GiB, b:1 99% of 2.0 GiB' (for errors about space)."""
    return ", ".join(f"{s.address} {disk_use(s.capacity_bytes, s.free_bytes):.0%} of "
                     f"{human_size(s.capacity_bytes)}"
                     for s in sorted(servers, key=lambda s: s.address)) or "none alive"


def disk_use(capacity_bytes: int, free_bytes: int) -> float:
    """Fraction of a server's capacity in use (1 when it reports no capacity)."""
    return 1.0 - free_bytes / capacity_bytes if capacity_bytes else 1.0


MEMORY_TIGHT = 0.85      # host memory in use above which a server starts to look busy


def memory_pressure(s: ServerState) -> float:
    """0 while the host has plenty of memory, rising to 1 as it runs out (page cache gone,
    swapping next): only the last MEMORY_TIGHT..1 of use counts."""
    if not s.mem_total_bytes:
        return 0.0
    used = 1.0 - s.mem_available_bytes / s.mem_total_bytes
    return max(0.0, min(1.0, (used - MEMORY_TIGHT) / (1.0 - MEMORY_TIGHT)))


def placement_score(s: ServerState) -> float:
    """Higher is better: free space fraction, discounted by disk load, CPU load and memory
    pressure (a server at full disk load and out of memory scores a quarter of an idle one)."""
    free = s.free_bytes / s.capacity_bytes if s.capacity_bytes else 0.0
    return (free * (1.0 - 0.5 * min(1.0, s.io_load)) * (1.0 - 0.3 * min(1.0, s.cpu_load))
            * (1.0 - 0.5 * memory_pressure(s)))


def _too_few(count: int, alive: int) -> FailedPrecondition:
    return FailedPrecondition(f"not enough chunkservers for replication {count}: {alive} alive"
                              + (" (none has registered yet)" if not alive else ""))
