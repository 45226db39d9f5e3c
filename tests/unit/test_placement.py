"""The leader's chunkserver registry and placement, with a fake clock (no daemons needed)."""
import collections

import pytest

from gfs.errors import FailedPrecondition, ResourceExhausted, Unavailable
from gfs.checksum import BLOCK_SIZE
from master.chunkservers import ChunkserverRegistry

MiB = 1 << 20
FIG = {"capacity_bytes": 100, "free_bytes": 50, "used_bytes": 50}


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def registry(n=0, **kw):
    clock = Clock()
    r = ChunkserverRegistry(dead_after=10, clock=clock)
    for i in range(n):
        r.heartbeat(f"10.0.0.{i}:7200", "", "inst", True, [], [], dict(FIG, **kw))
    return r, clock


def test_replicas_go_to_distinct_hosts_and_prefer_free_space():
    r, _ = registry()
    r.heartbeat("h1:1", "", "a", True, [], [], dict(FIG, free_bytes=90))
    r.heartbeat("h1:2", "", "b", True, [], [], dict(FIG, free_bytes=95))
    r.heartbeat("h2:1", "", "c", True, [], [], dict(FIG, free_bytes=10))
    r.heartbeat("h3:1", "", "d", True, [], [], dict(FIG, free_bytes=80))
    chosen = r.place(3)
    assert len({a.split(":")[0] for a in chosen}) == 3
    assert chosen[0] == "h1:2"


def test_a_new_leader_says_retry_while_reports_arrive_then_not_enough():
    r, clock = registry()
    r.reset()
    with pytest.raises(Unavailable):
        r.place(3)
    clock.t += r.warmup + 0.1
    with pytest.raises(FailedPrecondition, match="not enough chunkservers for replication 3"):
        r.place(3)


def test_dead_servers_and_deltas():
    r, clock = registry(3)
    r.heartbeat("10.0.0.0:7200", "", "inst", False, [(5, 1)], [], FIG)
    assert r.locations(5, 1) == (["10.0.0.0:7200"], [])
    assert r.locations(5, 2) == ([], [])
    r.heartbeat("10.0.0.0:7200", "", "inst", False, [], [(5, 1)], FIG, corrupt=[(5, 1)])
    assert r.locations(5, 1) == ([], [])
    r.heartbeat("10.0.0.0:7200", "", "inst", False, [(5, 1)], [], FIG, corrupt=[(5, 1)])
    assert r.locations(5, 1) == ([], ["10.0.0.0:7200"])
    clock.t += 11
    r.heartbeat("10.0.0.1:7200", "", "inst", False, [], [], FIG)
    assert r.alive_addresses() == ["10.0.0.1:7200"]


def test_a_restarted_server_must_send_a_full_report():
    r, _ = registry(1)
    assert r.heartbeat("10.0.0.0:7200", "", "new-instance", False, [(1, 1)], [], FIG) is True
    assert r.locations(1, 1) == ([], [])


def test_gc_deletes_only_unreferenced_replicas_after_the_grace_period():
    from master.gc import GarbageCollector
    r, clock = registry()
    r.heartbeat("a:1", "", "i", True, [(1, 1), (2, 1), (3, 1)], [], FIG)
    r.heartbeat("b:1", "", "i", True, [(2, 1), (3, 1)], [], FIG)
    now = [10_000.0]
    garbage = {2: 9_990_000}             # handle 2: garbage since t=9990 s (ms); 3: never known
    gc = GarbageCollector(r, lambda hs: {h: garbage.get(h) for h in hs if h != 1},
                          lambda: True, grace_s=60, clock=lambda: now[0])
    assert gc.collect() == 0             # 2 is 10 s old, 3 first seen now
    now[0] += 51
    assert gc.collect() == 2             # handle 2 on both servers; 3 only 51 s old
    assert r.take_orders("a:1") == ([(2, 1)], []) and r.take_orders("b:1") == ([(2, 1)], [])
    assert r.take_orders("a:1") == ([], [])
    now[0] += 10
    assert gc.collect() == 2             # 3 now due on both; 2 was ordered deleted already
    assert r.take_orders("b:1") == ([(3, 1)], [])
    clock.t += 31                        # no report confirmed the deletion: order it again
    r.heartbeat("a:1", "", "i", False, [], [], FIG)
    r.heartbeat("b:1", "", "i", False, [], [], FIG)
    assert gc.collect() == 4
    plan = {(p["handle"], p["server"]) for p in gc.plan()}
    assert (1, "a:1") not in plan        # referenced: never planned


def test_placement_of_a_repair_copy_avoids_the_hosts_of_existing_replicas():
    r, _ = registry()
    for address in ("h1:1", "h1:2", "h2:1", "h3:1"):
        r.heartbeat(address, "", "i", True, [], [], FIG)
    for _ in range(20):
        assert r.place(1, exclude={"h1:1", "h2:1"}, existing=["h1:1", "h2:1"]) == ["h3:1"]
    # Only a server on a host already used is left: still better than no copy.
    assert r.place(1, exclude={"h1:1", "h2:1", "h3:1"}, existing=["h1:1", "h2:1"]) == ["h1:2"]


def test_a_server_silent_past_dead_after_is_dead_and_a_new_leader_waits_for_reports():
    r, clock = registry(2)
    r.reset()
    assert not r.map_complete()
    clock.t += 10
    assert r.map_complete()
    r.heartbeat("10.0.0.0:7200", "", "inst", True, [], [], FIG)
    assert r.dead_addresses() == []
    clock.t += 11
    r.heartbeat("10.0.0.1:7200", "", "inst", True, [], [], FIG)
    assert r.dead_addresses() == ["10.0.0.0:7200"]
    assert r.alive_addresses() == ["10.0.0.1:7200"]


def test_verify_orders_and_copies_update_the_map():
    r, _ = registry()
    r.heartbeat("a:1", "", "i", True, [(7, 2)], [], FIG, corrupt=[(7, 2)])
    r.queue_verify("a:1", 7, 2)
    assert r.take_orders("a:1") == ([], [(7, 2)])
    r.add_replica("a:1", 7, 2)          # repaired in place
    assert r.locations(7, 2) == (["a:1"], [])


def test_gc_expires_abandoned_uploads_and_purges_old_trash_through_the_log():
    from master.gc import GarbageCollector
    r, _ = registry()
    now = [10_000.0]
    proposed = []

    def propose(command):
        proposed.append(command)
        if command["op"] == "expire_uploads":
            return {"expired": command["inodes"]}
        return {"purged": 1}

    uploads = [{"inode": 5, "created": 9_000_000, "touched": 9_990_000},   # idle 10 s
               {"inode": 6, "created": 9_000_000, "touched": 9_950_000},   # idle 50 s
               {"inode": 7, "created": 9_900_000}]                         # no touched: 100 s
    trash = [{"deleted": 9_990_000}]
    gc = GarbageCollector(r, lambda hs: {}, lambda: True, grace_s=40, clock=lambda: now[0],
                          pending_uploads=lambda: uploads, propose=propose,
                          trash_retention_s=60, trash_list=lambda: trash)
    assert gc.expire_uploads() == 2
    assert proposed == [{"op": "expire_uploads", "inodes": [6, 7], "before": 9_960_000}]
    assert gc.purge_trash() == 0 and len(proposed) == 1     # nothing old enough: no command
    now[0] += 60
    assert gc.purge_trash() == 1
    assert proposed[-1] == {"op": "trash_purge", "user": "", "all_users": True, "ids": [],
                            "before": 10_000_000, "reap_over": 0}


def test_gc_forgets_garbage_records_of_chunks_deleted_everywhere():
    from master.gc import GarbageCollector
    r, _ = registry()
    r.heartbeat("a:1", "", "i", True, [(3, 1)], [], FIG)
    proposed = []
    gc = GarbageCollector(r, lambda hs: {}, lambda: True, grace_s=10, clock=lambda: 100.0,
                          propose=lambda c: proposed.append(c) or {"forgotten": len(c["handles"])},
                          garbage_before=lambda ms: [2, 3] if ms == 90_000 else [])
    assert gc.prune_records() == 1
    assert proposed == [{"op": "forget_garbage", "handles": [2]}]   # 3 is still on a:1


def test_gc_expires_old_exactly_once_results_in_batches_and_only_when_some_are_old():
    from master.gc import GarbageCollector
    r, _ = registry()
    oldest = [95_000]
    proposed = []

    def propose(c):
        proposed.append(c)
        return {"expired": 2, "more": len(proposed) < 3}
    gc = GarbageCollector(r, lambda hs: {}, lambda: True, clock=lambda: 100.0, propose=propose,
                          session_ttl_s=10, oldest_session_ms=lambda: oldest[0])
    assert gc.expire_sessions(batch=2) == 0 and proposed == []      # 95 s is not 10 s old
    oldest[0] = 80_000
    assert gc.expire_sessions(batch=2) == 6
    assert proposed == [{"op": "expire_sessions", "before": 90_000, "limit": 2}] * 3
    oldest[0] = None
    assert gc.expire_sessions() == 0 and len(proposed) == 3


def test_busy_or_nearly_full_servers_get_new_chunks_last():
    r, _ = registry()
    r.heartbeat("h1:1", "", "a", True, [], [], dict(FIG, free_bytes=90, io_load=1.0, cpu_load=1.0))
    r.heartbeat("h2:1", "", "b", True, [], [], dict(FIG, free_bytes=2))
    r.heartbeat("h3:1", "", "c", True, [], [], dict(FIG, free_bytes=60))
    r.heartbeat("h4:1", "", "d", True, [], [], dict(FIG, free_bytes=50))
    for _ in range(20):
        assert r.place(2) == ["h3:1", "h4:1"]      # busy h1 (score 0.32) and full h2 lose
        assert r.place(3)[2] == "h1:1"


def test_a_host_short_of_memory_gets_new_chunks_after_the_others():
    r, _ = registry()
    gib = 1 << 30
    r.heartbeat("h1:1", "", "a", True, [], [],
                dict(FIG, mem_total_bytes=16 * gib, mem_available_bytes=gib // 2))
    r.heartbeat("h2:1", "", "b", True, [], [],
                dict(FIG, mem_total_bytes=16 * gib, mem_available_bytes=8 * gib))
    r.heartbeat("h3:1", "", "c", True, [], [],
                dict(FIG, free_bytes=45, mem_total_bytes=16 * gib, mem_available_bytes=4 * gib))
    for _ in range(20):
        assert r.place(2) == ["h2:1", "h3:1"]     # h1: 97 % of its memory in use
        assert r.place(3)[2] == "h1:1"


def test_servers_without_room_for_the_chunk_are_left_out():
    r, _ = registry()
    r.heartbeat("h1:1", "", "a", True, [], [], dict(FIG, free_bytes=10))
    r.heartbeat("h2:1", "", "b", True, [], [], dict(FIG, free_bytes=50))
    r.heartbeat("h3:1", "", "c", True, [], [], dict(FIG, free_bytes=40))
    assert sorted(r.place(2, need_bytes=32)) == ["h2:1", "h3:1"]
    with pytest.raises(ResourceExhausted, match="cluster full: only 0 of the 3 eligible "
                                                "chunkservers have 32 B free"):
        r.place(3, need_bytes=32)          # h2 and h3 hold 32 B more since their last report
    assert len(r.place(3, need_bytes=8)) == 3


def test_placed_bytes_count_against_a_server_until_its_next_report():
    from gfs.space import repair_reserve
    cap = 10 * MiB
    fig = dict(FIG, capacity_bytes=cap)
    rooms = {"h0:1": 3, "h1:1": 3, "h2:1": 3, "h3:1": 4}          # in 1 MiB chunks
    r, _ = registry()
    for a, n in rooms.items():
        r.heartbeat(a, "", "x", True, [], [], dict(fig, free_bytes=n * MiB + repair_reserve(cap)))
    placed = collections.Counter(a for _ in range(6) for a in r.place(2, need_bytes=MiB))
    assert sum(placed.values()) == 12 and all(placed[a] <= n for a, n in rooms.items())
    with pytest.raises(ResourceExhausted, match="cluster full"):
        r.place(2, need_bytes=MiB)
    r.heartbeat("h0:1", "", "x", False, [], [], dict(fig, free_bytes=2 * MiB + repair_reserve(cap)))
    assert r.place(1, need_bytes=MiB) == ["h0:1"]      # its report says it has room again


def test_new_chunks_leave_the_repair_reserve_repair_copies_may_use_it():
    from gfs.space import repair_reserve
    cap = 1000 * BLOCK_SIZE
    reserve = repair_reserve(cap)
    assert reserve == 20 * BLOCK_SIZE
    r, _ = registry()
    for i in range(3):
        r.heartbeat(f"h{i}:1", "", "x", True, [], [],
                    dict(FIG, capacity_bytes=cap, free_bytes=reserve + 2 * BLOCK_SIZE))
    r.heartbeat("h0:1", "", "x", False, [], [], dict(FIG, capacity_bytes=cap,
                                                     free_bytes=reserve))
    assert sorted(r.place(2, need_bytes=BLOCK_SIZE)) == ["h1:1", "h2:1"]
    with pytest.raises(ResourceExhausted, match="beyond their repair reserve; 3 needed"):
        r.place(3, need_bytes=BLOCK_SIZE)
    # a repair copy of a chunk held by h1 and h2 may go into h0's reserve
    assert r.place(1, existing=["h1:1", "h2:1"], need_bytes=BLOCK_SIZE, repair=True) == ["h0:1"]
