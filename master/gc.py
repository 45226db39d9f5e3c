"""The leader's garbage collector and housekeeping.

Orphans: a replica that a chunkserver reports but no file references — the chunks of deleted,
overwritten or aborted files, of expired uploads, or left behind by anything else — is deleted
from that chunkserver once it has been unreferenced for the grace period (default 1 hour). Its
age is the time the metadata recorded it as garbage, or, for a chunk the metadata never knew,
the time this leader first saw it unreferenced (soft state: a new leader starts that clock
again, which only delays deletion). Deletions ride on heartbeat responses; the next report
confirms them. Orphans are found by `master/orphans.py`, a bounded piece of the held handles per
second, so millions of replicas the metadata does not know cost the leader a bounded amount of
CPU, not a pass over all of them every few seconds.

Housekeeping, through the Raft log like every change of the metadata:
- an upload with no activity (create / add_chunk) for the grace period is abandoned: it is
  aborted, and its chunks' garbage age counts from its last activity, so they go at once;
- trash entries older than the trash retention are purged (their chunks become garbage);
- under space pressure (master/pressure.py), recorded garbage goes after a short grace and the
  oldest trash entries are purged, a bounded batch at a time;
- garbage records older than the grace period whose chunk no live server holds are forgotten;
- exactly-once results older than the session TTL are forgotten (a client that went away
  leaves its last results behind; no client retries for anywhere near that long).
"""
from __future__ import annotations

import logging
from typing import Callable

from master import pressure
from master.chunkservers import ChunkserverRegistry
from master.loops import PeriodicThread
from master.orphans import OrphanScanner
from gfs.clock import now as gfs_now

log = logging.getLogger(__name__)


class GarbageCollector(PeriodicThread):
    def __init__(self, registry: ChunkserverRegistry, unreferenced, is_leader,
                 grace_s: float = 3600.0, interval_s: float = 10.0,
                 clock=gfs_now, pending_uploads: Callable[[], list[dict]] | None = None,
                 propose: Callable[[dict], dict] | None = None,
                 trash_retention_s: float = 0.0,
                 trash_list: Callable[[], list[dict]] | None = None,
                 garbage_before: Callable[[int], list[int]] | None = None,
                 session_ttl_s: float = 86400.0,
                 oldest_session_ms: Callable[[], int | None] | None = None,
                 space_pressure: float = 0.9, pressure_grace_s: float = 60.0,
                 replication: int = 3):
        super().__init__("gc", interval_s)
        self.registry = registry
        self.unreferenced = unreferenced    # handles -> {handle: garbage-since ms | None}
        self.is_leader = is_leader
        self.grace_s = grace_s
        self.clock = clock
        self.pending_uploads = pending_uploads
        self.propose = propose
        self.trash_retention_s = trash_retention_s
        self.trash_list = trash_list
        self.garbage_before = garbage_before
        self.session_ttl_s = session_ttl_s
        self.oldest_session_ms = oldest_session_ms
        self.space_pressure = space_pressure
        self.pressure_grace_s = pressure_grace_s
        self.replication = replication        # the default: trash bytes x this = bytes freed
        self.purged_for_space = 0
        self._last_space_purge: float | None = None
        self.expired_sessions = 0
        self.forgotten = 0
        self.orphans = OrphanScanner(registry, unreferenced, is_leader, clock, grace_s,
                                     space_pressure, pressure_grace_s, cycle_s=interval_s)
        self.expired_uploads = 0
        self.purged_trash = 0
        self.reap_over = 0          # trees this big go to the reaper (master/reaper.py)

    @property
    def deleted(self) -> int:
        """Orphan replicas ordered deleted."""
        return self.orphans.deleted

    def start(self) -> None:
        super().start()
        self.orphans.start()

    def stop(self) -> None:
        self.orphans.stop()
        super().stop()

    def tick(self) -> None:
        # Orphans are collected by self.orphans, a budgeted piece every second.
        if self.is_leader() and self.registry.warmed_up():
            self.expire_uploads()
            self.purge_trash()
            self.purge_trash_for_space()
            self.prune_records()
            self.expire_sessions()

    def under_pressure(self, view=None) -> bool:
        """Is the cluster's disk use at or above the space-pressure threshold?"""
        return pressure.under_pressure(self.registry.view(()) if view is None else view,
                                       self.space_pressure)

    def plan(self) -> list[dict]:
        """Every unreferenced replica: handle, version, server, age, and when it will go (under
        space pressure, recorded garbage after the pressure grace). A fresh look at every held
        handle: on demand only (`gfs admin gc`), never per pass."""
        return self.orphans.plan()

    def collect(self) -> int:
        """Queue deletions for every replica past the grace period now (a whole scan cycle, on
        demand); returns how many."""
        return self.orphans.step(None)

    def prune_records(self) -> int:
        """Forget garbage records past the grace period whose chunk no live server reports any
        more: deleted everywhere. (A server that comes back with one later holds an unknown
        handle, which is an orphan like any other and goes after the grace period.)"""
        if self.garbage_before is None or self.propose is None:
            return 0
        old = self.garbage_before(int((self.clock() - self.grace_s) * 1000))
        held = {h for sv in self.registry.view(old).values() for h in sv.chunks}
        gone = [h for h in old if h not in held]
        if not gone:
            return 0
        n = self.propose({"op": "forget_garbage", "handles": gone})["forgotten"]
        self.forgotten += n
        return n

    def abandoned_uploads(self) -> list[dict]:
        """Pending uploads without activity for the grace period."""
        if self.pending_uploads is None:
            return []
        cutoff = (self.clock() - self.grace_s) * 1000
        return [u for u in self.pending_uploads() if u.get("touched", u["created"]) <= cutoff]

    def expire_uploads(self) -> int:
        stale = self.abandoned_uploads()
        if not stale or self.propose is None:
            return 0
        before = int((self.clock() - self.grace_s) * 1000)
        ok = self.propose({"op": "expire_uploads", "inodes": [u["inode"] for u in stale],
                           "before": before})
        if ok["expired"]:
            log.info("expired %d abandoned uploads", len(ok["expired"]),
                     extra={"fields": {"inodes": ok["expired"][:50]}})
        self.expired_uploads += len(ok["expired"])
        return len(ok["expired"])

    def expire_sessions(self, batch: int = 10_000, batches: int = 10) -> int:
        """Forget exactly-once results stored more than the session TTL ago, a batch per log
        entry (so one entry never holds the apply thread for long)."""
        if self.oldest_session_ms is None or self.propose is None:
            return 0
        before = int((self.clock() - self.session_ttl_s) * 1000)
        oldest = self.oldest_session_ms()
        if oldest is None or oldest >= before:
            return 0
        expired = 0
        for _ in range(batches):
            ok = self.propose({"op": "expire_sessions", "before": before, "limit": batch})
            expired += ok["expired"]
            if not ok["more"]:
                break
        log.info("forgot %d exactly-once results older than %.0f s", expired,
                 self.session_ttl_s)
        self.expired_sessions += expired
        return expired

    def purge_trash(self) -> int:
        if self.trash_retention_s <= 0 or self.propose is None:
            return 0
        before = int((self.clock() - self.trash_retention_s) * 1000)
        if self.trash_list is not None and not any(e["deleted"] <= before
                                                   for e in self.trash_list()):
            return 0
        ok = self.propose({"op": "trash_purge", "user": "", "all_users": True, "ids": [],
                           "before": before, "reap_over": self.reap_over})
        if ok["purged"]:
            log.info("purged %d trash entries past their retention", ok["purged"])
        self.purged_trash += ok["purged"]
        return ok["purged"]

    def purge_trash_for_space(self) -> int:
        """Under space pressure, purge the oldest trash entries, one bounded batch at a time
        (see master/pressure.py); returns how many."""
        if self.trash_list is None or self.propose is None:
            return 0
        view = self.registry.view(())
        if not self.under_pressure(view):
            return 0
        now = self.clock()
        wait = self.pressure_grace_s + 2 * self.interval_s
        if self._last_space_purge is not None and now - self._last_space_purge < wait:
            return 0                     # the last batch's replicas are still going
        going = self.orphans.replicas(within_s=self.pressure_grace_s)
        need = pressure.bytes_to_free(view, self.space_pressure, going)
        batch = pressure.trash_to_purge(self.trash_list(), need, self.replication)
        if not batch:
            return 0
        self._last_space_purge = now
        ok = self.propose({"op": "trash_purge", "user": "", "all_users": True,
                           "ids": [e["id"] for e in batch], "before": 0,
                           "reap_over": self.reap_over})
        use = pressure.disk_use(view)
        for e in batch:
            log.warning("space pressure (disk use %.1f%%): purged trash entry %d %s of %s "
                        "(%d bytes, deleted at %d ms)", use * 100, e["id"], e["path"],
                        e["user"] or "(anonymous)", e["size"], e["deleted"],
                        extra={"fields": {"trash_id": e["id"], "path": e["path"],
                                          "user": e["user"], "size": e["size"],
                                          "reason": "space_pressure"}})
        self.purged_for_space += ok["purged"]
        return ok["purged"]
