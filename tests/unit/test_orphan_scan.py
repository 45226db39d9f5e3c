"""The leader's loops cost what the metadata holds, not what chunkservers report (issue 15):
planners see only the chunk table's replicas, and orphans are found by a budgeted scan
(master/orphans.py) that orders deletions only of replicas it has just found unreferenced."""
from __future__ import annotations

from master.chunkservers import DELETE_HOLD_S, ChunkserverRegistry
from master.orphans import OrphanScanner
from master.repair import Repairer

FIG = {"capacity_bytes": 100 << 30, "free_bytes": 50 << 30}
UNKNOWN = 20_000


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def registry_with(unknown: int, known: dict[int, int]) -> tuple[ChunkserverRegistry, Clock]:
    """One server reporting `unknown` handles the metadata never knew (1..unknown) and the
    `known` ones (handle -> version)."""
    clock = Clock()
    r = ChunkserverRegistry(dead_after=1e9, clock=clock)
    held = [(h, 1) for h in range(1, unknown + 1)] + sorted(known.items())
    r.heartbeat("a:1", "", "i", True, held, [], FIG)
    return r, clock


class Metadata:
    """What `unreferenced` answers from: referenced handles, and garbage records (ms)."""

    def __init__(self, referenced=(), garbage=None):
        self.referenced = set(referenced)
        self.garbage = dict(garbage or {})
        self.asked = 0

    def unreferenced(self, handles: list[int]) -> dict[int, int | None]:
        self.asked += len(handles)
        return {h: self.garbage.get(h) for h in handles if h not in self.referenced}


def test_a_restricted_view_holds_only_the_asked_handles_and_the_full_count():
    r, _ = registry_with(UNKNOWN, {10**9: 3})
    v = r.view({10**9, 5, 123456789})["a:1"]
    assert v.chunks == {10**9: 3, 5: 1} and v.replica_count == UNKNOWN + 1
    assert r.view(())["a:1"].chunks == {} and r.view(())["a:1"].replica_count == UNKNOWN + 1
    r.queue_delete("a:1", 5, 1)                        # ordered deleted: gone from every view
    assert r.view({5})["a:1"].chunks == {} and r.view(())["a:1"].replica_count == UNKNOWN
    assert 5 not in r.held_handles() and len(r.held_handles()) == UNKNOWN
    assert r.count_held({4, 5, 6, 10**9}) == 3


def test_the_repair_pass_plans_over_the_metadatas_replicas_only():
    known = {10**9 + i: 1 for i in range(3)}
    r, clock = registry_with(UNKNOWN, known)
    rows = [{"handle": h, "version": 1, "length": 1, "checksum": 0, "replicas": ["a:1"],
             "inode": 1, "replication": 1, "committed": True, "storage_class": "hot",
             "atime": 0} for h in known]
    rep = Repairer(r, lambda: rows, lambda *a: None, lambda: True)
    clock.t += 2                                        # past dead_after is not needed: 1e9
    p = rep.run_pass()
    assert rep.planned_replicas == 3                    # not UNKNOWN + 3
    assert p.figures["chunks"] == 3 and not p.deletes and not p.tasks
    rep.stop()


def test_the_scan_looks_up_a_bounded_batch_per_pass_and_a_cycle_at_most_every_period():
    r, _ = registry_with(UNKNOWN, {})
    md = Metadata()
    scan = OrphanScanner(r, md.unreferenced, lambda: True, clock=lambda: 0.0, grace_s=3600,
                         budget_s=0.0, batch=1000, cycle_s=3600)
    for i in range(1, UNKNOWN // 1000 + 1):
        assert scan.step(scan.budget_s) == 0           # nothing is past its grace
        assert md.asked == 1000 * i                    # one batch per pass (budget 0)
    assert len(scan.orphans) == UNKNOWN and scan.cycles == 1
    assert scan.replicas() == UNKNOWN and scan.replicas(within_s=0) == 0
    scan.step(scan.budget_s)                            # the cycle is done, the next not due
    assert md.asked == UNKNOWN and scan.cycles == 1 and scan.scanned == UNKNOWN
    scan.cycle_s = 0
    for _ in range(UNKNOWN // 1000):                    # known orphans in their grace period
        scan.step(scan.budget_s)                        # are not looked up again
    assert scan.cycles == 2 and md.asked == UNKNOWN


def test_orphans_go_after_their_grace_in_batches_and_never_a_referenced_or_pending_chunk():
    r, clock = registry_with(10, {})
    md = Metadata(referenced={3}, garbage={4: 1})     # 4: garbage since t=1 ms
    now = [100.0]
    scan = OrphanScanner(r, md.unreferenced, lambda: True, clock=lambda: now[0], grace_s=60,
                         budget_s=0.0, batch=4, cycle_s=0)
    scan.step(0.0)                                      # handles 1-4: 4 is long garbage
    assert r.take_orders("a:1")[0] == [(4, 1)]
    scan.step(0.0)
    scan.step(0.0)                                      # 5-8, 9-10: first seen now
    assert set(scan.orphans) == {1, 2, 4, 5, 6, 7, 8, 9, 10}   # 4: ordered deleted
    now[0] += 30
    scan.step(0.0)                                      # a new cycle: first-seen times kept
    assert scan.orphans[1].since == 100.0 and r.take_orders("a:1")[0] == []
    md.referenced.add(6)                                # a create/AddChunk now uses handle 6
    now[0] += 31
    queued = sum(scan.step(0.0) for _ in range(3))     # the rest of the cycle
    assert queued == 7
    assert [h for h, _ in r.take_orders("a:1")[0]] == [1, 2, 5, 7, 8, 9, 10]
    assert 6 not in scan.orphans                        # found referenced: forgotten
    clock.t += DELETE_HOLD_S + 1                        # no report confirmed the deletions
    r.heartbeat("a:1", "", "i", False, [], [], FIG)
    assert scan.step(None) == 8                         # a whole cycle: ordered again
    assert [h for h, _ in r.take_orders("a:1")[0]] == [1, 2, 4, 5, 7, 8, 9, 10]


def test_a_new_leader_starts_first_seen_again():
    r, _ = registry_with(5, {})
    now = [0.0]
    leader = [True]
    scan = OrphanScanner(r, Metadata().unreferenced, lambda: leader[0], clock=lambda: now[0],
                         grace_s=60)
    scan.tick()
    assert scan.orphans[1].since == 0.0
    leader[0] = False
    scan.tick()
    assert scan.orphans == {}
    leader[0], now[0] = True, 50.0
    scan.tick()
    assert scan.orphans[1].since == 50.0 and r.take_orders("a:1")[0] == []
