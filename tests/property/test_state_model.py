"""Model-based test of MetadataState: random namespace operations over a tiny name alphabet
(so collisions happen) are applied both to a real LMDB-backed MetadataState and to a plain
in-memory model, and every result and every read must agree. A rule snapshots the state
(copy_to_fd), installs the copy elsewhere and carries on from the restored copy."""
from __future__ import annotations

import copy
import os
import shutil
import tempfile

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gfs import paths
from gfs.errors import GfsError
from master.state import MetadataState

CS = 64 * 1024
CLIENT = b"m" * 16
NAMES = st.sampled_from(["a", "b", "c"])
# Mostly shallow paths, the root now and then.
PATHS = st.tuples(st.integers(0, 19), st.sampled_from([1, 1, 1, 2, 2, 3]),
                  st.lists(NAMES, min_size=3, max_size=3)).map(
    lambda t: "/" if t[0] == 0 else "/" + "/".join(t[2][:t[1]]))
PICK = st.integers(1, 1000)          # pick % 4 == 0 (a quarter of the time): use the random path


class ModelError(Exception):
    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


class Model:
    """The namespace as a dict: path -> {ino, type, size, handles}; uploads: ino -> record.
    Inode and chunk ids are predicted with the same counters the state machine keeps."""

    def __init__(self):
        self.nodes = {"/": {"ino": 1, "type": "dir", "size": 0, "handles": []}}
        self.uploads: dict[int, dict] = {}
        self.next_ino, self.next_handle, self.garbage = 2, 1, 0

    # --- lookups, with the state machine's error precedence ---
    def children(self, path: str) -> list[str]:
        return sorted(p for p in self.nodes if p != "/" and paths.split(p)[0] == path)

    def resolve(self, path: str) -> dict:
        current = "/"
        for name in paths.components(path):
            if self.nodes[current]["type"] != "dir":
                raise ModelError("FAILED_PRECONDITION")
            current = paths.join(current, name)
            if current not in self.nodes:
                raise ModelError("NOT_FOUND")
        return self.nodes[current]

    def locate(self, path: str) -> str | None:
        """The parent must be a directory; returns `path` if it exists, else None."""
        if path == "/":
            return path
        if self.resolve(paths.split(path)[0])["type"] != "dir":
            raise ModelError("FAILED_PRECONDITION")
        return path if path in self.nodes else None

    def dir_path(self, ino: int) -> str | None:
        return next((p for p, n in self.nodes.items() if n["ino"] == ino and n["type"] == "dir"), None)

    def check_replaceable(self, path: str, overwrite: bool, by_dir: bool = False) -> None:
        if not overwrite:
            raise ModelError("ALREADY_EXISTS")
        if self.nodes[path]["type"] == "dir" or by_dir:
            raise ModelError("FAILED_PRECONDITION")

    def subtree(self, path: str) -> list[str]:
        return [p for p in self.nodes if p == path or p.startswith(path + "/")]

    def drop(self, path: str) -> int:
        removed = self.subtree(path)
        for p in removed:
            self.garbage += len(self.nodes.pop(p)["handles"])
        return len(removed)

    def new_ino(self) -> int:
        self.next_ino += 1
        return self.next_ino - 1

    # --- the commands ---
    def mkdir(self, path: str, parents: bool) -> dict:
        if parents:
            current = "/"
            for name in paths.components(path)[:-1]:
                if self.nodes[current]["type"] != "dir":
                    raise ModelError("FAILED_PRECONDITION")
                current = paths.join(current, name)
                if current not in self.nodes:
                    self.nodes[current] = {"ino": self.new_ino(), "type": "dir", "size": 0, "handles": []}
        if self.locate(path) is not None:
            if parents and self.nodes[path]["type"] == "dir":
                return {"inode": self.nodes[path]["ino"]}
            raise ModelError("ALREADY_EXISTS")
        self.nodes[path] = {"ino": self.new_ino(), "type": "dir", "size": 0, "handles": []}
        return {"inode": self.nodes[path]["ino"]}

    def create(self, path: str, overwrite: bool) -> dict:
        if self.locate(path) is not None:
            self.check_replaceable(path, overwrite)
        parent, name = paths.split(path)
        ino = self.new_ino()
        self.uploads[ino] = {"parent": self.nodes[parent]["ino"], "name": name,
                             "overwrite": overwrite, "handles": []}
        return {"inode": ino}

    def add_chunk(self, ino: int, index: int) -> dict:
        if ino not in self.uploads:
            committed = any(n["ino"] == ino for n in self.nodes.values())
            raise ModelError("FAILED_PRECONDITION" if committed else "NOT_FOUND")
        handles = self.uploads[ino]["handles"]
        if index > len(handles):
            raise ModelError("FAILED_PRECONDITION")
        handle, self.next_handle = self.next_handle, self.next_handle + 1
        if index < len(handles):
            handles[index] = handle
            self.garbage += 1
        else:
            handles.append(handle)
        return {"handle": handle, "version": 1}

    def commit(self, ino: int, size: int, chunks: list[dict]) -> dict:
        upload = self.uploads.get(ino)
        if upload is None:
            raise ModelError("NOT_FOUND")
        parent = self.dir_path(upload["parent"])
        if parent is None:
            raise ModelError("NOT_FOUND")
        if [c["handle"] for c in chunks] != upload["handles"] or any(c["length"] > CS for c in chunks) \
                or sum(c["length"] for c in chunks) != size:
            raise ModelError("FAILED_PRECONDITION")
        path = paths.join(parent, upload["name"])
        if path in self.nodes:
            self.check_replaceable(path, upload["overwrite"])
            self.drop(path)
        self.nodes[path] = {"ino": ino, "type": "file", "size": size, "handles": upload["handles"]}
        del self.uploads[ino]
        return {"inode": ino}

    def abort(self, ino: int) -> dict:
        if ino not in self.uploads:
            raise ModelError("NOT_FOUND")
        self.garbage += len(self.uploads.pop(ino)["handles"])
        return {}

    def rename(self, src: str, dst: str, overwrite: bool) -> dict:
        if "/" in (src, dst):
            raise ModelError("INVALID_ARGUMENT")
        if self.locate(src) is None:
            raise ModelError("NOT_FOUND")
        if src == dst:
            return {}
        moving_dir = self.nodes[src]["type"] == "dir"
        if moving_dir and paths.is_same_or_ancestor(src, dst):
            raise ModelError("INVALID_ARGUMENT")
        if self.locate(dst) is not None:
            self.check_replaceable(dst, overwrite, by_dir=moving_dir)
            self.drop(dst)
        for p in self.subtree(src):
            self.nodes[dst + p[len(src):]] = self.nodes.pop(p)
        return {}

    def delete(self, path: str, recursive: bool) -> dict:
        if path == "/":
            raise ModelError("INVALID_ARGUMENT")
        if self.locate(path) is None:
            raise ModelError("NOT_FOUND")
        if not recursive and self.children(path):
            raise ModelError("FAILED_PRECONDITION")
        return {"deleted": self.drop(path)}

    def counts(self) -> dict:
        dirs = sum(1 for n in self.nodes.values() if n["type"] == "dir")
        files, pending = len(self.nodes) - dirs, len(self.uploads)
        chunks = sum(len(n["handles"]) for n in self.nodes.values()) + \
            sum(len(u["handles"]) for u in self.uploads.values())
        return {"inodes": dirs + files + pending, "dirs": dirs, "files": files, "pending": pending,
                "chunks": chunks, "garbage": self.garbage}


def _outcome(fn, *args):
    """('ok', value) or ('err', code) for a model call or a state read."""
    try:
        return "ok", fn(*args)
    except (ModelError, GfsError) as exc:
        return "err", exc.code


class StateMachineVsModel(RuleBasedStateMachine):

    def __init__(self):
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="gfs-model-")
        self.generation = 0
        self.state = MetadataState(self._env_dir(), map_size=1 << 26)
        self.model = Model()
        self.index = 0
        self.seq = 0
        self.last_command: dict | None = None
        self.last_result: dict | None = None

    def teardown(self):
        self.state.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _env_dir(self) -> str:
        return os.path.join(self.tmp, f"meta{self.generation}")

    # --- running one command against both ---
    def _apply(self, command: dict) -> dict:
        self.index += 1
        result = self.state.apply(self.index, command)
        assert result is not None
        return result

    def run(self, model_fn, *args, **fields) -> None:
        self.seq += 1
        command = {**fields, "now": self.index, "client_id": CLIENT, "seq": self.seq, "ack_seq": self.seq - 1}
        result = self._apply(command)
        trial = copy.deepcopy(self.model)
        kind, value = _outcome(getattr(trial, model_fn), *args)
        if kind == "ok":
            self.model = trial
            assert result == {"ok": value}, (command, result, value)
        else:
            assert "err" in result and result["err"][0] == value, (command, result, value)
        self.last_command, self.last_result = command, result

    def pick_path(self, pick: int, path: str) -> str:
        """Mostly an existing path (so renames and deletes do something), else `path`."""
        existing = sorted(p for p in self.model.nodes if p != "/")
        return existing[pick % len(existing)] if existing and pick % 4 else path

    def pick_target(self, pick: int, name: str, path: str) -> str:
        """Mostly `name` inside an existing directory, else `path`."""
        dirs = sorted(p for p, n in self.model.nodes.items() if n["type"] == "dir")
        return paths.join(dirs[pick % len(dirs)], name) if pick % 4 else path

    def pick_inode(self, pick: int) -> int:
        if self.model.uploads and pick % 4:
            uploads = sorted(self.model.uploads)
            return uploads[pick % len(uploads)]
        others = [1, self.model.next_ino + 5] + sorted(n["ino"] for n in self.model.nodes.values())
        return others[pick % len(others)]

    # --- commands ---
    @rule(path=PATHS, parents=st.booleans())
    def mkdir(self, path, parents):
        self.run("mkdir", path, parents, op="mkdir", path=path, parents=parents, mode=0o755, owner="u")

    @rule(path=PATHS, overwrite=st.booleans())
    def create(self, path, overwrite):
        self.run("create", path, overwrite, op="create", path=path, replication=2, storage_class="hot",
                 chunk_size=CS, mode=0o644, owner="u", overwrite=overwrite)

    @rule(pick=PICK, name=NAMES, path=PATHS, overwrite=st.booleans(),
          lengths=st.lists(st.sampled_from([1, CS - 1, CS]), max_size=3))
    def upload(self, pick, name, path, overwrite, lengths):
        """create + add_chunk per length + commit, so that files exist."""
        self.create(self.pick_target(pick, name, path), overwrite)
        if "err" in self.last_result:
            return
        ino = self.last_result["ok"]["inode"]
        for index in range(len(lengths)):
            self.add_chunk_to(ino, index)
        chunks = [{"handle": h, "length": n, "checksum": h}
                  for h, n in zip(self.model.uploads[ino]["handles"], lengths)]
        self.run("commit", ino, sum(lengths), chunks, op="commit", inode=ino, size=sum(lengths), chunks=chunks)

    def add_chunk_to(self, ino, index):
        self.run("add_chunk", ino, index, op="add_chunk", inode=ino, index=index, replicas=["cs1", "cs2"])

    @rule(pick=PICK, index=st.integers(0, 3))
    def add_chunk(self, pick, index):
        self.add_chunk_to(self.pick_inode(pick), index)

    @rule(pick=PICK, lengths=st.lists(st.sampled_from([0, 1, CS - 1, CS, CS + 1]), max_size=4),
          skew=st.sampled_from([0, 0, 0, 1, -1]), drop_last=st.booleans())
    def commit(self, pick, lengths, skew, drop_last):
        ino = self.pick_inode(pick)
        handles = list(self.model.uploads.get(ino, {}).get("handles", []))
        if drop_last and handles and lengths and lengths[0] == 0:
            handles.pop()
        chunks = [{"handle": h, "length": lengths[i % len(lengths)] if lengths else CS, "checksum": h * 7}
                  for i, h in enumerate(handles)]
        size = max(0, sum(c["length"] for c in chunks) + skew)
        self.run("commit", ino, size, chunks, op="commit", inode=ino, size=size, chunks=chunks)

    @rule(pick=PICK)
    def abort(self, pick):
        ino = self.pick_inode(pick)
        self.run("abort", ino, op="abort", inode=ino)

    @rule(pick=PICK, src=PATHS, pick_dst=PICK, name=NAMES, dst=PATHS, overwrite=st.booleans())
    def rename(self, pick, src, pick_dst, name, dst, overwrite):
        src, dst = self.pick_path(pick, src), self.pick_target(pick_dst, name, dst)
        self.run("rename", src, dst, overwrite, op="rename", src=src, dst=dst, overwrite=overwrite)

    @rule(pick=PICK, path=PATHS, recursive=st.booleans())
    def delete(self, pick, path, recursive):
        path = self.pick_path(pick, path)
        self.run("delete", path, recursive, op="delete", path=path, recursive=recursive)

    @precondition(lambda self: self.last_command is not None)
    @rule()
    def retry_last_command(self):
        """A retry of the latest (client_id, seq) returns the stored result and changes nothing."""
        before = self.state.dump()
        assert self._apply(self.last_command) == self.last_result
        after = self.state.dump()
        assert after.pop("meta") != before.pop("meta")
        assert after == before

    # --- reads ---
    @rule(path=PATHS)
    def stat(self, path):
        kind, value = _outcome(self.state.stat, path)
        expected_kind, expected = _outcome(self.model.resolve, path)
        assert kind == expected_kind
        if kind == "err":
            assert value == expected
        else:
            assert (value["path"], value["inode"], value["type"], value["size"]) == \
                (path, expected["ino"], expected["type"], expected["size"])
            assert [c["handle"] for c in value["chunks"]] == expected["handles"]
            assert sum(c["length"] for c in value["chunks"]) == value["size"]

    @rule(path=PATHS, limit=st.integers(1, 3))
    def list_pages(self, path, limit):
        kind, node = _outcome(self.model.resolve, path)
        if kind == "err":
            assert _outcome(self.state.list, path) == ("err", node)
            return
        entries, token = [], ""
        while True:
            page, token = self.state.list(path, token, limit)
            assert len(page) <= limit
            entries += page
            if not token:
                break
        expected = self.model.children(path) if node["type"] == "dir" else [path]
        assert [e["path"] for e in entries] == expected
        assert [(e["type"], e["size"]) for e in entries] == \
            [(self.model.nodes[p]["type"], self.model.nodes[p]["size"]) for p in expected]

    # --- snapshot and restore in the middle of the run ---
    @rule(same_place=st.booleans())
    def snapshot_and_restore(self, same_place):
        copy_file = os.path.join(self.tmp, "snapshot.mdb")
        with open(copy_file, "wb") as f:
            self.state.copy_to_fd(f.fileno())
        dump = self.state.dump()
        old_dir = self._env_dir()
        self.state.close()
        if not same_place:
            self.generation += 1
        MetadataState.install_copy(copy_file, self._env_dir())
        self.state = MetadataState(self._env_dir(), map_size=1 << 26)
        if not same_place:
            shutil.rmtree(old_dir)
        os.remove(copy_file)
        assert self.state.dump() == dump
        assert self.state.applied_index() == self.index

    # --- invariants ---
    @invariant()
    def counts_agree(self):
        assert self.state.counts() == self.model.counts()

    @invariant()
    def whole_tree_agrees(self):
        for path, node in self.model.nodes.items():
            if node["type"] == "dir":
                entries, token = self.state.list(path)
                assert token == ""
                assert [(e["path"], e["inode"], e["type"], e["size"]) for e in entries] == \
                    [(p, self.model.nodes[p]["ino"], self.model.nodes[p]["type"], self.model.nodes[p]["size"])
                     for p in self.model.children(path)]


StateMachineVsModel.TestCase.settings = settings(max_examples=250, stateful_step_count=50, deadline=None)
test_state_machine_matches_the_model = StateMachineVsModel.TestCase
