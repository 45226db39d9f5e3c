"""The disk-use balancer's planner (master.balance.plan_balance): a pure function of the chunk
table and the replica map, tested without daemons."""
from __future__ import annotations

from master.balance import bytes_to_move, plan_balance, projected_uses, spread_of
from master.chunkservers import ServerView

MiB = 1 << 20
CAP = 1000 * MiB


def server(address: str, chunks: dict[int, int], used_mib: int, rack: str = "",
           cold: dict[int, int] | None = None, corrupt: dict[int, int] | None = None,
           host: str | None = None) -> ServerView:
    return ServerView(address, host or address.rsplit(":", 1)[0], rack, 0.5, dict(chunks),
                      dict(corrupt or {}), dict(cold or {}), CAP, CAP - used_mib * MiB, 0)


def row(handle: int, length: int = 64 * MiB, replication: int = 2, version: int = 1,
        committed: bool = True) -> dict:
    return {"handle": handle, "version": version, "length": length, "checksum": 7,
            "replication": replication, "committed": committed, "replicas": []}


def cluster(n_chunks: int, used: dict[str, int], holders) -> tuple[list[dict], dict]:
    """Chunks 1..n held on holders(h) (a list of addresses)."""
    rows = [row(h) for h in range(1, n_chunks + 1)]
    chunks: dict[str, dict[int, int]] = {a: {} for a in used}
    for h in range(1, n_chunks + 1):
        for a in holders(h):
            chunks[a][h] = 1
    return rows, {a: server(a, chunks[a], used[a]) for a in used}


def test_nothing_moves_within_the_threshold():
    rows, view = cluster(4, {"a:1": 500, "b:1": 450, "c:1": 420}, lambda h: ["a:1", "b:1"])
    p = plan_balance(rows, view, 0.10, {}, set(), limit=5)
    assert p.moves == [] and not p.blocked and round(p.spread, 2) == 0.08


def test_moves_go_from_the_fullest_to_the_emptiest_until_within_the_threshold():
    # a and b hold 8 chunks each (512 MiB = 51 %), c is new and empty.
    rows, view = cluster(8, {"a:1": 512, "b:1": 512, "c:1": 0}, lambda h: ["a:1", "b:1"])
    p = plan_balance(rows, view, 0.10, {}, set(), limit=100)
    assert p.moves and all(m.target == "c:1" for m in p.moves)
    assert {m.source for m in p.moves} == {"a:1", "b:1"}
    assert spread_of(p.uses) <= 0.10
    assert len({m.handle for m in p.moves}) == len(p.moves)     # never one chunk twice
    for m in p.moves:                                          # source first, then the others
        assert m.sources[0] == m.source and set(m.sources) == {"a:1", "b:1"}
    # never overshoot: the target ends up no fuller than any source
    assert p.uses["c:1"] <= min(p.uses["a:1"], p.uses["b:1"])


def test_the_limit_caps_moves_per_pass_and_busy_chunks_are_left_alone():
    rows, view = cluster(8, {"a:1": 512, "b:1": 512, "c:1": 0}, lambda h: ["a:1", "b:1"])
    p = plan_balance(rows, view, 0.10, {}, {1, 2, 3}, limit=2)
    assert len(p.moves) == 2 and not {m.handle for m in p.moves} & {1, 2, 3}


def test_pending_bytes_count_as_moved_already():
    rows, view = cluster(8, {"a:1": 512, "b:1": 512, "c:1": 0}, lambda h: ["a:1", "b:1"])
    pending = {"a:1": -192 * MiB, "b:1": -128 * MiB, "c:1": 320 * MiB}
    assert round(spread_of(projected_uses(view, pending)), 3) == round(64 / 1000, 3)
    assert plan_balance(rows, view, 0.10, pending, set(), limit=5).moves == []


def test_a_single_chunk_bigger_than_the_gap_does_not_flap():
    # 64 MiB chunks, 1000 MiB servers: a move shifts 12.8 points; a gap of 11 stays.
    rows = [row(1), row(2)]
    view = {"a:1": server("a:1", {1: 1, 2: 1}, 200), "b:1": server("b:1", {1: 1}, 90),
            "c:1": server("c:1", {2: 1}, 150)}
    p = plan_balance(rows, view, 0.10, {}, set(), limit=5)
    assert p.moves == [] and p.blocked


def test_only_committed_chunks_at_exactly_full_redundancy_move():
    rows = [row(1, committed=False), row(2, replication=3), row(3), row(4, version=2), row(5),
            row(6)]
    a = {1: 1, 2: 1, 3: 1, 4: 2, 5: 1, 6: 1}
    view = {"a:1": server("a:1", a, 800, corrupt={5: 1}),
            "b:1": server("b:1", {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}, 300),   # 4: stale on b
            "d:1": server("d:1", {3: 1}, 300),                            # 3: surplus
            "e:1": server("e:1", {6: 1}, 300),
            "c:1": server("c:1", {}, 0)}
    p = plan_balance([r for r in rows], view, 0.10, {}, set(), limit=10)
    # 1 uncommitted, 2 short (r=3, 2 replicas), 3 surplus, 4 has a stale copy, 5 corrupt on a
    assert [m.handle for m in p.moves] == [6]


def test_never_onto_a_server_holding_the_chunk_or_into_a_shared_host_or_rack():
    rows = [row(1), row(2)]
    view = {"h1:1": server("h1:1", {1: 1, 2: 1}, 700),
            "h2:1": server("h2:1", {1: 1}, 200),
            "h2:2": server("h2:2", {}, 0, host="h2"),       # same host as chunk 1's other copy
            "h3:1": server("h3:1", {2: 1}, 100)}
    p = plan_balance(rows, view, 0.10, {}, set(), limit=10)
    moved = {(m.handle, m.target) for m in p.moves}
    assert (1, "h2:2") not in moved and (2, "h3:1") not in moved and (1, "h2:1") not in moved
    assert (2, "h2:2") in moved             # chunk 2: h3 + h2 are distinct hosts


def test_racks_are_kept_apart_too():
    rows = [row(1)]
    view = {"a:1": server("a:1", {1: 1}, 700, rack="r1"),
            "b:1": server("b:1", {1: 1}, 100, rack="r2"),
            "c:1": server("c:1", {}, 0, rack="r2")}
    p = plan_balance(rows, view, 0.10, {}, set(), limit=10)
    assert p.moves == [] and "no chunk on a:1" in p.blocked


def test_hot_replicas_move_before_cold_ones_and_bigger_before_smaller():
    rows = [row(1, length=64 * MiB), row(2, length=8 * MiB), row(3, length=64 * MiB)]
    view = {"a:1": server("a:1", {1: 1, 2: 1, 3: 1}, 800, cold={1: 20 * MiB}),
            "b:1": server("b:1", {1: 1, 2: 1, 3: 1}, 300),
            "c:1": server("c:1", {}, 0)}
    moves = plan_balance(rows, view, 0.10, {}, set(), limit=3).moves
    assert [(m.handle, m.source, m.target) for m in moves] == [
        (3, "a:1", "c:1"), (2, "a:1", "c:1"), (1, "a:1", "c:1")]


def test_servers_without_a_capacity_are_ignored_and_bytes_to_move_is_an_estimate():
    rows, view = cluster(8, {"a:1": 600, "b:1": 600, "c:1": 0}, lambda h: ["a:1", "b:1"])
    view["x:1"] = ServerView("x:1", "x", "", 0.0, {}, {}, {}, 0, 0, 0)
    uses = projected_uses(view, {})
    assert set(uses) == {"a:1", "b:1", "c:1"}
    # mean 40 %: a and b are 15 points above mean + 5 -> 2 x 150 MiB
    assert abs(bytes_to_move(uses, view, 0.10) - 300 * MiB) < MiB


# --- the mover's last step (copy faked, real registry) -----------------------------------------

def _mover(monkeypatch, during_copy=lambda reg, sources: None):
    import master.balance as balance
    from master.chunkservers import ChunkserverRegistry
    from master.repair import Repairer
    now = [1000.0]
    reg = ChunkserverRegistry(dead_after=10, clock=lambda: now[0])
    for a, chunks, free in (("a:1", [(1, 1)], CAP // 2), ("b:1", [(1, 1)], CAP // 2),
                            ("c:1", [], CAP)):
        reg.heartbeat(a, "", "i", True, chunks, [], {"capacity_bytes": CAP, "free_bytes": free})
    now[0] += 10                                       # the replica map is complete
    rows = [row(1, length=MiB)]
    recorded = []
    repairer = Repairer(reg, lambda: rows, lambda *a: None, lambda: True)
    mover = balance.Balancer(reg, lambda: rows, lambda h, v, r: recorded.append((h, v, r)),
                             lambda: True, repairer)
    monkeypatch.setattr(balance, "copy_chunk",
                        lambda channels, target, h, v, n, sum_, sources, rate: during_copy(reg, sources))
    return reg, mover, recorded


def test_a_move_copies_records_the_new_set_then_deletes_the_source(monkeypatch):
    reg, mover, recorded = _mover(monkeypatch)
    try:
        p = mover.run_pass()
        assert [(m.source, m.target) for m in p.moves] in ([("a:1", "c:1")], [("b:1", "c:1")])
        mover._pool.shutdown(wait=True)
        source = p.moves[0].source
        other = "b:1" if source == "a:1" else "a:1"
        assert recorded == [(1, 1, [other, "c:1"])]
        assert reg.take_orders(source) == ([(1, 1)], [])
        assert mover.moved == 1 and mover.claimed() == set()
    finally:
        mover.stop()


def test_a_move_keeps_the_source_when_another_replica_vanished_meanwhile(monkeypatch):
    def lose_the_other(reg, sources):        # sources: the move's source, then the others
        reg.heartbeat(sources[1], "", "i", True, [], [], {"capacity_bytes": CAP,
                                                          "free_bytes": CAP // 2})
    reg, mover, _ = _mover(monkeypatch, lose_the_other)
    try:
        p = mover.run_pass()
        mover._pool.shutdown(wait=True)
        assert p.moves and reg.take_orders(p.moves[0].source) == ([], [])
    finally:
        mover.stop()
