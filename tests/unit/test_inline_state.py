"""Small files inline in the metadata (master/inline.py), applied to a real LMDB state."""
from __future__ import annotations

import itertools

import pytest

from gfs.auth.tokens import new_token, token_hash
from gfs.checksum import inline_checksum
from master.state import MetadataState

NOW = 1_000


@pytest.fixture
def st(tmp_path):
    with MetadataState(str(tmp_path / "meta"), map_size=1 << 26) as state:
        yield state


class Log:
    def __init__(self, state: MetadataState):
        self.state, self.index = state, itertools.count(1)

    def run(self, command: dict, token: str | None = "system") -> dict:
        command = {"now": NOW, **command}
        if token != "system":
            command["auth"] = None if token is None else token_hash(token)
        return self.state.apply_batch(next(self.index), [command])[0]

    def ok(self, command: dict, token="system") -> dict:
        result = self.run(command, token)
        assert "ok" in result, result
        return result["ok"]

    def err(self, command: dict, token="system") -> tuple[str, str]:
        result = self.run(command, token)
        assert "err" in result, result
        return tuple(result["err"])


def put(path: str, data: bytes, overwrite: bool = False, checksum: int | None = None) -> dict:
    return {"op": "put_inline", "path": path, "data": data,
            "checksum": inline_checksum(data) if checksum is None else checksum,
            "replication": 3, "storage_class": "", "chunk_size": 1 << 20, "mode": 0o644,
            "owner": "", "overwrite": overwrite}


def upload(log: Log, path: str, size: int, overwrite: bool = False, token="system") -> int:
    ino = log.ok({"op": "create", "path": path, "replication": 1, "storage_class": "",
                  "chunk_size": 1 << 20, "mode": 0o644, "owner": "", "overwrite": overwrite,
                  "size": size}, token)["inode"]
    handle = log.ok({"op": "add_chunk", "inode": ino, "index": 0, "replicas": ["a"]},
                    token)["handle"]
    log.ok({"op": "commit", "inode": ino, "size": size,
            "chunks": [{"handle": handle, "length": size, "checksum": 7}]}, token)
    return ino


def test_one_command_makes_a_committed_file_whose_bytes_a_read_stat_returns(st):
    log = Log(st)
    data = bytes(range(256)) * 300                   # 76,800 bytes: two checksum blocks
    ok = log.ok(put("/small", data))
    info = st.stat("/small")
    assert info["size"] == len(data) == ok["size"] and info["chunks"] == []
    assert info["inline"] == inline_checksum(data) and "data" not in info
    assert st.stat("/small", for_read=True)["data"] == data
    assert [e["path"] for e in st.list("/")[0]] == ["/small"]
    assert st.stat("/", for_read=True)["inline"] is None


def test_damaged_bytes_are_refused_and_nothing_appears(st):
    log = Log(st)
    code, message = log.err(put("/x", b"hello", checksum=inline_checksum(b"hellO")))
    assert code == "DATA_LOSS" and "checksum" in message
    assert st.list("/")[0] == []


def test_exists_unless_overwrite_and_overwrite_frees_the_old_bytes(st):
    log = Log(st)
    first = log.ok(put("/f", b"one"))["inode"]
    assert log.err(put("/f", b"two"))[0] == "ALREADY_EXISTS"
    log.ok(put("/f", b"three", overwrite=True))
    assert st.stat("/f", for_read=True)["data"] == b"three"
    assert all(key != first.to_bytes(8, "big") for key, _ in st.dump()["inline"])
    assert len(st.dump()["inline"]) == 1


def test_growing_into_chunks_and_shrinking_back(st):
    log = Log(st)
    log.ok(put("/g", b"small"))
    upload(log, "/g", 1 << 20, overwrite=True)          # the big version: chunks
    info = st.stat("/g", for_read=True)
    assert info["inline"] is None and len(info["chunks"]) == 1 and "data" not in info
    assert st.dump()["inline"] == []
    log.ok(put("/g", b"small again", overwrite=True))
    info = st.stat("/g")
    assert info["inline"] is not None and info["chunks"] == []
    assert len(st.dump()["garbage"]) == 1               # the chunked version's chunk


def test_delete_trash_restore_and_purge_keep_or_drop_the_bytes(st):
    log = Log(st)
    log.ok({"op": "mkdir", "path": "/d", "parents": False, "mode": 0o755, "owner": ""})
    log.ok(put("/d/f", b"kept"))
    trash_id = log.ok({"op": "delete", "path": "/d", "recursive": True, "trash": True,
                       "user": ""})["trash_id"]
    assert len(st.dump()["inline"]) == 1
    log.ok({"op": "trash_restore", "id": trash_id, "user": "", "dst": "", "mode": 0o755,
            "owner": ""})
    assert st.stat("/d/f", for_read=True)["data"] == b"kept"
    log.ok({"op": "delete", "path": "/d/f", "recursive": False, "trash": False})
    assert st.dump()["inline"] == []


def test_quota_and_usage_count_inline_files(st):
    log = Log(st)
    admin = new_token()
    log.ok({"op": "bootstrap", "token_hash": token_hash(admin)})
    log.ok({"op": "user_add", "name": "alice", "admin": False}, admin)
    alice = new_token()
    log.ok({"op": "token_create", "token_hash": token_hash(alice), "name": "t",
            "principal": "alice", "expires": 0, "scopes": ["*"]}, admin)
    log.ok({"op": "user_set", "name": "alice", "quota": [100, 2]}, admin)
    log.ok(put("/alice/a", b"x" * 60), alice)
    code, message = log.err(put("/alice/b", b"x" * 41), alice)
    assert code == "RESOURCE_EXHAUSTED" and "quota" in message
    log.ok(put("/alice/a", b"x" * 90, overwrite=True), alice)     # replacing: 90 fits
    log.ok(put("/alice/b", b"x" * 10), alice)
    assert log.err(put("/alice/c", b""), alice)[0] == "RESOURCE_EXHAUSTED"   # 2 files
    assert st.whoami(token_hash(alice), NOW)["used"] == [100, 2]


def test_inline_data_is_checked_like_any_field(st):
    log = Log(st)
    assert log.err({**put("/x", b"a"), "data": "text"})[0] == "INVALID_ARGUMENT"
    assert log.err({**put("/x", b"a"), "data": b"x" * ((1 << 20) + 1)})[0] == "INVALID_ARGUMENT"
    assert log.err(put("/nodir/x", b"a"))[0] == "NOT_FOUND"


def test_xattrs_come_in_the_same_command_and_an_overwrite_replaces_them(st):
    log = Log(st)
    attrs = {"s3.etag": '"5d41402abc4b2a76b9719d911017c592"', "s3.content-type": "text/plain",
             "s3.meta.who": "alice"}
    log.ok({**put("/obj", b"hello"), "xattrs": attrs})
    info = st.stat("/obj", for_read=True)
    assert info["xattrs"] == attrs and info["data"] == b"hello"
    assert st.list("/")[0][0]["xattrs"] == attrs
    log.ok({**put("/obj", b"bye", overwrite=True), "xattrs": {"s3.etag": '"x"'}})
    assert st.stat("/obj")["xattrs"] == {"s3.etag": '"x"'}
    log.ok(put("/obj", b"plain", overwrite=True))         # none sent: none kept from before
    assert st.stat("/obj")["xattrs"] == {}


def test_bad_xattrs_refuse_the_whole_command(st):
    log = Log(st)
    for bad in ({"k": 1}, {"k": "v" * 9000}, ["k"]):
        assert log.err({**put("/obj", b"a"), "xattrs": bad})[0] == "INVALID_ARGUMENT"
    assert st.list("/")[0] == [] and st.dump()["inline"] == []


def test_two_states_fed_the_same_commands_end_byte_identical(tmp_path):
    dumps = []
    for name in ("one", "two"):
        with MetadataState(str(tmp_path / name), map_size=1 << 26) as state:
            log = Log(state)
            log.ok(put("/a", b"a" * 1000))
            log.ok(put("/a", b"b" * 70_000, overwrite=True))
            log.ok(put("/c", b""))
            dumps.append(state.dump())
    assert dumps[0] == dumps[1] and len(dumps[0]["inline"]) == 2
