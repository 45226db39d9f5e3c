"""Big deleted trees removed by bounded `reap` commands (master/namespace.py reap), over a real
LMDB: the tree leaves the namespace in the delete (or purge) command, every `reap` removes at
most its limit of inodes, and the end state is the one a one-command removal leaves."""
from __future__ import annotations

import pytest

from gfs.errors import NotFound
from master.state import MetadataState
from tests.unit.test_state import Driver, delete, mkdir, purge, restore, trash

FILES = 23


def reap(limit, now=200):
    return {"op": "reap", "limit": limit, "now": now}


def build(d: Driver) -> None:
    d.ok(mkdir("/keep"))
    d.ok(mkdir("/big/a/b", parents=True))
    for i in range(FILES):
        d.upload(f"/big/{'a/' if i % 2 else 'a/b/'}f{i}", lengths=(10, 5))
    d.upload("/keep/x")


def reap_all(d: Driver, limit: int) -> int:
    """Reap until nothing is left; the number of commands it took."""
    commands = 0
    while True:
        ok = d.ok(reap(limit))
        commands += 1
        assert ok["removed"] <= limit
        if not ok["left"]:
            return commands


def tables(state: MetadataState) -> dict:
    dump = state.dump()
    return {name: dump[name] for name in ("inodes", "dirents", "chunks", "garbage", "trash")}


def keys(state: MetadataState, name: str) -> list[bytes]:
    return [k for k, _ in state.dump()[name]]


@pytest.fixture
def pair(tmp_path):
    with MetadataState(str(tmp_path / "a"), map_size=1 << 26) as a, \
            MetadataState(str(tmp_path / "b"), map_size=1 << 26) as b:
        yield Driver(a), Driver(b)


def test_rm_r_of_a_big_tree_goes_in_bounded_reaps_and_ends_as_one_removal(pair):
    slow, fast = pair
    for d in pair:
        build(d)
    usage_before = slow.state.du("/")
    assert fast.ok(delete("/big", recursive=True, now=150)) == {"deleted": 3 + FILES,
                                                                  "trash_id": 0}
    assert slow.ok(delete("/big", recursive=True, now=150, reap_over=10)) == {
        "deleted": FILES, "trash_id": 0}                  # its files, from the directory totals
    # Gone from the namespace at once, and in no one's trash.
    with pytest.raises(NotFound):
        slow.state.stat("/big")
    assert slow.names("/") == ["keep"]
    assert slow.state.trash_list(None) == []
    assert slow.state.reaping() == 1
    assert slow.state.du("/") != usage_before
    assert reap_all(slow, 4) == -(-(3 + FILES) // 4)
    assert slow.state.reaping() == 0
    assert slow.ok(reap(4)) == {"removed": 0, "left": False}
    fast_tables, slow_tables = tables(fast.state), tables(slow.state)
    assert slow_tables["inodes"] != [] and slow_tables["trash"] == []
    for name in ("dirents", "chunks"):
        assert slow_tables[name] == fast_tables[name], name
    assert keys(slow.state, "garbage") == keys(fast.state, "garbage")  # since: when reaped
    # inode records differ only in the reaped directories' mtimes: same inodes remain
    assert [k for k, _ in slow_tables["inodes"]] == [k for k, _ in fast_tables["inodes"]]
    assert slow.state.du("/") == fast.state.du("/")


def test_a_small_tree_is_still_removed_by_its_delete(pair):
    d, _ = pair
    build(d)
    assert d.ok(delete("/keep", recursive=True, reap_over=10)) == {"deleted": 2, "trash_id": 0}
    assert d.state.reaping() == 0


def test_purge_of_a_big_trash_entry_hands_it_to_the_reaper(pair):
    d, fast = pair
    for x in pair:
        build(x)
        x.ok(trash("/big"))
    trash_id = d.state.trash_list(None)[0]["id"]
    assert d.ok(purge(reap_over=10)) == {"purged": 1}
    assert d.state.trash_list(None) == []
    assert d.err(restore(trash_id)) == "NOT_FOUND"
    assert d.ok(purge(reap_over=10)) == {"purged": 0}     # not purged twice
    assert d.state.reaping() == 1
    reap_all(d, 5)
    assert fast.ok(purge()) == {"purged": 1}
    assert keys(d.state, "garbage") == keys(fast.state, "garbage")   # garbage since: the reap
    assert tables(d.state)["dirents"] == tables(fast.state)["dirents"]
    assert d.state.reaping() == 0


def test_a_big_tree_goes_to_the_trash_without_a_walk_of_it(pair, monkeypatch):
    """rm -r into the trash: a big tree's record takes its files and bytes from the directory
    totals (a walk of a million inodes would hold the apply thread for seconds); a small tree
    is still walked. Both records agree on what the tree holds."""
    walked, big = pair
    for d in pair:
        build(d)
    small = walked.ok(trash("/big", reap_over=100))
    assert small["deleted"] == 3 + FILES                     # walked: every inode
    from master import namespace
    monkeypatch.setattr(namespace, "tree_summary", lambda *a: pytest.fail("tree walked"))
    ok = big.ok(trash("/big", reap_over=10))
    assert ok["deleted"] == FILES                              # its files, from the totals
    [walked_entry], [big_entry] = walked.state.trash_list(None), big.state.trash_list(None)
    for key in ("size", "files", "path", "user", "type"):
        assert big_entry[key] == walked_entry[key], key
    assert big_entry["size"] == FILES * 15
    # restorable as any trash entry, and purged by the reaper like one
    assert big.ok(restore(big_entry["id"], dst="/back"))["path"] == "/back"
    assert big.state.du("/back")["files"] == FILES


def test_counting_a_big_tree_reads_no_more_entries_than_the_limit(pair, monkeypatch):
    """smaller_than reads each directory only up to what is left to count (a directory of a
    million entries was read whole by a delete or a purge: ~10 s of apply thread)."""
    from master import namespace
    from master.store import Tx
    d, _ = pair
    build(d)
    read: list[int] = []
    entries = Tx.entries

    def counted(self, parent, start_after="", limit=None):
        out = entries(self, parent, start_after, limit)
        read.append(len(out))
        return out
    monkeypatch.setattr(Tx, "entries", counted)
    with d.state._reader() as tx:
        big = tx.lookup(1, "big")
        assert namespace.smaller_than(tx, big, 5) is False
        assert sum(read) <= 5
        assert namespace.smaller_than(tx, big, 3 + FILES + 1) is True     # 26 inodes
        assert namespace.smaller_than(tx, big, 3 + FILES) is False


def walked_dirs(state: MetadataState) -> int:
    import msgpack
    return sum(1 for _, v in state.dump()["inodes"] if msgpack.unpackb(v)["type"] == "dir")


def test_the_directory_count_is_kept_through_every_change_without_a_walk(pair):
    """`gfs admin health` reads counts(): directories are counted on every mkdir and removal
    (a walk of every inode per call was O(N) at a million files)."""
    d, _ = pair
    seen = []

    def check():
        seen.append(d.state.counts()["dirs"])
        assert seen[-1] == walked_dirs(d.state)
    build(d)
    check()
    d.ok(mkdir("/empty"))
    d.ok(delete("/empty"))                                     # rmdir
    check()
    d.ok(trash("/big"))                                        # in the trash: still counted
    check()
    d.ok(restore(d.state.trash_list(None)[0]["id"]))
    check()
    d.ok(delete("/big", recursive=True, reap_over=10))         # handed to the reaper
    reap_all(d, 2)
    check()
    d.ok(trash("/keep"))
    d.ok(purge())
    check()
    assert seen == [5, 5, 5, 5, 2, 1]      # /, keep, big, big/a, big/a/b


def test_a_store_written_before_the_directory_count_gets_it_on_open(tmp_path):
    from master.store import DIRS
    path = str(tmp_path / "old")
    with MetadataState(path, map_size=1 << 26) as state:
        build(Driver(state))
        with state._env.begin(write=True) as txn:              # as older code left it
            txn.delete(DIRS, db=state._dbs["meta"])
    with MetadataState(path, map_size=1 << 26) as state:
        assert state.counts()["dirs"] == walked_dirs(state) == 5
