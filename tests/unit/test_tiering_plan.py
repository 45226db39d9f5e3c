"""Where the tier mover wants each replica (pure planning, fake clock)."""
from master.chunkservers import ServerView
from master.tiering import ReadTracker, plan_moves, target_tier


def sv(name, chunks, cold=(), corrupt=None):
    return ServerView(name, name, "", 1.0, chunks, corrupt or {}, {h: 0 for h in cold})


def row(h=1, cls="auto", atime=0, committed=True):
    return {"handle": h, "version": 1, "inode": 10 + h, "replication": 2, "committed": committed,
            "storage_class": cls, "atime": atime, "length": 5, "checksum": 0, "replicas": []}


def test_auto_goes_cold_when_idle_and_warms_only_after_enough_reads():
    now = [1000.0]
    t = ReadTracker(window_s=60, clock=lambda: now[0])
    idle = row(atime=int((now[0] - 100) * 1000))
    assert target_tier(idle, "hot", t, int(now[0] * 1000), cold_after_s=50, warm_reads=2) == "cold"
    assert target_tier(idle, "hot", t, int(now[0] * 1000), cold_after_s=200, warm_reads=2) == "hot"
    t.note(idle["inode"])
    assert target_tier(idle, "cold", t, int(now[0] * 1000), 50, 2) == "cold"   # one read
    t.note(idle["inode"])
    assert target_tier(idle, "cold", t, int(now[0] * 1000), 50, 2) == "hot"
    now[0] += 61                                      # reads fall out of the window ...
    assert target_tier(idle, "cold", t, int(now[0] * 1000), 50, 2) == "cold"
    # ... but a hot file read 61 s ago stays hot until idle for cold_after
    assert target_tier(idle, "hot", t, int(now[0] * 1000), 100, 2) == "hot"
    assert t.take_unsaved() == {idle["inode"]: 1_000_000}
    assert target_tier(row(cls="cold"), "hot", t, 0, 50, 2) == "cold"
    assert target_tier(row(cls="hot"), "cold", t, 0, 50, 2) == "hot"


def test_only_healthy_replicas_of_fully_replicated_committed_chunks_move():
    t = ReadTracker(60, clock=lambda: 0.0)
    view = {"a": sv("a", {1: 1, 2: 1, 3: 1, 4: 1}, cold={4}),
            "b": sv("b", {1: 1, 3: 1, 4: 1}, corrupt={3: 1}),
            "c": sv("c", {4: 1})}
    rows = [row(1, "cold"), row(2, "cold"), row(3, "cold"), row(4, "hot"),
            row(5, "cold", committed=False)]
    moves = plan_moves(rows, view, t, 0, 50, 2)
    assert sorted(moves) == [("a", 1, 1, "cold"), ("a", 4, 1, "hot"), ("b", 1, 1, "cold")]
