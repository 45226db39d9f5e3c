"""MetadataState (master/state.py) against docs/state-machine.md, over a real LMDB in tmp_path."""
from __future__ import annotations

import os

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gfs.errors import DataLoss, FailedPrecondition, GfsError, InvalidArgument, NotFound
from master import state as state_module
from master.state import MetadataState

CS = 64 * 1024                    # the smallest valid chunk size
CLIENT = b"c" * 16
OTHER_CLIENT = b"d" * 16


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
                    "chunks": []}
    assert state.applied_index() == 0
    assert state.list("/") == ([], "")
    assert state.counts() == {"inodes": 1, "dirs": 1, "files": 0, "pending": 0, "chunks": 0, "garbage": 0}


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
    assert d.ok(commit(ino, CS + 5, chunks, now=12)) == {"inode": ino}
    info = d.state.stat("/f")
    assert (info["type"], info["size"], info["ctime"], info["mtime"], info["replication"],
            info["storage_class"], info["chunk_size"], info["mode"]) == ("file", CS + 5, 10, 12, 3, "hot", CS, 0o644)
    replicas = ["cs1:7000", "cs2:7000"]
    assert info["chunks"] == [
        {"handle": 1, "index": 0, "version": 1, "length": CS, "checksum": 7, "replicas": replicas},
        {"handle": 2, "index": 1, "version": 1, "length": 5, "checksum": 2**64 - 1, "replicas": replicas}]
    assert d.state.stat("/")["mtime"] == 12
    assert d.state.counts() == {"inodes": 2, "dirs": 1, "files": 1, "pending": 0, "chunks": 2, "garbage": 0}


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


def test_add_chunk_again_for_an_index_replaces_it_and_garbages_the_old_one(d):
    ino = d.ok(create("/f"))["inode"]
    first = d.ok(add_chunk(ino, 0, now=20))["handle"]
    second = d.ok(add_chunk(ino, 0, now=21))["handle"]
    assert second != first
    assert [c["handle"] for c in d.state.file_chunks(ino)] == [second]
    assert d.garbage() == {first: 21}
    assert d.err(commit(ino, 1, [{"handle": first, "length": 1, "checksum": 0}])) == "FAILED_PRECONDITION"
    d.ok(commit(ino, 1, [{"handle": second, "length": 1, "checksum": 0}]))


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
    assert d.state.counts() == {"inodes": 1, "dirs": 1, "files": 0, "pending": 0, "chunks": 0, "garbage": 2}
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
    assert d.ok(delete("/f", now=60)) == {"deleted": 1}
    assert d.garbage() == {h: 60 for h in handles}
    assert d.ok(delete("/e", now=61)) == {"deleted": 1}
    assert d.state.stat("/")["mtime"] == 61
    assert d.names("/") == []


def test_delete_recursive(d):
    d.ok(mkdir("/a/b/c", parents=True))
    d.upload("/a/f1", lengths=(CS, 1))
    d.upload("/a/b/c/f2")
    handles = d.handles("/a/f1") + d.handles("/a/b/c/f2")
    assert d.err(delete("/a")) == "FAILED_PRECONDITION"
    assert d.ok(delete("/a", recursive=True, now=70)) == {"deleted": 5}
    assert d.garbage() == {h: 70 for h in handles}
    assert d.state.counts() == {"inodes": 1, "dirs": 1, "files": 0, "pending": 0, "chunks": 0, "garbage": 3}
    assert d.state.dump()["dirents"] == []


def test_delete_errors(d):
    d.upload("/f")
    assert d.err(delete("/nope")) == "NOT_FOUND"
    assert d.err(delete("/f/x")) == "FAILED_PRECONDITION"
    assert d.err(delete("/")) == "INVALID_ARGUMENT"
    assert d.err(delete("/", recursive=True)) == "INVALID_ARGUMENT"
    assert d.ok(delete("/f", recursive=True)) == {"deleted": 1}


def test_barrier(d):
    assert d.ok(barrier()) == {}
    assert d.state.applied_index() == 1


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
                    rename("/f", "/h"), delete("/f"), barrier()):
        assert d.err(dict(command, surprise=True)) == "INVALID_ARGUMENT"
    assert d.state.counts() == {"inodes": 2, "dirs": 1, "files": 0, "pending": 1, "chunks": 0, "garbage": 0}


_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**65, max_value=2**65) | st.text(max_size=8)
    | st.binary(max_size=20) | st.sampled_from(["/", "/a", "/a/b", "a", "hot", "mkdir"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)
_fields = st.sampled_from(["op", "now", "path", "parents", "mode", "owner", "replication",
                           "storage_class", "chunk_size", "overwrite", "inode", "index", "replicas",
                           "size", "chunks", "src", "dst", "recursive", "client_id", "seq", "ack_seq"])
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
        state_module._new_dir(tx, 1, "half", args)          # writes, then fails
        tx.discard_chunks([12345], args["now"])
        raise FailedPrecondition("gave up half way")
    half_schema = {"mode": state_module._MODE, "owner": state_module._text}
    monkeypatch.setitem(state_module._OPS, "half_done", (half_schema, half_done))
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


def test_commands_without_a_session_are_not_stored(d):
    d.ok(mkdir("/a"))
    assert d.err(mkdir("/a")) == "ALREADY_EXISTS"
    assert d.state.dump()["sessions"] == []


# --- determinism ---------------------------------------------------------------------------------

def _workload() -> list[list[dict]]:
    return [
        [mkdir("/a/b", parents=True, now=1, **session(1)), create("/a/f", now=2, **session(2, 1))],
        [add_chunk(4, 0, now=3), add_chunk(4, 1, now=3), add_chunk(4, 0, now=4), {"op": "nope"}],
        [commit(4, 10, [{"handle": 3, "length": 4, "checksum": 9}, {"handle": 2, "length": 6, "checksum": 8}], now=5)],
        [create("/a/b/g", now=6), rename("/a/f", "/a/b/f", now=7), mkdir("/a/b", now=8, **session(3, 2))],
        [delete("/a", recursive=True, now=9), mkdir("/z", now=10), barrier(now=11)],
        [create("/z/h", now=12), abort(5, now=13), mkdir("/z/é", now=14, **session(1, client=OTHER_CLIENT)),
         add_chunk(7, 0, now=15)],
    ]


def test_two_states_fed_the_same_batches_end_byte_identical(tmp_path):
    dumps, results = [], []
    for name in ("one", "two"):
        with MetadataState(str(tmp_path / name), map_size=1 << 26) as s:
            results.append([s.apply_batch(i, batch) for i, batch in enumerate(_workload(), start=1)])
            dumps.append(s.dump())
    assert results[0] == results[1]
    assert dumps[0] == dumps[1]
    assert all(dumps[0][db] for db in ("meta", "inodes", "dirents", "pending", "chunks", "garbage", "sessions"))


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
        assert r.apply(len(_workload()) + 1, mkdir("/after")) == {"ok": {"inode": 9}}
    MetadataState.install_copy(mdb, str(tmp_path / "new" / "dir"))     # into a fresh location
    with MetadataState(str(tmp_path / "new" / "dir")) as r:
        assert r.dump() == dump


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


def _names_after_reopen(target):
    with MetadataState(target, map_size=1 << 26) as s:
        return [e["path"] for e in s.list("/")[0]]


def test_an_install_interrupted_between_the_renames_completes_on_open(tmp_path, snapshot_of_new):
    mdb, target = snapshot_of_new
    state_module._stage(mdb, target)                                   # staged, durable ...
    os.rename(target, target + ".retired")                             # ... crash after this rename
    assert _names_after_reopen(target) == ["/new"]
    assert sorted(os.listdir(tmp_path)) == ["copy.mdb", "meta", "src"]


def test_a_first_install_interrupted_before_its_rename_completes_on_open(tmp_path, snapshot_of_new):
    mdb, _ = snapshot_of_new
    target = str(tmp_path / "fresh")
    state_module._stage(mdb, target)                                   # crash before the rename
    assert _names_after_reopen(target) == ["/new"]


def test_an_install_interrupted_after_the_renames_cleans_up(tmp_path, snapshot_of_new):
    mdb, target = snapshot_of_new
    os.rename(target, target + ".retired")
    os.rename(state_module._stage(mdb, target), target)                # crash before the rmtree
    assert _names_after_reopen(target) == ["/new"]
    assert sorted(os.listdir(tmp_path)) == ["copy.mdb", "meta", "src"]


def test_an_install_interrupted_while_staging_or_before_the_swap_is_discarded(tmp_path, snapshot_of_new):
    mdb, target = snapshot_of_new
    state_module._stage(mdb, target)                                   # staged but never swapped
    os.makedirs(target + ".installing")                                # and a half-written one
    (tmp_path / "meta.installing" / "data.mdb").write_bytes(b"half")
    assert _names_after_reopen(target) == ["/old"]
    assert sorted(os.listdir(tmp_path)) == ["copy.mdb", "meta", "src"]
