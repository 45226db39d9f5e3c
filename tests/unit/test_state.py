"""MetadataState (master/state.py) against docs/state-machine.md, over a real LMDB in tmp_path."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gfs.errors import DataLoss, FailedPrecondition, GfsError, InvalidArgument, NotFound
from master import state as state_module
from master.state import MetadataState
from master import namespace as ns
from master.store import DB_NAMES, Tx

CS = 64 * 1024                    # the smallest valid chunk size
CLIENT = b"c" * 16
OTHER_CLIENT = b"d" * 16
NO_TRASH = {"trash": 0, "trash_bytes": 0}


# --- command builders ----------------------------------------------------------------------------

def mkdir(path, parents=False, now=100, **extra):
    return {"op": "mkdir", "path": path, "parents": parents, "mode": 0o755, "owner": "alice",
            "now": now, **extra}


def create(path, overwrite=False, now=100, chunk_size=CS, **extra):
    return {"op": "create", "path": path, "replication": 3, "storage_class": "hot",
            "chunk_size": chunk_size, "mode": 0o644, "owner": "alice", "overwrite": overwrite,
            "now": now, **extra}


def add_chunk(inode, index, now=100, replicas=("cs1:7000", "cs2:7000"), **extra):
    return {"op": "add_chunk", "inode": inode, "index": index, "replicas": list(replicas),
            "now": now, **extra}


def commit(inode, size, chunks, now=100, **extra):
    return {"op": "commit", "inode": inode, "size": size, "chunks": chunks, "now": now, **extra}


def abort(inode, now=100, **extra):
    return {"op": "abort", "inode": inode, "now": now, **extra}


def rename(src, dst, overwrite=False, now=100, **extra):
    return {"op": "rename", "src": src, "dst": dst, "overwrite": overwrite, "now": now, **extra}


def delete(path, recursive=False, now=100, **extra):
    return {"op": "delete", "path": path, "recursive": recursive, "now": now, **extra}


def set_replicas(handle, version, replicas=("cs3:7000",), now=100, **extra):
    return {"op": "set_replicas", "handle": handle, "version": version, "replicas": list(replicas),
            "now": now, **extra}


def expire_uploads(inodes, before, now=100, **extra):
    return {"op": "expire_uploads", "inodes": list(inodes), "before": before, "now": now, **extra}


def forget_garbage(handles, now=100, **extra):
    return {"op": "forget_garbage", "handles": list(handles), "now": now, **extra}


def trash(path, user="alice", recursive=True, now=100, **extra):
    """delete to the trash."""
    return delete(path, recursive=recursive, now=now, trash=True, user=user, **extra)


def restore(trash_id, user="alice", dst="", now=100, **extra):
    return {"op": "trash_restore", "id": trash_id, "user": user, "dst": dst, "mode": 0o750,
            "owner": "bob", "now": now, **extra}


def purge(user="alice", all_users=False, ids=(), before=0, now=100, **extra):
    return {"op": "trash_purge", "user": user, "all_users": all_users, "ids": list(ids),
            "before": before, "now": now, **extra}


def barrier(now=100, **extra):
    return {"op": "barrier", "now": now, **extra}


def session(seq, ack_seq=0, client=CLIENT):
    return {"client_id": client, "seq": seq, "ack_seq": ack_seq}


# --- a driver that numbers log entries --------------------------------------------------------------

class Driver:
    """Feeds commands to a MetadataState as consecutive log entries."""

    def __init__(self, state: MetadataState):
        self.state = state
        self.index = state.applied_index()

    def batch(self, commands: list) -> list[dict]:
        self.index += 1
        results = self.state.apply_batch(self.index, commands)
        assert results is not None and len(results) == len(commands)
        for result in results:
            assert msgpack.unpackb(msgpack.packb(result, use_bin_type=True), raw=False) == result
        return results

    def run(self, command) -> dict:
        return self.batch([command])[0]

    def ok(self, command) -> dict:
        result = self.run(command)
        assert "ok" in result, result
        return result["ok"]

    def err(self, command) -> str:
        result = self.run(command)
        assert "err" in result, result
        code, message = result["err"]
        assert isinstance(message, str) and message and "\n" not in message
        return code

    def upload(self, path, lengths=(10,), overwrite=False, now=100) -> int:
        """create + add_chunk per length + commit; returns the inode."""
        ino = self.ok(create(path, overwrite=overwrite, now=now))["inode"]
        chunks = [{"handle": self.ok(add_chunk(ino, i, now=now))["handle"], "length": length,
                   "checksum": 1000 + i} for i, length in enumerate(lengths)]
        self.ok(commit(ino, sum(lengths), chunks, now=now))
        return ino

    def handles(self, path) -> list[int]:
        return [c["handle"] for c in self.state.stat(path)["chunks"]]

    def garbage(self) -> dict[int, int]:
        return {int.from_bytes(k, "big"): msgpack.unpackb(v) for k, v in self.state.dump()["garbage"]}

    def names(self, path) -> list[str]:
        return [os.path.basename(e["path"]) for e in self.state.list(path)[0]]


@pytest.fixture
def state(tmp_path):
    s = MetadataState(str(tmp_path / "meta"), map_size=1 << 26)
    yield s
    s.close()


@pytest.fixture
def d(state):
    return Driver(state)


# --- the root and stat ---------------------------------------------------------------------------

def test_fresh_state_has_only_the_root(state):
    root = state.stat("/")
    assert root == {"path": "/", "inode": 1, "type": "dir", "size": 0, "mode": 0o755, "owner": "root",
                    "ctime": 0, "mtime": 0, "replication": 0, "storage_class": "", "chunk_size": 0,
                    "visibility": "private", "own_visibility": "", "xattrs": {}, "chunks": [],
                    "inline": None}
    assert state.applied_index() == 0
    assert state.list("/") == ([], "")
    assert state.counts() == {"inodes": 1, "dirs": 1, "files": 0, "pending": 0, "chunks": 0, "garbage": 0, **NO_TRASH}


@pytest.mark.parametrize("path, error", [
    ("/missing", NotFound), ("relative", InvalidArgument), ("/a//b", InvalidArgument),
    (7, InvalidArgument), ("/f/x", FailedPrecondition)])
def test_stat_errors(d, path, error):
    d.upload("/f")
    with pytest.raises(error) as info:
        d.state.stat(path)
    assert isinstance(info.value, GfsError)


# --- mkdir ---------------------------------------------------------------------------------------

def test_mkdir_creates_a_directory_and_touches_the_parent(d):
    assert d.ok(mkdir("/a", now=5)) == {"inode": 2}
    info = d.state.stat("/a")
    assert (info["type"], info["size"], info["mode"], info["owner"], info["ctime"], info["mtime"]) == \
        ("dir", 0, 0o755, "alice", 5, 5)
    assert (info["replication"], info["storage_class"], info["chunk_size"], info["chunks"]) == (0, "", 0, [])
    assert d.state.stat("/")["mtime"] == 5


def test_mkdir_errors(d):
    d.ok(mkdir("/a"))
    d.upload("/f")
    assert d.err(mkdir("/a")) == "ALREADY_EXISTS"
    assert d.err(mkdir("/f")) == "ALREADY_EXISTS"
    assert d.err(mkdir("/f", parents=True)) == "ALREADY_EXISTS"
    assert d.err(mkdir("/")) == "ALREADY_EXISTS"
    assert d.err(mkdir("/x/y")) == "NOT_FOUND"
    assert d.err(mkdir("/f/y")) == "FAILED_PRECONDITION"
    assert d.err(mkdir("/f/y/z", parents=True)) == "FAILED_PRECONDITION"
    assert d.names("/") == ["a", "f"]


def test_mkdir_parents_creates_the_chain_and_is_idempotent(d):
    ino = d.ok(mkdir("/a/b/c", parents=True, now=7))["inode"]
    assert [d.state.stat(p)["type"] for p in ("/a", "/a/b", "/a/b/c")] == ["dir"] * 3
    assert d.ok(mkdir("/a/b/c", parents=True)) == {"inode": ino}
    assert d.ok(mkdir("/", parents=True)) == {"inode": 1}
    assert d.state.stat("/a/b")["mtime"] == 7


# --- create / add_chunk / commit / abort -----------------------------------------------------------

def test_upload_lifecycle(d):
    ino = d.ok(create("/f", now=10))["inode"]
    with pytest.raises(NotFound):          # a pending upload is invisible
        d.state.stat("/f")
    assert d.names("/") == []
    assert d.ok(add_chunk(ino, 0, now=11)) == {"handle": 1, "version": 1}
    assert d.ok(add_chunk(ino, 1, now=11)) == {"handle": 2, "version": 1}
    assert [c["handle"] for c in d.state.file_chunks(ino)] == [1, 2]
    assert d.state.counts()["pending"] == 1
    chunks = [{"handle": 1, "length": CS, "checksum": 7}, {"handle": 2, "length": 5, "checksum": 2**64 - 1}]
    assert d.ok(commit(ino, CS + 5, chunks, now=12)) == {"inode": ino, "path": "/f"}
    info = d.state.stat("/f")
    assert (info["type"], info["size"], info["ctime"], info["mtime"], info["replication"],
            info["storage_class"], info["chunk_size"], info["mode"]) == ("file", CS + 5, 10, 12, 3, "hot", CS, 0o644)
    replicas = ["cs1:7000", "cs2:7000"]
    assert info["chunks"] == [
        {"handle": 1, "index": 0, "version": 1, "length": CS, "checksum": 7, "replicas": replicas},
        {"handle": 2, "index": 1, "version": 1, "length": 5, "checksum": 2**64 - 1, "replicas": replicas}]
    assert d.state.stat("/")["mtime"] == 12
    assert d.state.counts() == {"inodes": 2, "dirs": 1, "files": 1, "pending": 0, "chunks": 2, "garbage": 0, **NO_TRASH}


def test_create_with_its_first_chunk_is_create_then_add_chunk_in_one_command(d):
    """CreateRequest.first_chunk: chunk 0 allocated by the create's own command, exactly as an
    add_chunk right after it would (same handle, version, replicas, upload bookkeeping)."""
    replicas = ["cs1:7000", "cs3:7000"]
    created = d.ok(create("/f", now=10, first_chunk=replicas))
    ino = created["inode"]
    assert created == {"inode": ino, "handle": 1, "version": 1}
    assert [c["handle"] for c in d.state.file_chunks(ino)] == [1]
    assert d.ok(add_chunk(ino, 1, now=11)) == {"handle": 2, "version": 1}
    assert d.ok(add_chunk(ino, 0, now=11, replicas=["cs4:7000"])) == {"handle": 1, "version": 2}
    chunks = [{"handle": 1, "length": CS, "checksum": 7}, {"handle": 2, "length": 5, "checksum": 2}]
    d.ok(commit(ino, CS + 5, chunks, now=12))
    info = d.state.stat("/f")
    assert [(c["handle"], c["version"], c["replicas"]) for c in info["chunks"]] == [
        (1, 2, ["cs4:7000"]), (2, 1, ["cs1:7000", "cs2:7000"])]     # chunk 0 retried elsewhere
    # Refused like a create: nothing allocated, no chunk left behind.
    assert d.err(create("/f", first_chunk=replicas)) == "ALREADY_EXISTS"
    assert d.err(create("/g", first_chunk="cs1:7000")) == "INVALID_ARGUMENT"
    assert d.state.counts()["chunks"] == 2 and d.state.counts()["pending"] == 0


def test_empty_file(d):
    ino = d.ok(create("/empty"))["inode"]
    d.ok(commit(ino, 0, []))
    assert d.state.stat("/empty")["size"] == 0


def test_create_errors(d):
    d.ok(mkdir("/dir"))
    d.upload("/f")
    assert d.err(create("/missing/f")) == "NOT_FOUND"
    assert d.err(create("/f/x")) == "FAILED_PRECONDITION"
    assert d.err(create("/f")) == "ALREADY_EXISTS"
    assert d.err(create("/dir")) == "ALREADY_EXISTS"
    assert d.err(create("/dir", overwrite=True)) == "FAILED_PRECONDITION"
    assert d.err(create("/", overwrite=True)) == "FAILED_PRECONDITION"
    assert "ok" in d.run(create("/f", overwrite=True))


@pytest.mark.parametrize("field, value", [
    ("replication", 0), ("replication", 17), ("replication", "3"), ("storage_class", "warm"),
    ("storage_class", 1), ("chunk_size", CS - 1), ("chunk_size", CS + 1), ("chunk_size", 0),
    ("mode", -1), ("mode", 2**32), ("owner", 5), ("owner", "x" * 256), ("overwrite", 1)])
def test_create_rejects_bad_fields(d, field, value):
    command = create("/f")
    command[field] = value
    assert d.err(command) == "INVALID_ARGUMENT"


def test_add_chunk_errors(d):
    ino = d.ok(create("/f"))["inode"]
    assert d.err(add_chunk(999, 0)) == "NOT_FOUND"
    assert d.err(add_chunk(1, 0)) == "FAILED_PRECONDITION"           # the root: not an upload
    assert d.err(add_chunk(ino, 1)) == "FAILED_PRECONDITION"         # past the end
    assert d.err(add_chunk(ino, -1)) == "INVALID_ARGUMENT"
    assert d.err(add_chunk(ino, 0, replicas=["ok", 3])) == "INVALID_ARGUMENT"
    done = d.upload("/g")
    assert d.err(add_chunk(done, 0)) == "FAILED_PRECONDITION"        # committed
    assert d.state.counts()["chunks"] == 1


def test_add_chunk_again_for_an_index_keeps_the_handle_and_bumps_the_version(d):
    ino = d.ok(create("/f", now=10))["inode"]
    assert d.ok(add_chunk(ino, 0, now=20, replicas=["a", "b"])) == {"handle": 1, "version": 1}
    assert d.ok(add_chunk(ino, 1, now=21)) == {"handle": 2, "version": 1}
    assert d.ok(add_chunk(ino, 0, now=22, replicas=["c"])) == {"handle": 1, "version": 2}
    assert d.ok(add_chunk(ino, 0, now=23, replicas=[])) == {"handle": 1, "version": 3}
    assert d.ok(add_chunk(ino, 2, now=24)) == {"handle": 3, "version": 1}    # fresh index: new handle
    chunks = d.state.file_chunks(ino)
    assert [(c["handle"], c["index"], c["version"], c["replicas"]) for c in chunks] == [
        (1, 0, 3, []), (2, 1, 1, ["cs1:7000", "cs2:7000"]), (3, 2, 1, ["cs1:7000", "cs2:7000"])]
    assert d.garbage() == {}                                                  # nothing left behind
    d.ok(commit(ino, 6, [{"handle": 1, "length": 1, "checksum": 5}, {"handle": 2, "length": 2, "checksum": 6},
                         {"handle": 3, "length": 3, "checksum": 7}]))
    assert [c["version"] for c in d.state.stat("/f")["chunks"]] == [3, 1, 1]
    assert d.state.counts()["chunks"] == 3


def test_add_chunk_retry_resets_length_and_checksum(d, state):
    ino = d.ok(create("/f"))["inode"]
    d.ok(add_chunk(ino, 0))
    with state._env.begin(write=True) as txn:                               # as if sealed earlier
        tx = Tx(txn, state._dbs)
        tx.put_chunk(1, dict(tx.chunk(1), length=9, checksum=99))
    assert d.ok(add_chunk(ino, 0, replicas=["x"])) == {"handle": 1, "version": 2}
    assert d.state.file_chunks(ino) == [
        {"handle": 1, "index": 0, "version": 2, "length": 0, "checksum": 0, "replicas": ["x"]}]


def test_add_chunk_at_the_highest_version_is_refused(d, state):
    ino = d.ok(create("/f"))["inode"]
    d.ok(add_chunk(ino, 0))
    with state._env.begin(write=True) as txn:
        tx = Tx(txn, state._dbs)
        tx.put_chunk(1, dict(tx.chunk(1), version=2**64 - 1))
    assert d.err(add_chunk(ino, 0)) == "FAILED_PRECONDITION"
    assert d.state.file_chunks(ino)[0]["version"] == 2**64 - 1


def test_create_and_add_chunk_record_the_last_activity_of_an_upload(d):
    ino = d.ok(create("/f", now=10))["inode"]
    assert d.state.pending_uploads() == [{"inode": ino, "path": "/f", "created": 10, "touched": 10, "chunks": 0}]
    d.ok(add_chunk(ino, 0, now=15))
    d.ok(add_chunk(ino, 0, now=17))                                          # a retry counts too
    d.ok(add_chunk(ino, 1, now=20))
    assert d.state.pending_uploads() == [{"inode": ino, "path": "/f", "created": 10, "touched": 20, "chunks": 2}]
    raw = msgpack.unpackb(dict(d.state.dump()["pending"])[ino.to_bytes(8, "big")])
    assert list(raw) == ["parent", "name", "path", "overwrite", "created", "touched", "creator"]
    assert d.err(add_chunk(ino, 5, now=30)) == "FAILED_PRECONDITION"         # a failure touches nothing
    assert d.state.pending_uploads()[0]["touched"] == 20


def test_commit_errors(d):
    ino = d.ok(create("/f"))["inode"]
    h0 = d.ok(add_chunk(ino, 0))["handle"]
    h1 = d.ok(add_chunk(ino, 1))["handle"]
    good = [{"handle": h0, "length": CS, "checksum": 1}, {"handle": h1, "length": 3, "checksum": 2}]
    assert d.err(commit(999, CS + 3, good)) == "NOT_FOUND"
    assert d.err(commit(1, 0, [])) == "NOT_FOUND"
    assert d.err(commit(ino, CS + 3, good[:1])) == "FAILED_PRECONDITION"         # missing chunk
    assert d.err(commit(ino, CS + 3, good[::-1])) == "FAILED_PRECONDITION"       # wrong order
    assert d.err(commit(ino, CS + 4, good)) == "FAILED_PRECONDITION"             # size mismatch
    too_long = [dict(good[0], length=CS + 1), dict(good[1], length=2)]
    assert d.err(commit(ino, CS + 3, too_long)) == "FAILED_PRECONDITION"         # over chunk_size
    assert d.err(commit(ino, CS + 3, [good[0], dict(good[1], extra=1)])) == "INVALID_ARGUMENT"
    assert d.err(commit(ino, CS + 3, [good[0], {"handle": h1, "length": 3}])) == "INVALID_ARGUMENT"
    assert d.err(commit(ino, CS + 3, [good[0], dict(good[1], checksum=-1)])) == "INVALID_ARGUMENT"
    assert d.err(commit(ino, CS + 3, "chunks")) == "INVALID_ARGUMENT"
    assert d.state.counts()["pending"] == 1
    d.ok(commit(ino, CS + 3, good))
    assert d.err(commit(ino, CS + 3, good)) == "NOT_FOUND"                       # already committed


def test_commit_fails_when_the_target_changed_during_the_upload(d):
    d.ok(mkdir("/d"))
    plain = d.ok(create("/d/a"))["inode"]
    replacing = d.ok(create("/d/b", overwrite=True))["inode"]
    orphan = d.ok(create("/d/c"))["inode"]
    d.upload("/d/a")                                                   # appeared meanwhile
    d.ok(mkdir("/d/b"))                                                # became a directory
    assert d.err(commit(plain, 0, [])) == "ALREADY_EXISTS"
    assert d.err(commit(replacing, 0, [])) == "FAILED_PRECONDITION"
    d.ok(delete("/d", recursive=True))                                 # parent gone
    assert d.err(commit(orphan, 0, [])) == "NOT_FOUND"
    d.ok(abort(orphan))                                                # the client cleans up
    assert d.state.counts()["pending"] == 2


def test_commit_with_overwrite_replaces_the_old_file(d):
    old = d.upload("/f", lengths=(5, ))
    old_handles = d.handles("/f")
    new = d.upload("/f", lengths=(7,), overwrite=True, now=300)
    info = d.state.stat("/f")
    assert (info["inode"], info["size"]) == (new, 7)
    assert d.garbage() == {h: 300 for h in old_handles}
    with pytest.raises(NotFound):
        d.state.file_chunks(old)
    assert d.state.counts()["inodes"] == 2


def test_commit_follows_a_renamed_parent(d):
    d.ok(mkdir("/a"))
    ino = d.ok(create("/a/f"))["inode"]
    d.ok(rename("/a", "/b"))
    d.ok(commit(ino, 0, []))
    assert d.state.stat("/b/f")["inode"] == ino


def test_abort(d):
    ino = d.ok(create("/f"))["inode"]
    handles = [d.ok(add_chunk(ino, i))["handle"] for i in range(2)]
    assert d.ok(abort(ino, now=55)) == {}
    assert d.garbage() == {h: 55 for h in handles}
    assert d.state.counts() == {"inodes": 1, "dirs": 1, "files": 0, "pending": 0, "chunks": 0, "garbage": 2, **NO_TRASH}
    assert d.err(abort(ino)) == "NOT_FOUND"
    assert d.err(abort(1)) == "NOT_FOUND"
    d.upload("/g")
    assert d.err(abort(d.state.stat("/g")["inode"])) == "NOT_FOUND"


# --- rename --------------------------------------------------------------------------------------

def test_rename_file_and_directory(d):
    d.ok(mkdir("/a/b", parents=True))
    d.upload("/a/b/f")
    d.ok(mkdir("/x"))
    assert d.ok(rename("/a/b/f", "/x/g", now=40)) == {}
    assert d.state.stat("/x/g")["type"] == "file"
    assert d.state.stat("/a/b")["mtime"] == 40 and d.state.stat("/x")["mtime"] == 40
    d.ok(rename("/x", "/a/b/y"))
    assert d.state.stat("/a/b/y/g")["type"] == "file"
    assert d.names("/") == ["a"]
    d.ok(rename("/a/b/y/g", "/a/b/y/h"))                               # same directory
    assert d.names("/a/b/y") == ["h"]
    assert d.ok(rename("/a", "/a")) == {}                              # onto itself: nothing to do


def test_rename_errors(d):
    d.ok(mkdir("/a/b", parents=True))
    d.ok(mkdir("/e"))
    d.upload("/f")
    d.upload("/g")
    assert d.err(rename("/nope", "/x")) == "NOT_FOUND"
    assert d.err(rename("/f", "/nope/x")) == "NOT_FOUND"
    assert d.err(rename("/f", "/g/x")) == "FAILED_PRECONDITION"        # dst parent is a file
    assert d.err(rename("/f", "/g")) == "ALREADY_EXISTS"
    assert d.err(rename("/f", "/e")) == "ALREADY_EXISTS"
    assert d.err(rename("/f", "/e", overwrite=True)) == "FAILED_PRECONDITION"   # over a dir
    assert d.err(rename("/e", "/f", overwrite=True)) == "FAILED_PRECONDITION"   # dir over a file
    assert d.err(rename("/e", "/a", overwrite=True)) == "FAILED_PRECONDITION"
    assert d.err(rename("/", "/x")) == "INVALID_ARGUMENT"
    assert d.err(rename("/f", "/")) == "INVALID_ARGUMENT"
    assert d.err(rename("/f", "/x/")) == "INVALID_ARGUMENT"
    assert d.names("/") == ["a", "e", "f", "g"]


@pytest.mark.parametrize("dst", ["/a/b", "/a/b/c", "/a/new"])
def test_rename_of_a_directory_into_its_own_subtree_is_invalid(d, dst):
    d.ok(mkdir("/a/b", parents=True))
    assert d.err(rename("/a", dst)) == "INVALID_ARGUMENT"
    assert d.err(rename("/a", dst, overwrite=True)) == "INVALID_ARGUMENT"
    assert d.names("/a") == ["b"]


def test_rename_with_overwrite_garbages_the_replaced_file(d):
    d.upload("/f", lengths=(1,))
    d.upload("/g", lengths=(2, ))
    replaced = d.handles("/g")
    d.ok(rename("/f", "/g", overwrite=True, now=77))
    assert d.state.stat("/g")["size"] == 1
    assert d.names("/") == ["g"]
    assert d.garbage() == {h: 77 for h in replaced}


# --- delete --------------------------------------------------------------------------------------

def test_delete(d):
    d.upload("/f", lengths=(1, ))
    handles = d.handles("/f")
    d.ok(mkdir("/e"))
    assert d.ok(delete("/f", now=60)) == {"deleted": 1, "trash_id": 0}
    assert d.garbage() == {h: 60 for h in handles}
    assert d.ok(delete("/e", now=61)) == {"deleted": 1, "trash_id": 0}
    assert d.state.stat("/")["mtime"] == 61
    assert d.names("/") == []


def test_delete_recursive(d):
    d.ok(mkdir("/a/b/c", parents=True))
    d.upload("/a/f1", lengths=(CS, 1))
    d.upload("/a/b/c/f2")
    handles = d.handles("/a/f1") + d.handles("/a/b/c/f2")
    assert d.err(delete("/a")) == "FAILED_PRECONDITION"
    assert d.ok(delete("/a", recursive=True, now=70)) == {"deleted": 5, "trash_id": 0}
    assert d.garbage() == {h: 70 for h in handles}
    assert d.state.counts() == {"inodes": 1, "dirs": 1, "files": 0, "pending": 0, "chunks": 0, "garbage": 3, **NO_TRASH}
    assert d.state.dump()["dirents"] == []


def test_delete_errors(d):
    d.upload("/f")
    assert d.err(delete("/nope")) == "NOT_FOUND"
    assert d.err(delete("/f/x")) == "FAILED_PRECONDITION"
    assert d.err(delete("/")) == "INVALID_ARGUMENT"
    assert d.err(delete("/", recursive=True)) == "INVALID_ARGUMENT"
    assert d.ok(delete("/f", recursive=True)) == {"deleted": 1, "trash_id": 0}


def test_barrier(d):
    assert d.ok(barrier()) == {}
    assert d.state.applied_index() == 1


# --- set_replicas, expire_uploads, forget_garbage (leader housekeeping) -----------------------------

def test_set_replicas_updates_only_the_current_version(d):
    ino = d.ok(create("/f"))["inode"]
    d.ok(add_chunk(ino, 0))
    assert d.ok(set_replicas(1, 1, ["x:1", "y:1"])) == {"updated": True}           # pending upload's chunk
    assert d.state.file_chunks(ino)[0]["replicas"] == ["x:1", "y:1"]
    d.ok(add_chunk(ino, 0, replicas=["z:1"]))                                       # now version 2
    assert d.ok(set_replicas(1, 1, ["old:1"])) == {"updated": False}                # a stale plan
    assert d.ok(set_replicas(1, 3)) == {"updated": False}
    assert d.ok(set_replicas(99, 1)) == {"updated": False}                          # no such chunk
    assert d.state.file_chunks(ino)[0]["replicas"] == ["z:1"]
    d.ok(commit(ino, 1, [{"handle": 1, "length": 1, "checksum": 3}]))
    assert d.ok(set_replicas(1, 2, [])) == {"updated": True}
    chunk = d.state.stat("/f")["chunks"][0]
    assert (chunk["version"], chunk["length"], chunk["checksum"], chunk["replicas"]) == (2, 1, 3, [])
    d.ok(delete("/f"))                                                              # deleted meanwhile
    assert d.ok(set_replicas(1, 2)) == {"updated": False}
    assert 1 in d.garbage()


def test_expire_uploads(d):
    old = d.ok(create("/old", now=10))["inode"]
    d.ok(add_chunk(old, 0, now=20))
    d.ok(add_chunk(old, 1, now=30))
    young = d.ok(create("/young", now=10))["inode"]
    d.ok(add_chunk(young, 0, now=50))
    idle = d.ok(create("/idle", now=40))["inode"]
    done = d.upload("/done", now=5)
    d.ok(mkdir("/dir"))
    result = d.ok(expire_uploads([young, idle, 999, done, 1, old, old], before=40, now=1000))
    assert result == {"expired": [idle, old]}                # listed order; touched == before counts
    assert d.garbage() == {1: 30, 2: 30}                     # stamped with the last activity, not now
    assert [u["inode"] for u in d.state.pending_uploads()] == [young]
    assert d.state.stat("/done")["inode"] == done and d.state.stat("/dir")["type"] == "dir"
    assert d.err(commit(old, 0, [])) == "NOT_FOUND"
    assert d.ok(expire_uploads([], before=2**64 - 1)) == {"expired": []}
    assert d.ok(expire_uploads([young], before=49)) == {"expired": []}


def test_expire_uploads_falls_back_to_created_for_old_records(d, state):
    ino = d.ok(create("/f", now=10))["inode"]
    with state._env.begin(write=True) as txn:               # a record written before `touched`
        tx = Tx(txn, state._dbs)
        pending = tx.pending(ino)
        del pending["touched"]
        tx.put_pending(ino, pending)
    assert d.state.pending_uploads() == [{"inode": ino, "path": "/f", "created": 10, "touched": 10, "chunks": 0}]
    assert d.ok(expire_uploads([ino], before=9)) == {"expired": []}
    assert d.ok(expire_uploads([ino], before=10)) == {"expired": [ino]}
    assert d.state.counts()["pending"] == 0


def test_forget_garbage(d):
    d.upload("/f", lengths=(1, 2, 3))
    d.upload("/keep")
    d.ok(delete("/f", now=7))
    assert d.garbage() == {1: 7, 2: 7, 3: 7}
    assert d.ok(forget_garbage([1, 3, 3, 4, 99])) == {"forgotten": 2}      # 4 is referenced, 99 unknown
    assert d.garbage() == {2: 7}
    assert d.state.stat("/keep")["chunks"][0]["handle"] == 4
    assert d.ok(forget_garbage([])) == {"forgotten": 0}
    assert d.state.unreferenced([1, 2, 4]) == {1: None, 2: 7}


# --- trash -------------------------------------------------------------------------------------------

def _tree(d):
    """/d/{f1 (3 bytes, 2 chunks), e/{f2 (5 bytes)}, empty/} and /other."""
    d.ok(mkdir("/d/e", parents=True, now=1))
    d.ok(mkdir("/d/empty", now=1))
    d.upload("/d/f1", lengths=(1, 2), now=2)
    d.upload("/d/e/f2", lengths=(5,), now=3)
    d.ok(mkdir("/other", now=4))


def test_delete_to_trash_keeps_the_subtree(d):
    _tree(d)
    handles = d.handles("/d/f1") + d.handles("/d/e/f2")
    before = d.state.dump()
    ino = d.state.stat("/d")["inode"]
    assert d.err(trash("/d", recursive=False)) == "FAILED_PRECONDITION"   # non-empty, not recursive
    assert d.err(trash("/", now=50)) == "INVALID_ARGUMENT"
    assert d.err(trash("/nope")) == "NOT_FOUND"
    assert d.ok(trash("/d", user="alice", now=50)) == {"deleted": 5, "trash_id": 1}
    assert d.names("/") == ["other"]
    assert d.state.stat("/")["mtime"] == 50
    assert d.garbage() == {}
    assert d.state.counts() == {"inodes": 7, "dirs": 5, "files": 2, "pending": 0, "chunks": 3, "garbage": 0,
                                "trash": 1, "trash_bytes": 8}
    entry = {"id": 1, "user": "alice", "path": "/d", "inode": ino, "type": "dir", "size": 8, "files": 2,
             "deleted": 50}
    assert d.state.trash_list("alice") == [entry]
    assert list(msgpack.unpackb(d.state.dump()["trash"][0][1])) == list(entry)     # stored key order
    after = d.state.dump()
    trashed = {k: msgpack.unpackb(v) for k, v in after["inodes"][1:]}
    kept = {k: msgpack.unpackb(v) for k, v in before["inodes"][1:]}
    top = ino.to_bytes(8, "big")
    assert "parent" not in trashed[top] and kept[top].pop("parent") == 1  # hangs below nothing
    assert trashed == kept                  # otherwise only the root's mtime changed
    assert after["chunks"] == before["chunks"]
    assert {row["handle"] for row in d.state.chunk_table()} == set(handles)


def test_delete_to_trash_of_a_file_and_of_an_empty_directory(d):
    _tree(d)
    assert d.ok(trash("/d/f1", user="bob", recursive=False, now=60)) == {"deleted": 1, "trash_id": 1}
    assert d.ok(trash("/d/empty", recursive=False, now=61)) == {"deleted": 1, "trash_id": 2}
    assert d.ok(delete("/d/e/f2", trash=True, now=62)) == {"deleted": 1, "trash_id": 3}      # no user
    assert d.ok(delete("/other", trash=False, user="bob")) == {"deleted": 1, "trash_id": 0}   # permanent
    assert d.state.stat("/d")["mtime"] == 61
    assert [(e["id"], e["user"], e["path"], e["type"], e["size"], e["files"]) for e in d.state.trash_list(None)] == [
        (1, "bob", "/d/f1", "file", 3, 1), (2, "alice", "/d/empty", "dir", 0, 0), (3, "", "/d/e/f2", "file", 5, 1)]
    assert [e["id"] for e in d.state.trash_list("")] == [3]
    assert d.state.trash_list("carol") == []


def test_trash_list_is_ordered_by_deletion_time_then_id(d):
    for name in "abcd":
        d.ok(mkdir("/" + name))
    d.ok(trash("/a", now=30))
    d.ok(trash("/b", now=10))                       # the leader's clock may step back
    d.ok(trash("/c", now=30))
    d.ok(trash("/d", user="bob", now=20))
    assert [e["id"] for e in d.state.trash_list(None)] == [2, 4, 1, 3]
    assert [e["id"] for e in d.state.trash_list("alice")] == [2, 1, 3]
    for bad in (5, b"alice", "x" * 256):
        with pytest.raises(InvalidArgument):
            d.state.trash_list(bad)


def test_restore_to_the_original_path(d):
    _tree(d)
    listing = d.state.list("/d")
    d.ok(trash("/d", now=50))
    d.ok(trash("/other", now=51))
    assert d.ok(restore(1, now=60)) == {"path": "/d", "inode": 2}
    assert d.state.list("/d") == listing
    assert d.state.stat("/")["mtime"] == 60
    assert [e["id"] for e in d.state.trash_list(None)] == [2]
    assert d.state.counts()["trash"] == 1
    assert d.err(restore(1)) == "NOT_FOUND"                                 # already restored


def test_restore_to_another_path_creates_missing_parents(d):
    _tree(d)
    f1 = d.state.stat("/d/f1")
    d.ok(trash("/d/f1", now=50))
    assert d.ok(restore(1, dst="/new/deep/g", now=70)) == {"path": "/new/deep/g", "inode": f1["inode"]}
    for path in ("/new", "/new/deep"):
        info = d.state.stat(path)
        assert (info["type"], info["mode"], info["owner"], info["ctime"]) == ("dir", 0o750, "bob", 70)
    restored = d.state.stat("/new/deep/g")
    assert dict(restored, path="/d/f1") == f1                               # the same file, untouched
    assert d.names("/d") == ["e", "empty"]


def test_restore_when_the_original_parent_is_gone(d):
    _tree(d)
    d.ok(trash("/d/e/f2", now=50))
    d.ok(delete("/d", recursive=True, now=51))
    assert d.ok(restore(1, now=52))["path"] == "/d/e/f2"
    assert d.state.stat("/d/e")["owner"] == "bob"                           # recreated with mode/owner
    assert d.state.stat("/d/e/f2")["size"] == 5


def test_restore_errors(d):
    _tree(d)
    d.ok(trash("/d/f1", user="alice", now=50))
    d.ok(trash("/d/empty", user="", now=51))
    d.upload("/d/f1")                                                       # the old path is taken
    result = d.run(restore(1))
    assert result["err"][0] == "ALREADY_EXISTS"
    assert "/d/f1 already exists" in result["err"][1] and "another path" in result["err"][1]
    assert d.err(restore(1, dst="/other")) == "ALREADY_EXISTS"              # a directory is there
    assert d.err(restore(1, dst="/")) == "ALREADY_EXISTS"
    assert d.err(restore(1, dst="/d/f1/x")) == "FAILED_PRECONDITION"        # through a file
    assert d.err(restore(1, dst="/d/f1/x/y")) == "FAILED_PRECONDITION"
    assert d.run(restore(1, user="bob")) == {"err": ["NOT_FOUND", "no trash entry 1 for user 'bob'"]}
    assert d.run(restore(2, user="alice")) == {"err": ["NOT_FOUND", "no trash entry 2 for user 'alice'"]}
    assert d.run(restore(9, user="")) == {"err": ["NOT_FOUND", "no trash entry 9 for user (anonymous)"]}
    assert d.names("/") == ["d", "other"]
    assert len(d.state.trash_list(None)) == 2
    assert d.ok(restore(1, dst="/d/f1.restored"))["path"] == "/d/f1.restored"
    assert d.ok(restore(2, user=""))["path"] == "/d/empty"


def test_purge(d):
    _tree(d)
    handles = d.handles("/d/f1") + d.handles("/d/e/f2")
    d.ok(trash("/d", user="alice", now=50))
    d.ok(mkdir("/x"))
    d.ok(trash("/x", user="bob", now=60))
    d.ok(mkdir("/y"))
    d.ok(trash("/y", user="alice", now=70))
    assert d.ok(purge(user="alice", before=49)) == {"purged": 0}
    assert d.ok(purge(user="carol")) == {"purged": 0}
    assert d.ok(purge(user="alice", before=65, now=80)) == {"purged": 1}       # only /d (deleted <= 65)
    assert d.garbage() == {h: 80 for h in handles}
    assert d.state.counts() == {"inodes": 4, "dirs": 4, "files": 0, "pending": 0, "chunks": 0,
                                "garbage": 3, "trash": 2, "trash_bytes": 0}
    assert [e["id"] for e in d.state.trash_list(None)] == [2, 3]
    assert d.ok(purge(user="alice", now=90)) == {"purged": 1}                  # no age filter
    assert d.ok(purge(user="alice", all_users=True)) == {"purged": 1}
    assert d.state.trash_list(None) == []
    assert d.state.counts()["inodes"] == 2
    assert d.err(restore(1)) == "NOT_FOUND"


def test_purge_by_ids(d):
    for name in "abcd":
        d.upload("/" + name, lengths=(1,))
    d.ok(trash("/a", user="alice", now=10))
    d.ok(trash("/b", user="bob", now=20))
    d.ok(trash("/c", user="alice", now=30))
    d.ok(trash("/d", user="alice", now=40))
    assert d.ok(purge(user="alice", ids=[2, 99])) == {"purged": 0}           # bob's, and a missing id
    assert d.ok(purge(user="alice", ids=[3, 1, 3, 4], before=30, now=50)) == {"purged": 2}
    assert d.garbage() == {1: 50, 3: 50}
    assert [e["id"] for e in d.state.trash_list(None)] == [2, 4]
    assert d.ok(purge(user="alice", all_users=True, ids=[2])) == {"purged": 1}
    assert [e["id"] for e in d.state.trash_list(None)] == [4]


def test_trash_ids_are_never_reused(d):
    d.ok(mkdir("/a"))
    assert d.ok(trash("/a"))["trash_id"] == 1
    d.ok(restore(1))
    assert d.ok(trash("/a"))["trash_id"] == 2
    d.ok(purge())
    d.ok(mkdir("/a"))
    assert d.ok(trash("/a"))["trash_id"] == 3


def test_an_upload_into_a_trashed_directory_commits_there(d):
    d.ok(mkdir("/d"))
    ino = d.ok(create("/d/f", now=10))["inode"]
    handle = d.ok(add_chunk(ino, 0))["handle"]
    d.ok(trash("/d", now=20))
    d.ok(commit(ino, 4, [{"handle": handle, "length": 4, "checksum": 1}], now=30))
    with pytest.raises(NotFound):
        d.state.stat("/d/f")
    assert d.state.trash_list(None)[0]["size"] == 0                      # as of the deletion
    assert [(r["handle"], r["committed"]) for r in d.state.chunk_table()] == [(handle, True)]
    d.ok(restore(1, now=40))
    assert d.state.stat("/d/f")["size"] == 4


def test_a_purge_removes_uploads_committed_into_the_trash_and_fails_later_commits(d):
    d.ok(mkdir("/d"))
    early = d.ok(create("/d/early"))["inode"]
    late = d.ok(create("/d/late"))["inode"]
    handles = [d.ok(add_chunk(ino, 0))["handle"] for ino in (early, late)]
    d.ok(trash("/d", now=20))
    d.ok(commit(early, 1, [{"handle": handles[0], "length": 1, "checksum": 1}]))
    assert d.ok(purge(now=30)) == {"purged": 1}
    assert d.garbage() == {handles[0]: 30}
    assert d.err(commit(late, 1, [{"handle": handles[1], "length": 1, "checksum": 1}])) == "NOT_FOUND"
    d.ok(abort(late, now=40))
    assert d.garbage() == {handles[0]: 30, handles[1]: 40}
    assert d.state.counts() == {"inodes": 1, "dirs": 1, "files": 0, "pending": 0, "chunks": 0, "garbage": 2,
                                **NO_TRASH}


def test_a_store_written_without_a_trash_gets_one_on_open(tmp_path):
    import lmdb
    path = str(tmp_path / "meta")
    with MetadataState(path, map_size=1 << 26) as s:
        s.apply(1, mkdir("/a"))
    env = lmdb.open(path, max_dbs=16, map_size=1 << 26)                     # make it look old
    with env.begin(write=True) as txn:
        txn.drop(env.open_db(b"trash", txn=txn), delete=True)
        txn.delete(b"next_trash", db=env.open_db(b"meta", txn=txn))
    with env.begin() as txn:
        assert txn.get(b"trash") is None
    env.close()
    with MetadataState(path, map_size=1 << 26) as s:
        assert s.dump()["trash"] == []
        assert s.apply(2, trash("/a")) == {"ok": {"deleted": 1, "trash_id": 1}}
        assert s.counts()["trash"] == 1


def test_a_store_of_layout_2_forgets_the_parents_of_its_trashed_trees_on_open(tmp_path):
    """Code before layout 3 kept a trashed tree's parent link, and what was committed in the
    trash later was counted in that parent: opening such a store lays the counts out again."""
    from master import usage
    path = str(tmp_path / "meta")
    with MetadataState(path, map_size=1 << 26) as s:
        d = Driver(s)
        _tree(d)
        top = s.stat("/d")["inode"]
        d.ok(trash("/d", now=50))
        with s._env.begin(write=True) as txn:           # what layout-2 code left behind
            tx = Tx(txn, s._dbs)
            record = tx.inode(top)
            record["parent"] = 1
            tx.put_inode(top, record)
            root = tx.inode(1)
            root["du"] = [99, 9]
            tx.put_inode(1, root)
            tx.set_counter(usage.LAYOUT, 2)
        usage_before = s.dump()["usage"]
    with MetadataState(path, map_size=1 << 26) as s:
        with s._env.begin() as txn:
            tx = Tx(txn, s._dbs)
            assert "parent" not in tx.inode(top)
            assert tx.inode(top)["du"] == [8, 2]        # the trashed tree keeps its own counts
            assert tx.inode(1)["du"] == [0, 0]          # /other is empty; /d is in the trash
            assert tx.counter(usage.LAYOUT) == usage.CURRENT_LAYOUT == 3
        assert s.dump()["usage"] == usage_before        # its owner still pays for the trash


# --- read methods for the repair loop ------------------------------------------------------------------

def test_chunk_table(d):
    d.upload("/f", lengths=(3, 4))
    ino = d.ok(create("/p", now=5))["inode"]
    d.ok(add_chunk(ino, 0, replicas=["a"]))
    d.ok(add_chunk(ino, 0, replicas=["b"]))
    d.upload("/t", lengths=(1,))
    d.ok(trash("/t"))
    replicas = ["cs1:7000", "cs2:7000"]
    table = d.state.chunk_table()
    files = {row["inode"]: d.state.inode_record(row["inode"]) for row in table}
    for row in table:
        assert row.pop("storage_class") == files[row["inode"]]["storage_class"]
        assert row.pop("atime") == files[row["inode"]]["mtime"]
    assert table == [
        {"handle": 1, "version": 1, "length": 3, "checksum": 1000, "replicas": replicas, "inode": 2,
         "replication": 3, "committed": True},
        {"handle": 2, "version": 1, "length": 4, "checksum": 1001, "replicas": replicas, "inode": 2,
         "replication": 3, "committed": True},
        {"handle": 3, "version": 2, "length": 0, "checksum": 0, "replicas": ["b"], "inode": ino,
         "replication": 3, "committed": False},
        {"handle": 4, "version": 1, "length": 1, "checksum": 1000, "replicas": replicas, "inode": 4,
         "replication": 3, "committed": True}]
    d.ok(purge())
    assert [row["handle"] for row in d.state.chunk_table()] == [1, 2, 3]


def test_pending_uploads(d):
    d.ok(mkdir("/d"))
    a = d.ok(create("/d/a", now=5))["inode"]
    b = d.ok(create("/b", now=6))["inode"]
    d.ok(add_chunk(b, 0, now=9))
    d.upload("/c")
    d.ok(rename("/d", "/e"))                                   # the recorded path is informational
    assert d.state.pending_uploads() == [
        {"inode": a, "path": "/d/a", "created": 5, "touched": 5, "chunks": 0},
        {"inode": b, "path": "/b", "created": 6, "touched": 9, "chunks": 1}]


def test_repair_reads_are_fast_for_100k_chunks(state, monkeypatch):
    """One inode read per file, not per chunk (what keeps the leader loops' pass cheap);
    pending uploads read only the pending files. Work is counted, not timed: a wall-clock
    bound is noise on a shared machine (bench/ measures)."""
    files, per_file = 1000, 100
    with state._env.begin(write=True) as txn:
        tx = Tx(txn, state._dbs)
        handle = 1
        for ino in range(2, 2 + files):
            pending = ino % 10 == 0
            record = ns.inode_record("file", 0o644, "u", 1, 3, "hot", CS,
                                                "pending" if pending else "committed")
            record["chunks"] = list(range(handle, handle + per_file))
            tx.put_inode(ino, record)
            if pending:
                tx.put_pending(ino, {"parent": 1, "name": str(ino), "path": f"/{ino}", "overwrite": False,
                                     "created": 1, "touched": 2})
            for index in range(per_file):
                tx.put_chunk(handle, {"inode": ino, "index": index, "version": 1, "length": CS,
                                      "checksum": handle, "replicas": ["cs1:7000", "cs2:7000", "cs3:7000"]})
                handle += 1
    reads = []
    inode = Tx.inode
    monkeypatch.setattr(Tx, "inode", lambda self, ino: reads.append(ino) or inode(self, ino))
    table = state.chunk_table()
    assert len(table) == files * per_file
    assert len(reads) == files                          # each file's inode once
    assert sum(1 for row in table if not row["committed"]) == files // 10 * per_file
    assert table[-1] == {"handle": files * per_file, "version": 1, "length": CS, "checksum": files * per_file,
                         "replicas": ["cs1:7000", "cs2:7000", "cs3:7000"], "inode": files + 1,
                         "replication": 3, "committed": True, "storage_class": "hot",
                         "atime": table[-1]["atime"]}
    reads.clear()
    assert len(state.pending_uploads()) == files // 10
    assert len(reads) == files // 10                    # the pending files' inodes only


def test_snapshot_copy_includes_the_trash(tmp_path):
    with MetadataState(str(tmp_path / "src"), map_size=1 << 26) as s:
        driver = Driver(s)
        driver.upload("/f", lengths=(2,))
        driver.ok(trash("/f", user="bob", now=9))
        dump = s.dump()
        mdb = _copy(s, tmp_path / "copy.mdb")
    MetadataState.install_copy(mdb, str(tmp_path / "dst"))
    with MetadataState(str(tmp_path / "dst"), map_size=1 << 26) as r:
        assert r.dump() == dump
        assert r.trash_list("bob")[0]["size"] == 2
        driver = Driver(r)
        assert driver.ok(restore(1, user="bob", dst="/g")) == {"path": "/g", "inode": 2}
        assert driver.ok(mkdir("/h"))["inode"] == 3
        assert driver.ok(trash("/h"))["trash_id"] == 2                          # the counter came along


# --- reads ---------------------------------------------------------------------------------------

def test_list_is_sorted_by_name_and_pages(d):
    names = ["b", "a", "B", "é", "z", "a b", "ab"]
    for name in names:
        d.ok(mkdir("/" + name))
    assert d.names("/") == sorted(names)
    pages, token = [], ""
    while True:
        entries, token = d.state.list("/", start_after=token, limit=3)
        pages.append([os.path.basename(e["path"]) for e in entries])
        if not token:
            break
    assert pages == [sorted(names)[0:3], sorted(names)[3:6], sorted(names)[6:]]
    entries, token = d.state.list("/", limit=len(names))
    assert len(entries) == len(names) and token == ""
    assert [e["path"] for e in d.state.list("/", start_after="ab")[0]] == ["/b", "/z", "/é"]
    assert d.state.list("/", start_after="aa")[0][0]["path"] == "/ab"


def test_list_entries_are_stat_results(d):
    d.ok(mkdir("/d"))
    d.upload("/d/f", lengths=(3,))
    entries, token = d.state.list("/d")
    assert entries == [d.state.stat("/d/f")] and token == ""
    assert d.state.list("/d/f") == ([d.state.stat("/d/f")], "")      # a file lists as itself


def test_a_brief_list_leaves_out_only_the_chunk_lists(d):
    d.ok(mkdir("/d"))
    d.upload("/d/f", lengths=(3, 4))
    d.ok(mkdir("/d/sub"))
    full, _ = d.state.list("/d")
    brief, _ = d.state.list("/d", brief=True)
    assert len(full[0]["chunks"]) == 2 and brief[0]["chunks"] == []
    assert [{**e, "chunks": []} for e in full] == brief
    assert d.state.list("/d/f", brief=True)[0][0]["chunks"] == []    # a file listed as itself


@pytest.mark.parametrize("args, error", [
    (("/missing",), NotFound), (("rel",), InvalidArgument), (("/f/x",), FailedPrecondition),
    (("/", "", 0), InvalidArgument), (("/", "", "10"), InvalidArgument), (("/", 5), InvalidArgument)])
def test_list_errors(d, args, error):
    d.upload("/f")
    with pytest.raises(error):
        d.state.list(*args)


def test_file_chunks_errors(state):
    with pytest.raises(NotFound):
        state.file_chunks(42)
    with pytest.raises(InvalidArgument):
        state.file_chunks("1")
    assert state.file_chunks(1) == []


# --- malformed commands ----------------------------------------------------------------------------

BAD_COMMANDS = [
    "not a map", 7, None, [], {}, {"now": 1}, {"op": "frobnicate", "now": 1}, {"op": 3, "now": 1},
    {"op": "barrier"}, {"op": "barrier", "now": -1}, {"op": "barrier", "now": True},
    {"op": "barrier", "now": 2**64}, {"op": "barrier", "now": 1.5},
    barrier(unexpected=1), {**barrier(), b"bytes-key": 1}, {**barrier(), 3: 1}, barrier(**{"": 1}),
    mkdir("/a", color="red"), {k: v for k, v in mkdir("/a").items() if k != "owner"},
    mkdir("/a", parents=1), mkdir("/a", parents=None), mkdir("a"), mkdir(""), mkdir("/a/"),
    mkdir("/a/../b"), mkdir("/a\0"), mkdir(b"/a"), mkdir("/" + "x" * 256), mkdir("/\udcff"),
    mkdir("/a", owner="\udcff"),
    barrier(**session(1, 0, client=b"short")), barrier(**session(1, 0, client="c" * 16)),
    barrier(**session(0, 0)), barrier(**session(1, 1)), barrier(**session(2, 5)),
    barrier(**session(1, -1)), barrier(client_id=CLIENT, seq=1),
    add_chunk(0, 0), add_chunk(True, 0), {**add_chunk(2, 0), "replicas": "cs1"}, add_chunk(2, 2**64),
    commit(2, 0, [{"handle": 0, "length": 0, "checksum": 0}]), commit(2, 0, [[1, 0, 0]]),
    abort("2"), rename("/a", 5), delete("/a", recursive="yes"),
    delete("/a", trash=1), delete("/a", trash=None), delete("/a", trash=True, user=7),
    delete("/a", trash=True, user="x" * 256), delete("/a", user="\udcff"), delete("/a", trashed=True),
    set_replicas(0, 1), set_replicas(1, 0), set_replicas(-1, 1), set_replicas(True, 1), set_replicas("1", 1),
    {**set_replicas(1, 1), "replicas": "cs1"}, set_replicas(1, 1, [3]), set_replicas(1, 1, ["x" * 256]),
    {k: v for k, v in set_replicas(1, 1).items() if k != "version"}, set_replicas(1, 2**64),
    expire_uploads([0], 5), expire_uploads(["2"], 5), expire_uploads([2], -1), expire_uploads([2], None),
    {**expire_uploads([2], 5), "inodes": 2}, {k: v for k, v in expire_uploads([2], 5).items() if k != "before"},
    forget_garbage([0]), forget_garbage([1, -3]), forget_garbage([1.0]), {**forget_garbage([]), "handles": 1},
    {"op": "forget_garbage", "now": 1},
    restore(0), restore(1, user=5), restore(1, user=None), restore(1, dst="rel"), restore(1, dst="/a/"),
    restore(1, dst=None), restore(1, dst=b"/a"), restore(1, mode=-1), restore(1, mode=2**32),
    {k: v for k, v in restore(1).items() if k != "owner"}, {k: v for k, v in restore(1).items() if k != "dst"},
    restore(1, owner=["x"]),
    purge(user=None), purge(all_users="yes"), purge(ids=[0]), {**purge(), "ids": 5}, purge(ids=["1"]), purge(before=-1),
    purge(before=2**64), {k: v for k, v in purge().items() if k != "ids"},
    {k: v for k, v in purge().items() if k != "user"},
]


@pytest.mark.parametrize("command", BAD_COMMANDS, ids=range(len(BAD_COMMANDS)))
def test_malformed_commands_are_invalid_argument(d, command):
    before = d.state.dump()
    assert d.err(command) == "INVALID_ARGUMENT"
    after = d.state.dump()
    assert after.pop("meta") != before.pop("meta")                   # only applied_index moved
    assert after == before


def test_unknown_fields_are_invalid_argument_for_every_op(d):
    ino = d.ok(create("/f"))["inode"]
    for command in (mkdir("/a"), create("/g"), add_chunk(ino, 0), commit(ino, 0, []), abort(ino),
                    rename("/f", "/h"), delete("/f"), trash("/f"), set_replicas(1, 1), expire_uploads([ino], 0),
                    forget_garbage([1]), restore(1), purge(), barrier()):
        assert d.err(dict(command, surprise=True)) == "INVALID_ARGUMENT"
    assert d.state.counts() == {"inodes": 2, "dirs": 1, "files": 0, "pending": 1, "chunks": 0, "garbage": 0, **NO_TRASH}


_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**65, max_value=2**65) | st.text(max_size=8)
    | st.binary(max_size=20) | st.sampled_from(["/", "/a", "/a/b", "a", "hot", "mkdir"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)
_fields = st.sampled_from(["op", "now", "path", "parents", "mode", "owner", "replication",
                           "storage_class", "chunk_size", "overwrite", "inode", "index", "replicas",
                           "size", "chunks", "src", "dst", "recursive", "client_id", "seq", "ack_seq",
                           "trash", "user", "id", "all_users", "ids", "before", "handles", "handle",
                           "version", "inodes"])
_commands = st.fixed_dictionaries(
    {"op": st.sampled_from(sorted(state_module._OPS) + ["nope"]), "now": st.integers(0, 10)}
) | st.dictionaries(_fields, _values, max_size=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(commands=st.lists(_commands | _values, min_size=1, max_size=4))
def test_apply_never_raises_on_arbitrary_input(d, commands):
    for result in d.batch(commands):
        assert list(result) in (["ok"], ["err"])
        if "err" in result:
            assert result["err"][0] in ("INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "FAILED_PRECONDITION")


# --- batches, nested transactions, log indexes ---------------------------------------------------------

def test_a_failing_command_leaves_no_partial_writes(d, monkeypatch):
    def half_done(tx, args):
        ns.new_dir(tx, 1, "half", args)          # writes, then fails
        tx.discard_chunks([12345], args["now"])
        raise FailedPrecondition("gave up half way")
    half_schema = {"mode": state_module.MODE, "owner": state_module.text}
    monkeypatch.setitem(state_module._OPS, "half_done", state_module._Op(half_schema, half_done))
    half = {"op": "half_done", "now": 5, "mode": 0o755, "owner": "x"}
    results = d.batch([mkdir("/a", now=1), half, mkdir("/b", now=2), mkdir("/a")])
    assert results == [{"ok": {"inode": 2}}, {"err": ["FAILED_PRECONDITION", "gave up half way"]},
                       {"ok": {"inode": 3}}, results[3]]
    assert results[3]["err"][0] == "ALREADY_EXISTS"
    assert d.names("/") == ["a", "b"]                 # no "half", and inode 3 was not consumed
    assert d.garbage() == {}
    assert d.state.stat("/")["mtime"] == 2


def test_an_entry_at_or_below_applied_index_is_skipped(d):
    assert d.state.apply_batch(5, [mkdir("/a")]) == [{"ok": {"inode": 2}}]
    before = d.state.dump()
    assert d.state.apply_batch(5, [mkdir("/b")]) is None
    assert d.state.apply_batch(3, [mkdir("/c")]) is None
    assert d.state.apply(4, mkdir("/d")) is None
    assert d.state.dump() == before
    assert d.state.applied_index() == 5
    assert d.state.apply(9, mkdir("/e")) == {"ok": {"inode": 3}}     # gaps are fine
    assert d.state.apply_batch(10, []) == []
    assert d.state.applied_index() == 10


@pytest.mark.parametrize("index", [0, -1, "3", 1.0, True])
def test_a_bad_index_is_a_programming_error(state, index):
    with pytest.raises(ValueError):
        state.apply_batch(index, [])


def test_applied_index_and_data_survive_close_and_reopen(tmp_path):
    path = str(tmp_path / "meta")
    with MetadataState(path, map_size=1 << 26) as s:
        s.apply_batch(1, [mkdir("/a", now=3)])
        s.apply_batch(2, [barrier()])
        dump = s.dump()
    with MetadataState(path, map_size=1 << 26) as s:
        assert s.applied_index() == 2
        assert s.dump() == dump
        assert s.stat("/a")["ctime"] == 3
        assert s.apply_batch(2, [mkdir("/b")]) is None
        assert s.apply(3, mkdir("/b")) == {"ok": {"inode": 3}}


def test_deferred_entries_reach_readers_when_committed(tmp_path):
    """apply_deferred: results at once, later entries see earlier ones, readers (read
    transactions) only what commit_applied committed — all of it with one commit."""
    with MetadataState(str(tmp_path / "meta"), map_size=1 << 26) as s:
        assert s.apply_deferred(1, [mkdir("/a")]) == [{"ok": {"inode": 2}}]
        assert s.apply_deferred(2, [mkdir("/a/b")]) == [{"ok": {"inode": 3}}]
        assert s.apply_deferred(2, [mkdir("/c")]) is None          # already applied (open)
        assert (s.applied_through, s.committed_index, s.open_entries) == (2, 0, 2)
        assert s.applied_index() == 0
        with pytest.raises(NotFound):
            s.stat("/a")
        assert s.commit_applied() is True
        assert (s.applied_through, s.committed_index, s.open_entries) == (2, 2, 0)
        assert s.stat("/a/b")["type"] == "dir" and s.applied_index() == 2
        assert s.commit_applied() is False
        assert s.apply_batch(3, [mkdir("/d")]) == [{"ok": {"inode": 4}}]
        assert (s.applied_through, s.committed_index) == (3, 3)


def test_deferred_entries_a_crash_drops_apply_again_with_the_same_results(tmp_path):
    """Entries applied but not committed when the store closes (a crash) are not in LMDB;
    applying them again from the journal gives the results their callers already got."""
    path = str(tmp_path / "meta")
    with MetadataState(path, map_size=1 << 26) as s:
        s.apply_batch(1, [mkdir("/a")])
        first = s.apply_deferred(2, [mkdir("/b"), mkdir("/a")])
    with MetadataState(path, map_size=1 << 26) as s:
        assert (s.applied_index(), s.committed_index, s.applied_through) == (1, 1, 1)
        assert s.apply_deferred(2, [mkdir("/b"), mkdir("/a")]) == first
        assert first[0] == {"ok": {"inode": 3}} and first[1]["err"][0] == "ALREADY_EXISTS"


def test_an_entry_that_raises_leaves_the_deferred_entries_before_it(tmp_path, monkeypatch):
    def broken(tx, args):
        ns.new_dir(tx, 1, "half", args)
        raise RuntimeError("a bug, not a refusal")
    schema = {"mode": state_module.MODE, "owner": state_module.text}
    monkeypatch.setitem(state_module._OPS, "broken", state_module._Op(schema, broken))
    with MetadataState(str(tmp_path / "meta"), map_size=1 << 26) as s:
        s.apply_deferred(1, [mkdir("/a")])
        with pytest.raises(RuntimeError):
            s.apply_deferred(2, [mkdir("/b"), {"op": "broken", "now": 5, "mode": 0o755,
                                               "owner": "x"}])
        assert (s.applied_through, s.open_entries) == (1, 1)
        assert s.commit_applied() is True
        assert s.applied_index() == 1
        assert s.stat("/a")["type"] == "dir"
        for path in ("/b", "/half"):
            with pytest.raises(NotFound):
                s.stat(path)


# --- exactly-once ------------------------------------------------------------------------------------

def test_a_retried_command_returns_the_stored_result_without_running_again(d):
    first = d.run(mkdir("/a", now=1, **session(1)))
    d.ok(delete("/a"))
    assert d.run(mkdir("/a", now=2, **session(1))) == first            # not executed again
    assert d.names("/") == []
    assert d.run(mkdir("/a", now=3, **session(1, client=OTHER_CLIENT))) == {"ok": {"inode": 3}}
    assert d.batch([mkdir("/b", **session(2)), mkdir("/b", **session(2))]) == [{"ok": {"inode": 4}}] * 2


def test_failed_results_are_stored_too(d):
    error = d.run(mkdir("/x/y", **session(1)))
    d.ok(mkdir("/x"))
    assert d.run(mkdir("/x/y", **session(1))) == error
    assert error["err"][0] == "NOT_FOUND"
    invalid = d.run(mkdir("rel", **session(2, 1)))
    assert d.run(mkdir("/rel", **session(2, 1))) == invalid


def test_ack_seq_prunes_older_results_of_that_client_only(d):
    def seqs():
        return [(k[:16], int.from_bytes(k[16:], "big")) for k, _ in d.state.dump()["sessions"]]
    for seq in (1, 2, 3):
        d.ok(barrier(**session(seq, 0)))
    d.ok(barrier(**session(1, 0, client=OTHER_CLIENT)))
    assert seqs() == [(CLIENT, 1), (CLIENT, 2), (CLIENT, 3), (OTHER_CLIENT, 1)]
    d.ok(barrier(**session(5, 2)))
    assert seqs() == [(CLIENT, 3), (CLIENT, 5), (OTHER_CLIENT, 1)]
    d.ok(barrier(**session(6, 5)))
    assert seqs() == [(CLIENT, 6), (OTHER_CLIENT, 1)]


def test_expire_sessions_forgets_results_stored_before_the_cut_oldest_first(d):
    def seqs():
        return sorted((k[:16], int.from_bytes(k[16:], "big")) for k, _ in d.state.dump()["sessions"])
    d.ok(barrier(now=100, **session(1)))
    d.ok(barrier(now=200, **session(1, client=OTHER_CLIENT)))
    d.ok(barrier(now=300, **session(2, 1)))                   # prunes (CLIENT, 1) and its index
    d.ok(barrier(now=400, **session(2, 0, client=OTHER_CLIENT)))
    assert len(d.state.dump()["session_times"]) == 3
    assert d.ok({"op": "expire_sessions", "before": 350, "limit": 1, "now": 500}) == \
        {"expired": 1, "more": True}                              # OTHER 1 (at 200) went first
    assert seqs() == [(CLIENT, 2), (OTHER_CLIENT, 2)]
    assert d.ok({"op": "expire_sessions", "before": 350, "limit": 10, "now": 500}) == \
        {"expired": 1, "more": False}
    assert seqs() == [(OTHER_CLIENT, 2)]
    assert [int.from_bytes(k[:8], "big") for k, _ in d.state.dump()["session_times"]] == [400]
    # An expired result is gone: a (very late) retry executes again and is stored anew.
    d.ok(barrier(now=600, **session(2, 1)))
    assert [int.from_bytes(k[:8], "big") for k, _ in d.state.dump()["session_times"]] == \
        [400, 600]
    assert d.err({"op": "expire_sessions", "before": 1, "limit": 0, "now": 1}) == "INVALID_ARGUMENT"


def test_results_stored_without_a_time_are_still_answered_and_pruned(d):
    """Sessions written before results carried their time (a bare result)."""
    import msgpack as mp
    d.ok(barrier(now=100, **session(1)))
    with d.state._env.begin(write=True) as txn:
        txn.put(CLIENT + (7).to_bytes(8, "big"), mp.packb({"ok": {"legacy": True}}),
                db=d.state._dbs["sessions"])
    assert d.run(barrier(now=200, **session(7, 1))) == {"ok": {"legacy": True}}
    d.ok(barrier(now=300, **session(8, 7)))
    assert [int.from_bytes(k[16:], "big") for k, _ in d.state.dump()["sessions"]] == [8]


def test_a_seq_used_again_by_another_command_is_refused_not_answered_with_its_result(d):
    """A retry (the same op) gets the stored result; another command under the same seq — a
    buggy or hostile client — is refused, instead of getting a result that answers something
    else (the masters' handlers would not find the fields they expect in it)."""
    first = d.ok(mkdir("/s", **session(1)))
    assert d.run(mkdir("/s", **session(1))) == {"ok": first}            # a retry
    assert d.err(barrier(**session(1))) == "INVALID_ARGUMENT"
    assert d.err(create("/s/f", **session(1))) == "INVALID_ARGUMENT"
    assert d.run(mkdir("/s", **session(1))) == {"ok": first}            # still stored
    d.ok(barrier(**session(2, 1)))                                       # the client goes on


def test_commands_without_a_session_are_not_stored(d):
    d.ok(mkdir("/a"))
    assert d.err(mkdir("/a")) == "ALREADY_EXISTS"
    assert d.state.dump()["sessions"] == []


# --- determinism ---------------------------------------------------------------------------------

def _workload() -> list[list[dict]]:
    return [
        [mkdir("/a/b", parents=True, now=1, **session(1)), create("/a/f", now=2, **session(2, 1))],
        [add_chunk(4, 0, now=3), add_chunk(4, 1, now=3), add_chunk(4, 0, now=4), {"op": "nope"}],
        [commit(4, 10, [{"handle": 1, "length": 4, "checksum": 9}, {"handle": 2, "length": 6, "checksum": 8}], now=5)],
        [create("/a/b/g", now=6), rename("/a/f", "/a/b/f", now=7), mkdir("/a/b", now=8, **session(3, 2))],
        [delete("/a", recursive=True, now=9), mkdir("/z", now=10), barrier(now=11)],
        [create("/z/h", now=12), abort(5, now=13), mkdir("/z/é", now=14, **session(1, client=OTHER_CLIENT)),
         add_chunk(7, 0, now=15)],
        [mkdir("/t/u", parents=True, now=16), create("/t/u/f", now=16), add_chunk(11, 0, now=16),
         commit(11, 5, [{"handle": 4, "length": 5, "checksum": 1}], now=16), set_replicas(4, 1, ["cs9"], now=16),
         set_replicas(4, 2, now=16), trash("/t", user="bob", now=17)],
        [delete("/z/é", trash=True, now=18), restore(2, user="", dst="/y/é", now=19),
         expire_uploads([7, 4, 999], before=20, now=21), forget_garbage([1, 99], now=22),
         create("/y/p", now=23), purge(user="bob", ids=[5], now=24), restore(1, user="bob", dst="/y", now=25)],
    ]


def test_two_states_fed_the_same_batches_end_byte_identical(tmp_path):
    dumps, results = [], []
    for name in ("one", "two"):
        with MetadataState(str(tmp_path / name), map_size=1 << 26) as s:
            results.append([s.apply_batch(i, batch) for i, batch in enumerate(_workload(), start=1)])
            dumps.append(s.dump())
    assert results[0] == results[1]
    assert dumps[0] == dumps[1]
    assert results[0][-1] == [
        {"ok": {"deleted": 1, "trash_id": 2}}, {"ok": {"path": "/y/é", "inode": 8}}, {"ok": {"expired": [7]}},
        {"ok": {"forgotten": 1}}, {"ok": {"inode": 13}}, {"ok": {"purged": 0}},
        {"err": ["ALREADY_EXISTS", "/y already exists: restore trash entry 1 to another path (dst)"]}]
    assert results[0][-2][-3:] == [{"ok": {"updated": True}}, {"ok": {"updated": False}},
                                   {"ok": {"deleted": 3, "trash_id": 1}}]
    identity_dbs = ("users", "tokens", "audit", "auth_log",       # tests/unit/test_identity_state.py
                    "oidc_issuers", "oidc_links", "oidc_used")    # tests/unit/test_oidc_state.py
    route_dbs = ("routes",)                                        # tests/unit/test_routes_state.py
    inline_dbs = ("inline",)                                       # tests/unit/test_inline_state.py
    assert all(dumps[0][db] for db in DB_NAMES if db not in identity_dbs + route_dbs + inline_dbs)


# --- snapshots -----------------------------------------------------------------------------------

def _copy(state: MetadataState, file_path) -> str:
    with open(file_path, "wb") as f:
        state.copy_to_fd(f.fileno())
    return str(file_path)


def test_copy_and_install_round_trip(tmp_path):
    with MetadataState(str(tmp_path / "src"), map_size=1 << 26) as s:
        for i, batch in enumerate(_workload(), start=1):
            s.apply_batch(i, batch)
        dump = s.dump()
        mdb = _copy(s, tmp_path / "copy.mdb")
    target = str(tmp_path / "restored")
    with MetadataState(target, map_size=1 << 26) as other:            # an existing, different env
        other.apply_batch(100, [mkdir("/other")])
    MetadataState.install_copy(mdb, target)
    assert sorted(os.listdir(tmp_path)) == ["copy.mdb", "restored", "src"]
    with MetadataState(target, map_size=1 << 26) as r:
        assert r.dump() == dump
        assert r.applied_index() == len(_workload())
        assert r.apply(len(_workload()) + 1, mkdir("/after")) == {"ok": {"inode": 14}}
        assert [e["path"] for e in r.trash_list(None)] == ["/t"]
        assert r.counts()["trash"] == 1 and r.counts()["trash_bytes"] == 5
    MetadataState.install_copy(mdb, str(tmp_path / "new" / "dir"))     # into a fresh location
    with MetadataState(str(tmp_path / "new" / "dir")) as r:
        assert r.dump() == dump


CUT_COPY_INSTALL = """
import sys
from gfs.errors import DataLoss
from master.state import MetadataState
try:
    MetadataState.install_copy(sys.argv[1], sys.argv[2])
except DataLoss as err:
    print("refused:", err)
"""


def test_install_copy_refuses_a_cut_off_copy_instead_of_dying_of_sigbus(tmp_path):
    """LMDB reads pages through its map: a copy shorter than its meta page says used to kill
    the process with SIGBUS when checked (a chaos run's master died so, installing a snapshot)."""
    with MetadataState(str(tmp_path / "src"), map_size=1 << 26) as s:
        Driver(s).batch([mkdir(f"/a-directory-with-a-long-name-{i}") for i in range(3000)])
        whole = _copy(s, tmp_path / "copy.mdb")
    data = open(whole, "rb").read()
    cut = tmp_path / "cut.mdb"
    cut.write_bytes(data[:len(data) // 3])
    target = str(tmp_path / "meta")
    with MetadataState(target, map_size=1 << 26) as s:
        s.apply(1, mkdir("/keep"))
    done = subprocess.run([sys.executable, "-c", CUT_COPY_INSTALL, str(cut), target],
                          capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert done.returncode == 0, (done.returncode, done.stderr[-500:])
    assert "refused: not a whole metadata store copy" in done.stdout
    with MetadataState(target, map_size=1 << 26) as s:        # the old store is still there
        assert s.stat("/keep")["type"] == "dir"


def test_install_copy_rejects_a_file_that_is_not_a_copy(tmp_path):
    target = str(tmp_path / "meta")
    with MetadataState(target, map_size=1 << 26) as s:
        s.apply(1, mkdir("/keep"))
    bogus = tmp_path / "bogus.mdb"
    bogus.write_bytes(b"not lmdb" * 1000)
    with pytest.raises(DataLoss):
        MetadataState.install_copy(str(bogus), target)
    assert sorted(os.listdir(tmp_path)) == ["bogus.mdb", "meta"]
    with MetadataState(target, map_size=1 << 26) as s:
        assert s.stat("/keep")["type"] == "dir"


@pytest.fixture
def snapshot_of_new(tmp_path):
    """A copy of a state holding /new, and a state at tmp_path/meta holding /old."""
    with MetadataState(str(tmp_path / "src"), map_size=1 << 26) as s:
        s.apply(1, mkdir("/new"))
        mdb = _copy(s, tmp_path / "copy.mdb")
    with MetadataState(str(tmp_path / "meta"), map_size=1 << 26) as s:
        s.apply(1, mkdir("/old"))
    return mdb, str(tmp_path / "meta")


def _stage_copy(mdb, target):
    """An install of `mdb` up to PATH.staged (install_target + _stage), returning it."""
    shutil.copyfile(mdb, MetadataState.install_target(target))
    return state_module._stage(target)


def _names_after_reopen(target):
    with MetadataState(target, map_size=1 << 26) as s:
        return [e["path"] for e in s.list("/")[0]]


def test_an_install_interrupted_between_the_renames_completes_on_open(tmp_path, snapshot_of_new):
    mdb, target = snapshot_of_new
    _stage_copy(mdb, target)                                   # staged, durable ...
    os.rename(target, target + ".retired")                             # ... crash after this rename
    assert _names_after_reopen(target) == ["/new"]
    assert sorted(os.listdir(tmp_path)) == ["copy.mdb", "meta", "src"]


def test_a_first_install_interrupted_before_its_rename_completes_on_open(tmp_path, snapshot_of_new):
    mdb, _ = snapshot_of_new
    target = str(tmp_path / "fresh")
    _stage_copy(mdb, target)                                   # crash before the rename
    assert _names_after_reopen(target) == ["/new"]


def test_an_install_interrupted_after_the_renames_cleans_up(tmp_path, snapshot_of_new):
    mdb, target = snapshot_of_new
    os.rename(target, target + ".retired")
    os.rename(_stage_copy(mdb, target), target)                # crash before the rmtree
    assert _names_after_reopen(target) == ["/new"]
    assert sorted(os.listdir(tmp_path)) == ["copy.mdb", "meta", "src"]


def test_an_install_interrupted_while_staging_or_before_the_swap_is_discarded(tmp_path, snapshot_of_new):
    mdb, target = snapshot_of_new
    _stage_copy(mdb, target)                                   # staged but never swapped
    os.makedirs(target + ".installing")                                # and a half-written one
    (tmp_path / "meta.installing" / "data.mdb").write_bytes(b"half")
    assert _names_after_reopen(target) == ["/old"]
    assert sorted(os.listdir(tmp_path)) == ["copy.mdb", "meta", "src"]


def test_garbage_before_lists_old_garbage_records(tmp_path):
    from master.state import MetadataState
    with MetadataState(str(tmp_path / "db")) as st:
        st.apply(1, {"op": "create", "path": "/f", "replication": 1, "storage_class": "hot",
                     "chunk_size": 1 << 20, "mode": 0o644, "owner": "", "overwrite": False,
                     "now": 1000})
        st.apply(2, {"op": "add_chunk", "inode": 2, "index": 0, "replicas": [], "now": 1000})
        st.apply(3, {"op": "abort", "inode": 2, "now": 5000})
        handle = st.garbage_before(5000)
        assert len(handle) == 1 and st.garbage_before(4999) == []
        assert st.apply(4, {"op": "forget_garbage", "handles": handle, "now": 6000}) == \
            {"ok": {"forgotten": 1}}
        assert st.garbage_before(10_000) == []


def test_storage_classes_are_inherited_and_set(tmp_path):
    from master.state import MetadataState
    n = iter(range(1, 1000))

    def run(st, **cmd):
        return st.apply(next(n), {"now": 1000, **cmd})

    def create(st, path, cls="", **extra):
        ok = run(st, op="create", path=path, replication=1, storage_class=cls,
                 chunk_size=1 << 20, mode=0o644, owner="", overwrite=False, **extra)["ok"]
        run(st, op="commit", inode=ok["inode"], size=0, chunks=[])
        return st.stat(path)["storage_class"]

    with MetadataState(str(tmp_path / "db")) as st:
        mk = dict(op="mkdir", parents=True, mode=0o755, owner="")
        run(st, path="/archive", **mk)
        assert create(st, "/plain") == "hot"                          # the default
        assert create(st, "/plain2", default_class="auto") == "auto"  # the cluster's default
        assert run(st, op="set_class", path="/archive", storage_class="cold",
                   recursive=False) == {"ok": {"changed": 1}}
        run(st, path="/archive/2026/q1", **mk)                        # new dirs inherit
        assert st.stat("/archive/2026/q1")["storage_class"] == "cold"
        assert create(st, "/archive/2026/q1/a") == "cold"            # new files inherit
        assert create(st, "/archive/2026/q1/b", "hot") == "hot"      # unless told otherwise
        assert run(st, op="set_class", path="/archive", storage_class="auto",
                   recursive=True) == {"ok": {"changed": 5}}
        assert [st.stat(p)["storage_class"] for p in
                ("/archive/2026", "/archive/2026/q1/a", "/archive/2026/q1/b")] == ["auto"] * 3
        assert run(st, op="set_class", path="/archive", storage_class="",
                   recursive=True) == {"ok": {"changed": 3}}              # dirs only
        assert st.stat("/archive/2026/q1/a")["storage_class"] == "auto"
        assert create(st, "/archive/c") == "hot"
        err = run(st, op="set_class", path="/plain", storage_class="", recursive=False)
        assert err["err"][0] == "INVALID_ARGUMENT"
        for bad in ({"storage_class": "warm"}, {"recursive": 1}, {"path": "relative"}):
            cmd = dict(op="set_class", path="/plain", storage_class="cold", recursive=False)
            cmd.update(bad)
            assert run(st, **cmd)["err"][0] == "INVALID_ARGUMENT"
        assert run(st, op="set_class", path="/nope", storage_class="cold",
                   recursive=False)["err"][0] == "NOT_FOUND"


def test_note_reads_keeps_the_latest_read_time_of_files(tmp_path):
    from master.state import MetadataState
    with MetadataState(str(tmp_path / "db")) as st:
        ino = st.apply(1, {"op": "create", "path": "/f", "replication": 1, "storage_class": "auto",
                           "chunk_size": 1 << 20, "mode": 0o644, "owner": "", "overwrite": False,
                           "now": 1000})["ok"]["inode"]
        st.apply(2, {"op": "add_chunk", "inode": ino, "index": 0, "replicas": [], "now": 1000})
        assert st.chunk_table()[0]["atime"] == 1000 and st.chunk_table()[0]["storage_class"] == "auto"
        assert st.apply(3, {"op": "note_reads", "reads": [[ino, 5000], [1, 6000], [99, 1]],
                            "now": 7000}) == {"ok": {"noted": 1}}       # dirs, missing: skipped
        assert st.apply(4, {"op": "note_reads", "reads": [[ino, 4000]], "now": 7000}) == \
            {"ok": {"noted": 0}}                                       # never goes back
        assert st.chunk_table()[0]["atime"] == 5000
        for i, bad in enumerate(([[ino]], [[0, 5]], [["x", 5]], 5)):
            assert st.apply(5 + i, {"op": "note_reads", "reads": bad, "now": 1})["err"][0] == \
                "INVALID_ARGUMENT"
