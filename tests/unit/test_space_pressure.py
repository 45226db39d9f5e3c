"""The space-pressure policy (master/pressure.py) and the garbage collector applying it, over a
real replica registry with a fake clock; the Raft log is a recorder (no daemons)."""
from master import pressure
from master.chunkservers import ChunkserverRegistry, ServerView
from master.gc import GarbageCollector

GiB = 1 << 30


def sv(name, capacity, free, chunks=None):
    return ServerView(name, name, "", 0.0, chunks or {}, {}, {}, capacity, free)


def entry(i, deleted, size):
    return {"id": i, "deleted": deleted, "size": size, "path": f"/t{i}", "user": "u"}


def test_disk_use_and_pressure_over_the_live_servers():
    view = {"a": sv("a", 10 * GiB, GiB), "b": sv("b", 10 * GiB, GiB),
            "c": sv("c", 0, 0)}                                  # no capacity: left out
    assert abs(pressure.disk_use(view) - 0.9) < 1e-9
    assert pressure.under_pressure(view, 0.9) and not pressure.under_pressure(view, 0.95)
    assert not pressure.under_pressure(view, 0.0) and not pressure.under_pressure(view, 1.0)
    assert pressure.disk_use({}) == 0.0


def test_bytes_to_free_aims_below_the_threshold_less_what_is_going_anyway():
    view = {"a": sv("a", 100 * GiB, 5 * GiB, {h: 1 for h in range(95)})}  # 95 replicas, 1 GiB
    assert pressure.bytes_to_free(view, 0.9) == 10 * GiB                  # 95 % -> 85 %
    assert abs(pressure.bytes_to_free(view, 0.9, going=4) - 6 * GiB) < 1024
    assert pressure.bytes_to_free(view, 0.9, going=20) == 0


def test_trash_gives_way_oldest_first_just_enough_and_bounded():
    entries = [entry(3, 300, GiB), entry(1, 100, GiB), entry(2, 100, 2 * GiB), entry(4, 50, 0)]
    picked = pressure.trash_to_purge(entries, 5 * GiB, replication=3)
    assert [e["id"] for e in picked] == [4, 1, 2]       # (deleted, id) order; 0+3+6 >= 5 GiB
    assert pressure.trash_to_purge(entries, 0, 3) == []
    assert len(pressure.trash_to_purge(entries, 100 * GiB, 3, limit=2)) == 2


class Log:
    """Records the commands the collector proposes; applies trash purges to `trash`."""

    def __init__(self, trash):
        self.trash, self.commands = trash, []

    def __call__(self, command):
        self.commands.append(command)
        if command["op"] == "trash_purge":
            gone = [e for e in self.trash if e["id"] in command["ids"]]
            self.trash[:] = [e for e in self.trash if e not in gone]
            return {"purged": len(gone)}
        return {}


def collector(free, trash, garbage, now=10_000.0):
    """One chunkserver (capacity 100 GiB, `free` free) holding handles 1..4; `garbage`: handle ->
    garbage-since ms (None: never known to the metadata)."""
    clock = [now]
    reg = ChunkserverRegistry(dead_after=10, clock=lambda: clock[0])
    reg.heartbeat("a:1", "", "i", True, [(h, 1) for h in range(1, 5)], [],
                  {"capacity_bytes": 100 * GiB, "free_bytes": free})
    log = Log(trash)
    gc = GarbageCollector(reg, lambda handles: {h: garbage[h] for h in handles if h in garbage},
                          lambda: True, grace_s=3600, interval_s=5, clock=lambda: clock[0],
                          propose=log, trash_list=lambda: list(trash), space_pressure=0.9,
                          pressure_grace_s=60, replication=3)

    def tick(seconds):           # time passes; the chunkserver keeps reporting
        clock[0] += seconds
        reg.heartbeat("a:1", "", "i", False, [], [], {"capacity_bytes": 100 * GiB,
                                                      "free_bytes": free})
    return gc, log, tick


def test_without_pressure_nothing_changes():
    trash = [entry(1, 0, GiB)]
    gc, log, _ = collector(50 * GiB, trash, {1: (10_000.0 - 120) * 1000})
    assert not gc.under_pressure()
    assert [o["delete_in_s"] > 3000 for o in gc.plan()] == [True]
    assert gc.purge_trash_for_space() == 0 and log.commands == [] and len(trash) == 1


def test_under_pressure_recorded_garbage_goes_early_unknown_orphans_keep_the_grace():
    now = 10_000.0
    garbage = {1: (now - 120) * 1000, 2: (now - 30) * 1000, 3: None}
    gc, _, _ = collector(5 * GiB, [], garbage, now)
    assert gc.under_pressure()
    due = {o["handle"]: o["delete_in_s"] for o in gc.plan()}
    assert due[1] == 0 and abs(due[2] - 30) < 1e-6 and due[3] == 3600
    assert 4 not in due                                    # referenced: never an orphan


def test_under_pressure_the_oldest_trash_is_purged_a_batch_at_a_time():
    trash = [entry(i, 1000 * i, GiB) for i in range(1, 8)]
    gc, log, tick = collector(5 * GiB, trash, {})        # 95 % full: 10 GiB to free
    assert gc.purge_trash_for_space() == 4                # 4 x 1 GiB x 3 replicas >= 10 GiB
    assert log.commands[-1] == {"op": "trash_purge", "user": "", "all_users": True,
                                "ids": [1, 2, 3, 4], "before": 0, "reap_over": 0}
    tick(30)
    assert gc.purge_trash_for_space() == 0                # the batch's replicas are still going
    tick(60)
    assert gc.purge_trash_for_space() == 3                # still 95 %: the next oldest
    assert [e["id"] for e in trash] == [] and gc.purged_for_space == 7
    assert all(c["op"] == "trash_purge" for c in log.commands)
