"""The repair planner as a pure function over a chunk table and a replica map."""
import dataclasses

from master.chunkservers import ServerView
from master.repair import (NO_ROOM, TOO_FEW_SERVERS, RepairRate, blocked_figures, blocker,
                           plan)


def view(**servers):
    """view(a={1: 1}, b=...) with optional corrupt sets via a tuple (chunks, corrupt)."""
    out = {}
    for i, (name, spec) in enumerate(sorted(servers.items())):
        chunks, corrupt = spec if isinstance(spec, tuple) else (spec, {})
        host = name.split("_")[0]
        out[f"{name}:1"] = ServerView(f"{name}:1", host, "", 1.0 - i / 100, chunks, corrupt)
    return out


def row(handle, version=1, replication=3, committed=True, length=100, replicas=()):
    return {"handle": handle, "version": version, "length": length, "checksum": 9,
            "replicas": list(replicas), "inode": 2, "replication": replication,
            "committed": committed}


def test_a_healthy_chunk_needs_nothing():
    p = plan([row(1)], view(a={1: 1}, b={1: 1}, c={1: 1}, d={}), set())
    assert p.tasks == [] and p.deletes == []
    assert p.figures["chunks"] == 1 and p.figures["under_replicated"] == 0


def test_chunks_missing_more_replicas_are_repaired_first():
    p = plan([row(1), row(2), row(3, replication=2)],
             view(a={1: 1, 2: 1, 3: 1}, b={1: 1}, c={}), set())
    assert [t.handle for t in p.tasks] == [2, 3, 1]
    assert p.tasks[0].missing == 2 and p.tasks[0].healthy == ["a:1"]
    assert p.figures["under_replicated"] == 3 and p.figures["at_risk"] == 2
    assert p.figures["repair_bytes_pending"] == 100 * (2 + 1 + 1)


def test_a_chunk_without_any_replica_is_unavailable_not_repaired():
    p = plan([row(1)], view(a={}, b={}), set())
    assert p.tasks == [] and p.figures["unavailable"] == 1


def test_corrupt_replicas_are_rebuilt_then_deleted():
    only_corrupt = plan([row(1)], view(a=({1: 1}, {1: 1}), b=({1: 1}, {1: 1}), c={}), set())
    assert only_corrupt.tasks[0].healthy == [] and only_corrupt.tasks[0].corrupt == ["a:1", "b:1"]
    assert only_corrupt.deletes == []
    repaired = plan([row(1)], view(a=({1: 1}, {1: 1}), b={1: 1}, c={1: 1}, d={1: 1}), set())
    assert repaired.tasks == []
    assert repaired.deletes == [("a:1", 1, 1, "corrupt")]
    assert repaired.figures["corrupt_replicas"] == 1


def test_stale_replicas_go_at_once_even_for_uploads_in_progress():
    p = plan([row(1, version=3, committed=False)], view(a={1: 2}, b={1: 3}), set())
    assert p.deletes == [("a:1", 1, 2, "stale")]
    assert p.tasks == [] and p.figures["chunks"] == 0


def test_surplus_replicas_are_trimmed_keeping_distinct_hosts():
    p = plan([row(1, replicas=["h1_a:1", "h2:1", "h3:1"])],
             view(h1_a={1: 1}, h1_b={1: 1}, h2={1: 1}, h3={1: 1}), set())
    assert p.deletes == [("h1_b:1", 1, 1, "surplus")]
    assert plan([row(1)], view(a={1: 1}, b={1: 1}, c={1: 1}, d={1: 1}), {1}).deletes == []


def test_a_single_replica_chunk_with_a_surplus_copy_keeps_exactly_one():
    p = plan([row(1, replication=1, replicas=["b:1"])], view(a={1: 1}, b={1: 1}), set())
    assert p.deletes == [("a:1", 1, 1, "surplus")]


def test_repair_rate_over_the_window():
    t = [0.0]
    rate = RepairRate(clock=lambda: t[0])
    assert rate.rate() == 0.0
    rate.busy(True)
    t[0] = 10.0
    rate.add(100 << 20)
    assert abs(rate.rate() - 10 * (1 << 20)) < 1
    rate.busy(False)
    assert rate.rate() == 0.0


def test_a_recorded_replica_on_a_live_server_that_has_not_reported_is_awaited():
    rows = [row(1, replicas=["a:1", "b:1", "c:1"]), row(2, replicas=["a:1", "b:1", "x:1"])]
    p = plan(rows, view(a={1: 1, 2: 1}, b={1: 1, 2: 1}, c={}), set())
    assert {t.handle: t.awaited for t in p.tasks} == {1: True, 2: False}   # x is dead


def test_the_replica_set_hint_follows_trims_at_full_redundancy_only():
    trimmed = plan([row(1, replication=2, replicas=["a:1", "b:1"])],
                   view(a={1: 1}, b={1: 1}, c={1: 1}), set())
    kept = [a for a in ("a:1", "b:1", "c:1") if ("surplus" not in
            [why for s, _, _, why in trimmed.deletes if s == a])]
    assert trimmed.record == ({} if sorted(kept) == ["a:1", "b:1"] else {1: (1, sorted(kept))})
    moved = plan([row(1, replication=2, replicas=["a:1", "x:1"])], view(a={1: 1}, c={1: 1}), set())
    assert moved.record == {1: (1, ["a:1", "c:1"])}
    short = plan([row(1, replicas=["a:1", "b:1", "x:1"])], view(a={1: 1}, b={1: 1}), set())
    assert short.record == {}


# --- a full cluster: what blocks a repair, and what does not -------------------------------------

def roomy(free, **servers):
    """view(...) where every server has capacity 1000 and `free` bytes free (a dict: per name)."""
    out = view(**servers)
    return {a: dataclasses.replace(sv, capacity_bytes=1000,
                                   free_bytes=free[a.split(":")[0]] if isinstance(free, dict)
                                   else free)
            for a, sv in out.items()}


def test_a_repair_is_blocked_only_when_no_server_can_take_it():
    rows = [row(1), row(2), row(3, replication=2)]
    # 1: two healthy, the other two servers full; 2: a corrupt replica (rebuilt in place);
    # 3: one healthy and room on another server
    v = roomy({"a": 0, "b": 0, "c": 50, "d": 150},
              a={1: 1, 2: 1, 3: 1}, b=({1: 1, 2: 1}, {2: 1}), c={2: 1}, d={})
    p = plan(rows, v, set())
    why = {t.handle: blocker(t, v) for t in p.tasks}
    assert why == {1: "", 2: "", 3: ""}        # 1 fits on d (150 free), 3 on c or d
    v["d:1"] = dataclasses.replace(v["d:1"], free_bytes=99)
    why = {t.handle: blocker(t, v) for t in plan(rows, v, set()).tasks}
    assert why == {1: NO_ROOM, 2: "", 3: NO_ROOM}    # 100 bytes fit neither c (50) nor d (99)
    f = blocked_figures(plan(rows, v, set()).tasks, v)
    assert f["repair_blocked"] == 2 and f["repair_blocked_by"] == {NO_ROOM: 2, TOO_FEW_SERVERS: 0}


def test_replication_above_the_live_servers_needs_more_chunkservers():
    v = roomy(500, a={1: 1}, b={1: 1})
    tasks = plan([row(1, replication=3), row(2, replication=4)], roomy(500, a={1: 1, 2: 1},
                                                                       b={1: 1, 2: 1}), set()).tasks
    f = blocked_figures(tasks, v)
    assert f["repair_blocked_by"][TOO_FEW_SERVERS] == 2 and f["chunkservers_needed"] == 2


def _repairer(monkeypatch, servers, rows):
    """A Repairer over a real registry (fake clock) whose copies are recorded, not made."""
    import master.repair as repair
    from master.chunkservers import ChunkserverRegistry
    now = [1000.0]
    reg = ChunkserverRegistry(dead_after=10, clock=lambda: now[0])
    for address, (chunks, corrupt, free) in servers.items():
        reg.heartbeat(address, "", "i", True, chunks, [],
                      {"capacity_bytes": CAP, "free_bytes": free}, corrupt=corrupt)
    now[0] += 10                                       # the replica map is complete
    copies = []
    monkeypatch.setattr(repair, "copy_chunk", lambda channels, target, h, v, n, sum_, sources,
                        rate: copies.append((h, target, sorted(sources))))
    return repair.Repairer(reg, lambda: rows, lambda *a: None, lambda: True), copies


CAP = 100 << 20
MiB = 1 << 20


def test_a_full_cluster_rebuilds_corrupt_replicas_in_place_and_copies_into_the_reserve(
        monkeypatch):
    from gfs.space import repair_reserve
    reserve = repair_reserve(CAP)
    assert reserve > MiB
    rows = [row(1, length=MiB), row(2, length=MiB)]
    servers = {"a:1": ([(1, 1), (2, 1)], [], 1000),
               "b:1": ([(1, 1), (2, 1)], [], 1000),
               "c:1": ([(1, 1)], [(1, 1)], 1000),               # chunk 1: corrupt here
               "d:1": ([], [], reserve)}                         # only the repair reserve left
    repairer, copies = _repairer(monkeypatch, servers, rows)
    try:
        repairer.run_pass()
        repairer._pool.shutdown(wait=True)
        assert sorted(copies) == [(1, "c:1", ["a:1", "b:1"]),   # in place, from the healthy
                                  (2, "d:1", ["a:1", "b:1"])]   # into d's reserve
        assert repairer.repaired == 2
    finally:
        repairer.stop()


def test_health_says_a_blocked_repair_has_no_eta(monkeypatch):
    rows = [row(1, length=MiB)]
    servers = {"a:1": ([(1, 1)], [], 1000), "b:1": ([(1, 1)], [], 1000),
               "c:1": ([], [], MiB - 1)}
    repairer, copies = _repairer(monkeypatch, servers, rows)
    try:
        repairer.run_pass()
        f = repairer.figures()
        assert copies == [] and f["repair_queue"] == 1 and f["repair_blocked"] == 1
        assert f["repair_blocked_by"][NO_ROOM] == 1 and f["eta_s"] == -1.0
        repairer.registry.reset()                  # a new leader: its map is partial
        repairer.registry.heartbeat("a:1", "", "i", True, [(1, 1)], [],
                                    {"capacity_bytes": CAP, "free_bytes": 1000})
        f = repairer.figures()
        assert f["repair_queue"] == 1 and f["repair_blocked"] == 0
    finally:
        repairer.stop()
