"""The repair planner as a pure function over a chunk table and a replica map."""
from master.chunkservers import ServerView
from master.repair import RepairRate, plan


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
