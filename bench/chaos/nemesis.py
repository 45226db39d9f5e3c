"""The nemesis: faults injected into a running local cluster on a seeded random schedule."""
from __future__ import annotations

import os
import random
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.chaos.diskfaults import DISK_FAULTS, POWER_MODES, DiskFaults, cut_power
from bench.chaos.netns import NetLab
from cli.localcluster import LocalCluster
from gfs.clock import write_test_offset
from gfs.errors import FailedPrecondition

DEAD_AFTER = 3.0          # the runner's master --dead-after
RAFT_PORT = 7000          # the masters' Raft port on their test hosts
LEADER_FAULTS = {"kill_leader", "kill_all", "pause_leader", "partition_leader", "power_loss_leader",
                 "one_way_leader", "power_loss_all"}
#: Faults that kill -9 their targets (the record counts the masters among them), and those that
#: are a power loss of the whole cluster.
KILLING_FAULTS = {"kill_leader", "kill_follower", "kill_minority", "kill_all", "power_loss_leader",
                  "power_loss_follower", "power_loss_all", "power_loss_chunkserver"}
WHOLE_CLUSTER_POWER_LOSS = {"power_loss_all"}


def master_kills(faults: list["Fault"]) -> int:
    """How many master processes the faults killed."""
    return sum(1 for f in faults if f.kind in KILLING_FAULTS
               for t in f.targets if t.startswith("master-"))
NETWORK_FAULTS = ["partition_leader", "one_way_leader", "lossy_link", "slow_link"]


@dataclass
class Fault:
    kind: str
    targets: list[str]
    start: float              # workload clock, when the fault was injected
    end: float = 0.0          # when it was healed / the daemons restarted
    detail: dict = field(default_factory=dict)   # e.g. a power loss's mode and what it lost


class Nemesis(DiskFaults):
    def __init__(self, cluster: LocalCluster, lab: NetLab | None, seed: int, clock,
                 election_timeout: float, first: list[str] | None = None,
                 power_modes: tuple[str, ...] = POWER_MODES):
        """`first`: kinds to inject before the shuffled deck starts (those of them possible
        here), so that a short run is sure to sample them. On a cluster whose daemons run on
        FaultFS, power losses cut every byte not made durable (in a mode drawn from
        `power_modes`) and the disk faults join the deck; otherwise a power loss cuts only the
        masters' journals back to their last fsync."""
        self.cluster = cluster
        self.faultfs = bool(cluster.spec.get("faultfs"))
        self.power_modes = power_modes
        self.lab = lab
        self.rng = random.Random(seed)
        self.clock = clock
        self.election = election_timeout
        self.faults: list[Fault] = []
        self.kinds = ["kill_leader", "kill_follower", "kill_minority", "kill_all", "pause_leader",
                      "kill_chunkserver", "power_loss_leader", "power_loss_follower",
                      "chunkserver_down_long", "corrupt_replicas", "clock_jump_leader",
                      "power_loss_all", "replace_member"]
        if lab is not None:
            self.kinds += NETWORK_FAULTS
        if self.faultfs:
            self.kinds += DISK_FAULTS
        self._deck = [k for k in reversed(first or []) if k in self.kinds]
        self._rejoining: str | None = None      # a master removed and not yet added back
    def masters(self) -> list[str]:
        return [m["name"] for m in self.cluster.spec["masters"]]

    def leader(self) -> str:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            name = self.cluster.leader()
            if name:
                return name
            time.sleep(0.05)
        raise RuntimeError("no leader for 30 s")

    def follower(self) -> str:
        leader = self.leader()
        return self.rng.choice([m for m in self.masters() if m != leader])

    # --- one fault ---------------------------------------------------------------------------

    def next_kind(self) -> str:
        """Kinds are dealt from a shuffled deck: every kind once per len(kinds) faults, so even
        a short run samples each of them."""
        if not self._deck:
            self._deck = self.rng.sample(self.kinds, len(self.kinds))
        return self._deck.pop()

    def inject(self, kind: str | None = None) -> Fault:
        kind = kind or self.next_kind()
        fault = getattr(self, f"_{kind}")()
        self.faults.append(fault)
        return fault

    def _fault(self, kind: str, targets: list[str]) -> Fault:
        return Fault(kind, targets, self.clock())

    def _kill_restart(self, kind: str, names: list[str], power_loss: bool = False) -> Fault:
        fault = self._fault(kind, names)
        if power_loss and self.faultfs:
            fault.detail = cut_power(self.cluster, names, self.rng, self.power_modes)
        else:
            for name in names:
                self.cluster.signal(name, signal.SIGKILL)
            for name in names:
                self.cluster._wait_gone(name, 10)
                if power_loss and "raft" in self.cluster.daemon(name):
                    drop_unsynced_journal(Path(self.cluster.daemon(name)["data"]))
        time.sleep(self.rng.uniform(0.2, 1.5))
        for name in names:
            self.cluster.start(name)
        fault.end = self.clock()
        return fault

    def _kill_leader(self) -> Fault:
        return self._kill_restart("kill_leader", [self.leader()])

    def _kill_follower(self) -> Fault:
        return self._kill_restart("kill_follower", [self.follower()])

    def _kill_minority(self) -> Fault:
        ms = self.masters()
        return self._kill_restart("kill_minority", self.rng.sample(ms, (len(ms) - 1) // 2))

    def _kill_all(self) -> Fault:
        return self._kill_restart("kill_all", self.masters())

    def _power_loss_leader(self) -> Fault:
        return self._kill_restart("power_loss_leader", [self.leader()], power_loss=True)

    def _power_loss_all(self) -> Fault:
        """Every daemon killed at once; on FaultFS every disk loses what was not durable,
        otherwise the masters' journals are cut back to their last fsync."""
        return self._kill_restart("power_loss_all", [d["name"] for d in self.cluster.daemons()],
                                  power_loss=True)

    def _power_loss_follower(self) -> Fault:
        return self._kill_restart("power_loss_follower", [self.follower()], power_loss=True)

    def _kill_chunkserver(self) -> Fault:
        names = [c["name"] for c in self.cluster.spec["chunkservers"]]
        return self._kill_restart("kill_chunkserver", [self.rng.choice(names)])

    def _chunkserver_down_long(self) -> Fault:
        """A chunkserver down past the dead-after timeout: its chunks are re-replicated, and its
        replicas are surplus (trimmed) when it comes back."""
        name = self.rng.choice([c["name"] for c in self.cluster.spec["chunkservers"]])
        fault = self._fault("chunkserver_down_long", [name])
        self.cluster.signal(name, signal.SIGKILL)
        self.cluster._wait_gone(name, 10)
        time.sleep(DEAD_AFTER + self.rng.uniform(2.0, 6.0))
        self.cluster.start(name)
        fault.end = self.clock()
        return fault

    def _corrupt_replicas(self) -> Fault:
        """Flip one bit in each of up to 3 random chunk files of one chunkserver (a disk going
        bad): reads must fail over, the scrubber or a reader must find them, repair must fix."""
        name = self.rng.choice([c["name"] for c in self.cluster.spec["chunkservers"]])
        fault = self._fault("corrupt_replicas", [name])
        files = sorted(Path(self.cluster.daemon(name)["data"]).glob("hot/*/*.chunk"))
        for path in self.rng.sample(files, min(3, len(files))):
            try:
                with open(path, "r+b") as f:
                    size = os.fstat(f.fileno()).st_size
                    if not size:
                        continue
                    pos = self.rng.randrange(size)
                    f.seek(pos)
                    byte = f.read(1)[0]
                    f.seek(pos)
                    f.write(bytes([byte ^ (1 << self.rng.randrange(8))]))
            except OSError:
                pass                  # deleted meanwhile (GC, trimming)
        fault.end = self.clock()
        return fault

    def _pause_leader(self) -> Fault:
        name = self.leader()
        fault = self._fault("pause_leader", [name])
        self.cluster.signal(name, signal.SIGSTOP)
        time.sleep(self.election * 4 + self.rng.uniform(0, 1.0))
        self.cluster.signal(name, signal.SIGCONT)
        fault.end = self.clock()
        return fault

    def _partition_leader(self) -> Fault:
        name = self.leader()
        index = self.masters().index(name)
        fault = self._fault("partition_leader", [name])
        self.lab.isolate(index, list(range(len(self.masters()))))
        # long enough for the others to elect a leader and commit writes while the deposed
        # leader's clients still reach it
        time.sleep(self.election * 4 + self.rng.uniform(1.0, 5.0))
        self.lab.heal()
        fault.end = self.clock()
        return fault

    def _hold(self) -> None:
        """How long a network or clock fault lasts: a few election timeouts."""
        time.sleep(self.election * 4 + self.rng.uniform(0, 1.5))

    def _one_way_leader(self) -> Fault:
        """The leader hears the other masters but is not heard, or is heard but hears nothing."""
        name = self.leader()
        heard = self.rng.random() < 0.5
        fault = self._fault("one_way_leader", [f"{name} ({'deaf' if heard else 'mute'})"])
        self.lab.one_way(self.masters().index(name), list(range(len(self.masters()))), heard)
        self._hold()
        self.lab.heal()
        fault.end = self.clock()
        return fault

    def _leader_link(self) -> tuple[str, str, int, int]:
        leader = self.leader()
        other = self.rng.choice([m for m in self.masters() if m != leader])
        return leader, other, self.masters().index(leader), self.masters().index(other)

    def _lossy_link(self) -> Fault:
        """20-60 % of the packets between the leader and one follower dropped."""
        leader, other, a, b = self._leader_link()
        loss = self.rng.uniform(0.2, 0.6)
        fault = self._fault("lossy_link", [leader, other, f"{loss:.0%}"])
        self.lab.lose(a, b, loss)
        self._hold()
        self.lab.heal()
        fault.end = self.clock()
        return fault

    def _slow_link(self) -> Fault:
        """Raft traffic between the leader and one follower delayed 20-300 ms each way."""
        leader, other, a, b = self._leader_link()
        delay = self.rng.uniform(0.02, 0.3)
        fault = self._fault("slow_link", [leader, other, f"{delay * 1000:.0f}ms"])
        self.lab.delay(a, b, RAFT_PORT, delay)
        self._hold()
        self.lab.heal()
        fault.end = self.clock()
        return fault

    def _clock_jump_leader(self) -> Fault:
        """The leader's wall clock jumps forward or back by 2 s to 10 min, and back again."""
        name = self.leader()
        offset = self.rng.choice([-1, 1]) * self.rng.uniform(2, 600)
        path = self.clock_file(name)
        fault = self._fault("clock_jump_leader", [name, f"{offset:+.0f}s"])
        write_test_offset(path, offset)
        self._hold()
        write_test_offset(path, 0)
        fault.end = self.clock()
        return fault

    def _replace_member(self) -> Fault:
        """A member replaced under load (master/members.py): a master (the leader after handing
        leadership over) is removed from the group, killed, its disk wiped, and it joins again
        empty at the same addresses (`gfs master add`), catching up from the others."""
        leader = self.leader()
        name = self.rng.choice(self.masters())
        m = self.cluster.daemon(name)
        fault = self._fault("replace_member", [name])
        with self.cluster.client(deadline=60) as client:
            def step_down() -> None:
                fault.detail["stepped_down_to"] = self._retry(
                    fault, lambda: client.step_down("", 10.0)).get("leader_raft", "")

            def remove() -> dict:
                """Leadership may move to the member between the choice and the removal (an
                election after another fault): it is handed over again before the next try."""
                try:
                    return client.member_remove(m["raft"], 30.0)
                except FailedPrecondition as err:
                    if "is the leader" in err.message:
                        step_down()
                    raise

            if name == leader:
                step_down()
            self._retry(fault, remove, done_if="not a member")
        self._rejoining = name
        self.cluster.signal(name, signal.SIGKILL)
        self.cluster._wait_gone(name, 10)
        disk = Path(self.cluster.data_path(m))
        for part in ("raft", "meta"):          # the Raft journal and the metadata: a new disk
            shutil.rmtree(disk / part, ignore_errors=True)
        self._rejoin(fault)
        fault.end = self.clock()
        return fault

    def _rejoin(self, fault: Fault) -> None:
        """Start the removed master empty with --join and add it back (the add's figures go
        into the fault's detail)."""
        name, self._rejoining = self._rejoining, None
        m = self.cluster.daemon(name)
        m["join"] = True
        self.cluster.start(name)
        try:
            with self.cluster.client(deadline=180) as client:
                added = self._retry(fault, lambda: client.member_add(m["raft"], m["grpc"], 120.0),
                                    done_if="already a member")
        finally:
            m["join"] = False                  # later starts are a member's
        fault.detail.update(commit_s=added.get("commit_s"), catch_up_s=added.get("catch_up_s"))

    def _retry(self, fault: Fault, change, done_if: str = "", attempts: int = 10) -> dict:
        """A membership change retried while the group is busy (another fault's restart, an
        election), each refusal noted in the fault's detail; `done_if`: the error message
        saying an earlier attempt took effect."""
        from gfs.errors import GfsError
        for attempt in range(attempts):
            try:
                return change()
            except GfsError as err:
                fault.detail.setdefault("retried", []).append(f"{err.code}: {err.message}")
                if done_if and done_if in err.message:
                    return {}
                if attempt == attempts - 1:
                    raise
                time.sleep(1.0 + attempt)
        return {}

    def clock_file(self, name: str) -> str:
        return self.cluster.daemon(name)["options"]["test-clock-file"]

    def heal_all(self) -> None:
        """End every fault: links healed, paused daemons resumed, every daemon running."""
        if self.lab is not None:
            self.lab.heal()
        if self.faultfs:
            self.clear_disk_faults()
        for m in self.masters():
            write_test_offset(self.clock_file(m), 0)
        if self._rejoining is not None:
            self._rejoin(self._fault("replace_member", [self._rejoining]))
        for d in self.cluster.daemons():
            pid = self.cluster.pid(d["name"])
            if pid:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            else:
                self.cluster.start(d["name"])


def drop_unsynced_journal(master_dir: Path) -> int:
    """Power-loss simulation for a killed master: throw away every journal byte written after
    its last fsync (the master records that offset when GFS_TRACE_SYNCED=1). LMDB and the
    journal's term/vote file are fsync'd before anything depends on them, so they keep what
    a real power cut would keep. Returns the bytes dropped."""
    journal = master_dir / "raft" / "journal.log"
    try:
        synced = int((master_dir / "raft" / "journal.synced").read_text() or 0)
    except (FileNotFoundError, ValueError):
        synced = 0
    size = journal.stat().st_size if journal.exists() else 0
    if size > synced:
        os.truncate(journal, synced)
    return max(0, size - synced)
