"""The leader's reaper: removes deleted trees too big for one command (master/namespace.py
`queue_reap`), a bounded `reap` command at a time, so a `rm -r` or trash purge of a million
files never holds the apply thread for seconds and other clients' commands are applied in
between. The trees are already out of the namespace; the queue is in the replicated state, so a
new leader (or a restarted one) carries on where the last one stopped.

GFS_REAP_BATCH (default REAP_BATCH): inodes per `reap` command, and the size from which a
delete or purge hands a tree to the reaper instead of removing it in its own command."""
from __future__ import annotations

import logging
import time
from typing import Callable

from gfs.config import positive_int_env
from master.loops import PeriodicThread

log = logging.getLogger(__name__)

REAP_BATCH = 500
ENV_REAP_BATCH = "GFS_REAP_BATCH"


def reap_batch_from_env() -> int:
    """GFS_REAP_BATCH if set (a positive whole number), else REAP_BATCH."""
    return positive_int_env(ENV_REAP_BATCH, REAP_BATCH)


class Reaper(PeriodicThread):
    """Proposes `reap` commands while the replicated state has trees queued for removal."""

    def __init__(self, reaping: Callable[[], int], propose: Callable[[dict], dict],
                 is_leader: Callable[[], bool], batch: int | None = None,
                 interval_s: float = 0.5):
        super().__init__("reaper", interval_s)
        self.reaping = reaping
        self.propose = propose
        self.is_leader = is_leader
        self.batch = batch or reap_batch_from_env()
        self.reaped = 0

    def tick(self) -> None:
        if self.is_leader() and self.reaping():
            self.reap()

    def reap(self) -> int:
        """Remove queued trees a batch per command until none is left (or this stops being
        the leader); returns the inodes removed."""
        removed, started = 0, time.monotonic()
        while not self._stop.is_set() and self.is_leader():
            ok = self.propose({"op": "reap", "limit": self.batch})
            removed += ok["removed"]
            self.reaped += ok["removed"]
            if not ok["left"]:
                break
        log.info("reaped %d inodes of deleted trees in %.1f s", removed,
                 time.monotonic() - started)
        return removed
