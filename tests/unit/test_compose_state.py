"""The `compose` command (master/compose.py) over a real LMDB, without servers: files of chunks
of different lengths, made atomically from other files' chunks."""
from __future__ import annotations

import pytest

from gfs.auth.tokens import token_hash
from gfs.checksum import inline_checksum
from master import compose as compose_module
from master.state import MetadataState
from tests.unit.test_identity_state import Log, log, people  # noqa: F401 (fixtures)
from tests.unit.test_state import CS, Driver, create, delete, rename


def compose(dest, sources, overwrite=False, now=200, **extra):
    return {"op": "compose", "dest": dest, "sources": list(sources), "overwrite": overwrite,
            "mode": 0o640, "owner": "", "storage_class": "", "now": now, **extra}


@pytest.fixture
def d(tmp_path):
    with MetadataState(str(tmp_path / "meta"), map_size=1 << 26) as state:
        yield Driver(state)


def test_compose_moves_the_chunks_in_order_and_removes_the_sources(d):
    d.upload("/p1", [CS, 7])
    d.upload("/p2", [3])
    d.upload("/p3", [CS, CS, 1])
    handles = d.handles("/p1") + d.handles("/p2") + d.handles("/p3")
    before = d.state.counts()
    ok = d.ok(compose("/obj", ["/p1", "/p2", "/p3"]))
    assert ok["size"] == 3 * CS + 11 and ok["chunks"] == 6
    info = d.state.stat("/obj")
    assert (info["size"], info["mode"], info["type"], info["inode"]) == (3 * CS + 11, 0o640, "file",
                                                                         ok["inode"])
    assert [c["handle"] for c in info["chunks"]] == handles
    assert [c["index"] for c in info["chunks"]] == list(range(6))
    assert [c["length"] for c in info["chunks"]] == [CS, 7, 3, CS, CS, 1]
    assert [c["checksum"] for c in info["chunks"]] == [1000, 1001, 1000, 1000, 1001, 1002]
    assert d.names("/") == ["obj"]
    assert d.garbage() == {}                       # nothing moved passes through garbage
    after = d.state.counts()
    assert (after["files"], after["chunks"], after["inodes"]) == (1, before["chunks"],
                                                                  before["inodes"] - 2)
    assert d.state.du("/")["bytes"] == 3 * CS + 11 and d.state.du("/")["files"] == 1
    rows = {r["handle"]: r for r in d.state.chunk_table()}
    assert all(rows[h]["inode"] == ok["inode"] and rows[h]["committed"] for h in handles)
    assert d.state.unreferenced(handles) == {}      # GC sees every moved chunk as referenced


def test_a_composed_file_is_an_ordinary_file_afterwards(d):
    d.upload("/a", [5])
    d.upload("/b", [CS])
    d.ok(compose("/obj", ["/a", "/b"]))
    handles = d.handles("/obj")
    d.ok(rename("/obj", "/moved"))
    assert d.handles("/moved") == handles
    d.ok(delete("/moved"))
    assert sorted(d.garbage()) == sorted(handles)   # deleting it frees its chunks as usual


def test_a_stat_for_a_span_holds_only_the_chunks_of_those_bytes_with_their_offsets(d):
    d.upload("/p1", [CS, 7])
    d.upload("/p2", [3])
    d.upload("/p3", [CS, CS, 1])
    d.ok(compose("/obj", ["/p1", "/p2", "/p3"]))
    whole = d.state.stat("/obj")
    lengths = [c["length"] for c in whole["chunks"]]            # [CS, 7, 3, CS, CS, 1]
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    size = whole["size"]
    assert "chunk_span" not in whole and "offset" not in whole["chunks"][0]
    for offset in sorted({0, 1, CS - 1, CS, CS + 6, CS + 7, CS + 9, CS + 10, 2 * CS, size - 1,
                          size, size + 5}):
        for length in (0, 1, 2, 5, CS, 2 * CS + 3, size + 100):
            info = d.state.stat("/obj", span=(offset, length))
            lo, hi = min(offset, size), min(size, offset + length)
            want = [(h["handle"], start) for h, start in zip(whole["chunks"], starts)
                    if start < hi and start + h["length"] > lo and hi > lo]
            assert [(c["handle"], c["offset"]) for c in info["chunks"]] == want, (offset, length)
            assert info["chunk_span"] == (lo, max(lo, hi))
            assert (info["size"], info["inode"]) == (size, whole["inode"])
    # A directory has no chunks to leave out.
    assert d.state.stat("/", span=(0, 10))["chunks"] == []


def test_compose_into_one_of_its_sources_appends(d):
    d.upload("/log", [4])
    d.upload("/more", [6])
    first = d.handles("/log") + d.handles("/more")
    d.ok(compose("/log", ["/log", "/more"]))           # no overwrite needed: it is a source
    assert d.handles("/log") == first and d.state.stat("/log")["size"] == 10
    d.upload("/tail", [1])
    d.ok(compose("/log", ["/log", "/tail"]))
    assert d.state.stat("/log")["size"] == 11 and len(d.handles("/log")) == 3
    assert d.garbage() == {}


def test_compose_overwrite_garbages_the_replaced_file(d):
    d.upload("/a", [5])
    old = d.upload("/obj", [9])
    old_handles = d.handles("/obj")
    assert d.err(compose("/obj", ["/a"])) == "ALREADY_EXISTS"
    assert d.names("/") == ["a", "obj"]             # a refusal changes nothing
    d.ok(compose("/obj", ["/a"], overwrite=True))
    assert d.state.stat("/obj")["inode"] != old and d.state.stat("/obj")["size"] == 5
    assert sorted(d.garbage()) == old_handles


def test_compose_errors_change_nothing(d):
    d.upload("/a", [5])
    d.ok({"op": "mkdir", "path": "/dir", "parents": False, "mode": 0o755, "owner": "", "now": 1})
    pending = d.ok(create("/late"))["inode"]
    d.ok({"op": "put_inline", "path": "/small", "data": b"tiny",
          "checksum": inline_checksum(b"tiny"), "replication": 3, "storage_class": "", "chunk_size": 1 << 20, "mode": 0o644,
          "owner": "", "overwrite": False, "now": 1})
    dump = d.state.dump()
    cases = [
        (compose("/obj", []), "INVALID_ARGUMENT"),
        (compose("/obj", ["/a", "/a"]), "INVALID_ARGUMENT"),
        (compose("/obj", ["/a", "/missing"]), "NOT_FOUND"),
        (compose("/obj", ["/a", "/late"]), "FAILED_PRECONDITION"),     # still being written
        (compose("/obj", ["/a", "/dir"]), "FAILED_PRECONDITION"),
        (compose("/obj", ["/a", "/small"]), "FAILED_PRECONDITION"),     # its bytes are inline
        (compose("/obj", ["/"]), "INVALID_ARGUMENT"),
        (compose("/", ["/a"], overwrite=True), "INVALID_ARGUMENT"),
        (compose("/dir", ["/a"], overwrite=True), "FAILED_PRECONDITION"),
        (compose("/nodir/obj", ["/a"]), "NOT_FOUND"),
        (compose("/a/obj", ["/a"]), "FAILED_PRECONDITION"),
        (compose("/obj", ["relative"]), "INVALID_ARGUMENT"),
        (compose("/obj", "/a"), "INVALID_ARGUMENT"),
    ]
    for command, code in cases:
        assert d.err(command) == code, command
    assert d.state.dump()["inodes"] == dump["inodes"] and d.state.dump()["chunks"] == dump["chunks"]
    assert d.state.pending_uploads()[0]["inode"] == pending


def test_too_many_sources_or_chunks_are_refused(d, monkeypatch):
    d.upload("/a", [1, 1, 1])
    d.upload("/b", [1])
    monkeypatch.setattr(compose_module, "MAX_SOURCES", 1)
    code, message = d.run(compose("/obj", ["/a", "/b"]))["err"]
    assert code == "INVALID_ARGUMENT" and "too many sources: 2 (at most 1)" in message
    monkeypatch.setattr(compose_module, "MAX_SOURCES", 10)
    monkeypatch.setattr(compose_module, "MAX_CHUNKS", 3)
    code, message = d.run(compose("/obj", ["/a", "/b"]))["err"]
    assert code == "INVALID_ARGUMENT" and "4 chunks (at most 3)" in message


def test_compose_takes_the_largest_replication_and_chunk_size_of_its_sources(d):
    ino = d.ok(create("/big", chunk_size=4 * CS, replication=5))["inode"]
    handle = d.ok({"op": "add_chunk", "inode": ino, "index": 0, "replicas": ["x"], "now": 1})["handle"]
    d.ok({"op": "commit", "inode": ino, "size": 3 * CS,
          "chunks": [{"handle": handle, "length": 3 * CS, "checksum": 1}], "now": 1})
    d.upload("/small", [CS])
    d.ok(compose("/obj", ["/small", "/big"]))
    info = d.state.stat("/obj")
    assert (info["replication"], info["chunk_size"]) == (5, 4 * CS)
    assert [c["length"] for c in info["chunks"]] == [CS, 3 * CS]   # longer than /small's chunks


def test_compose_is_exactly_once(d):
    d.upload("/a", [5])
    command = compose("/obj", ["/a"], client_id=b"c" * 16, seq=1, ack_seq=0)
    first = d.run(command)
    assert d.run(command) == first                  # a retry returns the stored result


# --- permissions ---------------------------------------------------------------------------------

def test_compose_needs_read_and_delete_on_sources_and_write_on_the_destination(log, people):
    alice, bob = people["alice"], people["bob"]
    log.put("/alice/p1", 4, alice)
    log.put("/alice/p2", 6, alice)
    part = {"op": "compose", "dest": "/alice/obj", "sources": ["/alice/p1", "/alice/p2"],
            "overwrite": False, "mode": 0o644, "owner": "", "storage_class": ""}
    assert log.err(part, bob)[0] == "NOT_FOUND"                    # private: hidden from bob
    assert log.err({**part, "dest": "/bob/obj"}, bob)[0] == "NOT_FOUND"
    assert log.err({**part, "dest": "/bob/obj"}, alice) == ("NOT_FOUND",
                                                            "/bob: no such file or directory")
    assert log.err(part, None)[0] == "NOT_FOUND"                   # anonymous
    reader = log.token("alice", "reader", ["storage.alice.files@/alice/**:list,read,write"],
                       by=alice)
    code, message = log.err(part, reader)
    assert code == "PERMISSION_DENIED" and "delete" in message
    log.ok({"op": "set_visibility", "path": "/alice", "visibility": "public"}, alice)
    assert log.err({**part, "dest": "/bob/obj"}, bob)[0] == "PERMISSION_DENIED"   # reads, not deletes
    assert log.state.stat("/alice/p1")["size"] == 4
    assert log.ok(part, alice)["size"] == 10
    assert log.state.stat("/alice/obj")["owner"] == "alice"


def test_compose_keeps_usage_and_quota_right(log, people):
    alice = people["alice"]
    log.put("/alice/p1", 40, alice)
    log.put("/alice/p2", 50, alice)
    log.ok({"op": "user_set", "name": "alice", "quota": [100, 2]}, people["admin"])
    part = {"op": "compose", "dest": "/alice/obj", "sources": ["/alice/p1", "/alice/p2"],
            "overwrite": False, "mode": 0o644, "owner": "", "storage_class": ""}
    log.ok(part, alice)                   # at the file quota: the sources leave as obj comes
    me = log.state.whoami(token_hash(alice), 0)
    assert me["used"] == [90, 1]
    assert log.state.du("/alice")["bytes"] == 90
