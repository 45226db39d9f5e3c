"""The leader's chunk garbage collector.

A chunk that a chunkserver reports but no file references — the chunks of deleted, overwritten or
aborted files, of retried chunk writes, or left behind by anything else — is deleted from that
chunkserver once it has been unreferenced for the grace period (default 1 hour). Its age is the
time the metadata recorded it as garbage, or, for a chunk the metadata never knew, the time this
leader first saw it unreferenced (soft state: a new leader starts that clock again, which only
delays deletion). Deletions ride on heartbeat responses; the next report confirms them.
"""
from __future__ import annotations

import logging
import threading
import time

from master.chunkservers import ChunkserverRegistry

log = logging.getLogger(__name__)


class GarbageCollector:
    def __init__(self, registry: ChunkserverRegistry, unreferenced, is_leader,
                 grace_s: float = 3600.0, interval_s: float = 10.0,
                 clock=time.time):
        self.registry = registry
        self.unreferenced = unreferenced    # handles -> {handle: garbage-since ms | None}
        self.is_leader = is_leader
        self.grace_s = grace_s
        self.interval_s = interval_s
        self.clock = clock
        self.first_seen: dict[int, float] = {}
        self.deleted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gc", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if self.is_leader() and self.registry.warmed_up():
                    self.collect()
                else:
                    self.first_seen.clear()
            except Exception:
                log.exception("garbage collection pass failed")

    def plan(self) -> list[dict]:
        """Every unreferenced replica: handle, server, age, and when it will be deleted."""
        now = self.clock()
        held = self.registry.holdings()
        orphans = self.unreferenced(sorted({h for hs in held.values() for h in hs}))
        for h in [h for h in self.first_seen if h not in orphans]:
            del self.first_seen[h]
        out = []
        for address, handles in sorted(held.items()):
            for h in sorted(handles):
                if h not in orphans:
                    continue
                since = orphans[h] / 1000 if orphans[h] else self.first_seen.setdefault(h, now)
                out.append({"handle": h, "server": address, "age_s": now - since,
                            "delete_in_s": max(0.0, since + self.grace_s - now)})
        return out

    def collect(self) -> int:
        """Queue deletions for replicas past the grace period; returns how many."""
        due = [p for p in self.plan() if p["delete_in_s"] <= 0]
        for p in due:
            self.registry.queue_delete(p["server"], p["handle"])
        if due:
            log.info("garbage collection: deleting %d unreferenced replicas", len(due))
        self.deleted += len(due)
        return len(due)
