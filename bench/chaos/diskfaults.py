"""The nemesis's faults of the disks under the daemons, when they run on FaultFS
(bench/chaos/faultfs/): power loss of every byte a daemon wrote and did not make durable (one
node or the whole cluster, in the modes all / prefix / torn), full disks, failing disks (EIO on
reads, writes or fsyncs of chosen files) and slow fsyncs."""
from __future__ import annotations

import random
import time

from cli.localcluster import LocalCluster

POWER_MODES = ("all", "prefix", "torn")
#: The disk faults a run on FaultFS adds to the deck (power losses are in the deck anyway).
DISK_FAULTS = ["power_loss_chunkserver", "disk_full_chunkserver", "disk_full_leader",
               "disk_eio_chunkserver", "disk_eio_leader", "slow_fsync"]
#: EIO rules: (files, relative to the daemon's data directory) -> the operations that may fail.
CHUNKSERVER_EIO = {"hot/*.chunk": ("read", "write", "fsync"), "hot/*.sums": ("read", "write",
                   "fsync"), "tmp/*": ("write", "fsync"), "hot/*": ("read", "fsync")}
MASTER_EIO = {"raft/*": ("write", "fsync")}


def cut_power(cluster: LocalCluster, names: list[str], rng: random.Random,
              modes: tuple[str, ...] = POWER_MODES) -> dict:
    """kill -9 `names` at once and drop from each one's disk what was not durable, in a mode
    drawn from `modes`; returns what was lost (summed over the disks). They stay down."""
    mode = rng.choice(modes)
    results = cluster.power_loss(names, mode=mode, seed=rng.randrange(1 << 30))
    detail = {"mode": mode}
    for key in ("writes_lost", "pages_lost", "dir_ops_lost"):
        detail[key] = sum(r.get(key, 0) for r in results.values())
    errors = [e for r in results.values() for e in r.get("errors", [])]
    if errors:
        detail["errors"] = errors[:5]
    return detail


def pick_eio(rng: random.Random, master: bool) -> tuple[str, list[str]]:
    """A file pattern and a non-empty set of operations that fail on it."""
    rules = MASTER_EIO if master else CHUNKSERVER_EIO
    glob = rng.choice(sorted(rules))
    ops = [op for op in rules[glob] if rng.random() < 0.6] or [rng.choice(rules[glob])]
    return glob, ops


class DiskFaults:
    """Mixed into the Nemesis (which provides cluster, rng, clock, leader(), _fault(),
    _kill_restart() and power_modes)."""

    def _chunkserver(self) -> str:
        return self.rng.choice([c["name"] for c in self.cluster.spec["chunkservers"]])

    def _power_loss_chunkserver(self):
        return self._kill_restart("power_loss_chunkserver", [self._chunkserver()],
                                  power_loss=True)

    def _held_disk_fault(self, kind: str, name: str, apply, detail: dict,
                         low: float = 2.0, high: float = 6.0):
        """Apply a fault to `name`'s disk, let the workload meet it, clear it; a daemon that
        stopped on it (fail-stop on a disk error is allowed) is restarted and counted."""
        fault = self._fault(kind, [name])
        fault.detail = detail
        disk = self.cluster.disk(name)
        apply(disk)
        time.sleep(self.rng.uniform(low, high))
        disk.clear_faults()
        if not self.cluster.pid(name):
            fault.detail["exited"] = True
            self.cluster.start(name)
        fault.end = self.clock()
        return fault

    def _disk_full_chunkserver(self):
        return self._held_disk_fault("disk_full_chunkserver", self._chunkserver(),
                                     lambda d: d.enospc(True), {"enospc": True})

    def _disk_full_leader(self):
        return self._held_disk_fault("disk_full_leader", self.leader(),
                                     lambda d: d.enospc(True), {"enospc": True})

    def _disk_eio(self, kind: str, name: str, master: bool):
        glob, ops = pick_eio(self.rng, master)
        return self._held_disk_fault(kind, name, lambda d: d.eio(glob, ops),
                                     {"files": glob, "ops": ops})

    def _disk_eio_chunkserver(self):
        return self._disk_eio("disk_eio_chunkserver", self._chunkserver(), master=False)

    def _disk_eio_leader(self):
        return self._disk_eio("disk_eio_leader", self.leader(), master=True)

    def _slow_fsync(self):
        """fsyncs of 100 ms to 2 s on the leader or on one chunkserver."""
        name = self.leader() if self.rng.random() < 0.5 else self._chunkserver()
        return self._held_disk_fault("slow_fsync", name, lambda d: d.fsync_delay(0.1, 2.0),
                                     {"fsync_s": [0.1, 2.0]}, 3.0, 8.0)

    def clear_disk_faults(self) -> None:
        for d in self.cluster.daemons():
            disk = self.cluster.disk(d["name"])
            if disk.mounted:
                disk.clear_faults()
