"""The masters' metadata state machine over LMDB (see docs/state-machine.md).

`MetadataState.apply_batch` is the deterministic apply function of the Raft log: it reads
nothing but the LMDB state and the commands (time and every id chosen by the leader come in the
command), so every replica that applies the same entries ends with byte-identical databases.
Malformed commands never raise: they fail with INVALID_ARGUMENT, identically everywhere.
"""
from __future__ import annotations

import gc
import os
import shutil
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping, NamedTuple

import lmdb
import msgpack

from gfs import paths
from gfs.fsutil import fsync_path
from gfs.errors import (AlreadyExists, DataLoss, FailedPrecondition, GfsError, InvalidArgument,
                        NotFound)
from master.schema import (COMMON, INODE, MODE, SESSION, Check, boolean,
                           chunk_size_field, fields, int_in, list_of, map_of, one_of, pair_of,
                           parse_session, path_field, path_or_empty, text)
from master.store import (APPLIED, DB_NAMES, DIR, FILE, MAX_DBS, MAX_U64, NEXT_CHUNK, NEXT_INODE,
                          NEXT_TRASH, U64, Tx, error_result, show, u64key)

ROOT_INODE = 1
COMMITTED, PENDING = "committed", "pending"
STORAGE_CLASSES = ("hot", "cold", "auto")
DEFAULT_CLASS = "hot"
MAX_REPLICATION = 16
CHUNK_VERSION = 1             # version of a freshly allocated chunk
ROOT_MODE, ROOT_OWNER = 0o755, "root"
FIRST_TRASH_ID = 1
ANONYMOUS = ""                # the user of trash entries made without one
_DATA_FILE = "data.mdb"
# install_copy: PATH.installing (being written) -> PATH.staged (complete, durable) -> PATH,
# with the old PATH moved to PATH.retired in between.
_INSTALLING, _STAGED, _RETIRED = ".installing", ".staged", ".retired"


# --- namespace helpers -------------------------------------------------------------------------

def _prefix(parts: list[str], n: int) -> str:
    return "/" + "/".join(parts[:n])


def _child(tx: Tx, ino: int, parts: list[str], i: int) -> int | None:
    """The entry `parts[i]` of directory `ino` (the path `parts[:i]`), or None."""
    if not tx.is_dir(ino):
        raise FailedPrecondition(f"{_prefix(parts, i)} is not a directory")
    return tx.lookup(ino, parts[i])


def _resolve(tx: Tx, path: str) -> int:
    """The inode at `path` (NotFound if missing, FailedPrecondition if it crosses a file)."""
    parts = paths.components(path)
    ino = ROOT_INODE
    for i in range(len(parts)):
        child = _child(tx, ino, parts, i)
        if child is None:
            raise NotFound(f"{_prefix(parts, i + 1)}: no such file or directory")
        ino = child
    return ino


def _resolve_dir(tx: Tx, path: str) -> int:
    ino = _resolve(tx, path)
    if not tx.is_dir(ino):
        raise FailedPrecondition(f"{path} is not a directory")
    return ino


def _locate(tx: Tx, path: str) -> tuple[int, str, int | None]:
    """(parent dir inode, name, inode now at `path` or None); the root is its own parent."""
    parent_path, name = paths.split(path)
    if not name:
        return ROOT_INODE, "", ROOT_INODE
    parent = _resolve_dir(tx, parent_path)
    return parent, name, tx.lookup(parent, name)


def _existing(tx: Tx, path: str) -> tuple[int, str, int]:
    """Like _locate, but the entry must exist."""
    parent, name, ino = _locate(tx, path)
    if ino is None:
        raise NotFound(f"{path}: no such file or directory")
    return parent, name, ino


def _check_replaceable(tx: Tx, path: str, existing: int, overwrite: bool, by_dir: bool = False) -> None:
    """May a new entry take `path`, held by `existing`? Only with overwrite, and file by file."""
    if not overwrite:
        raise AlreadyExists(f"{path} already exists")
    if tx.is_dir(existing):
        raise FailedPrecondition(f"{path} is a directory and cannot be overwritten")
    if by_dir:
        raise FailedPrecondition(f"a directory cannot overwrite the file {path}")


def _inode_record(kind: str, mode: int, owner: str, now: int, replication: int = 0,
                  storage_class: str = "", chunk_size: int = 0, state: str = COMMITTED) -> dict:
    return {"type": kind, "mode": mode, "owner": owner, "ctime": now, "mtime": now, "size": 0,
            "replication": replication, "storage_class": storage_class, "chunk_size": chunk_size,
            "chunks": [], "state": state}


def _new_dir(tx: Tx, parent: int, name: str, args: dict) -> int:
    """A new directory inherits its parent's storage class ("" when the parent has none)."""
    ino = tx.allocate(NEXT_INODE)
    inherited = tx.inode(parent).get("storage_class", "")
    tx.put_inode(ino, _inode_record(DIR, args["mode"], args["owner"], args["now"],
                                    storage_class=inherited))
    tx.add_entry(parent, name, ino, args["now"])
    return ino


def _file_class(tx: Tx, parent: int, args: dict) -> str:
    """A new file's storage class: the one asked for, else its directory's, else the default."""
    return (args["storage_class"] or tx.inode(parent).get("storage_class", "")
            or args.get("default_class", DEFAULT_CLASS))


def _drop_inode(tx: Tx, ino: int, now: int) -> dict:
    """Delete one inode record, sending a file's chunks to garbage; return the record."""
    record = tx.inode(ino)
    tx.discard_chunks(record["chunks"], now)
    tx.delete_inode(ino)
    return record


def _remove_tree(tx: Tx, ino: int, now: int) -> int:
    """Delete `ino` and everything below it (its own entry is the caller's); count the inodes."""
    removed, stack = 0, [ino]
    while stack:
        current = stack.pop()
        if tx.is_dir(current):
            stack.extend(reversed(tx.drop_entries(current)))
        _drop_inode(tx, current, now)
        removed += 1
    return removed


def _set_class(tx: Tx, args: dict) -> dict:
    """Set the storage class of a file, or of a directory (inherited by what is created in it
    later; "" = none); with `recursive`, of every directory and file below it too ("" then
    clears the directories' classes and leaves the files' as they are)."""
    path, cls = args["path"], args["storage_class"]
    ino = _resolve(tx, path)
    if not tx.is_dir(ino) and not cls:
        raise InvalidArgument(f"{path} is a file: give it a class ({', '.join(STORAGE_CLASSES)})")
    changed, stack = 0, [ino]
    while stack:
        current = stack.pop()
        record = tx.inode(current)
        is_dir = record["type"] == DIR
        if is_dir and (current == ino and args["recursive"] or current != ino):
            stack.extend(child for _, child in tx.entries(current))
        if (is_dir or cls) and record["storage_class"] != cls:
            record["storage_class"] = cls
            tx.put_inode(current, record)
            changed += 1
    return {"changed": changed}


def _note_reads(tx: Tx, args: dict) -> dict:
    """Record when files' data was last read (batched by the leader, for `auto` tiering)."""
    noted = 0
    for ino, when in args["reads"]:
        record = tx.inode(ino)
        if record is not None and record["type"] == FILE and when > record.get("atime", 0):
            record["atime"] = when
            tx.put_inode(ino, record)
            noted += 1
    return {"noted": noted}


def _tree_summary(tx: Tx, ino: int) -> tuple[int, int, int]:
    """(inodes, files, bytes) of `ino` and everything below it; bytes sums the file sizes."""
    inodes = files = size = 0
    stack = [ino]
    while stack:
        current = stack.pop()
        record = tx.inode(current)
        inodes += 1
        if record["type"] == DIR:
            stack.extend(child for _, child in tx.entries(current))
        else:
            files += 1
            size += record["size"]
    return inodes, files, size


def _upload(tx: Tx, ino: int) -> tuple[dict, dict]:
    """(inode record, pending record) of a pending upload."""
    pending = tx.pending(ino)
    if pending is None:
        raise NotFound(f"inode {ino} is not a pending upload")
    return tx.inode(ino), pending


def _check_commit_chunks(record: dict, chunks: list[dict], size: int) -> None:
    handles = [chunk["handle"] for chunk in chunks]
    if handles != record["chunks"]:
        raise FailedPrecondition(f"the {len(handles)} committed chunks do not match the "
                                 f"{len(record['chunks'])} allocated chunks, in order")
    for i, chunk in enumerate(chunks):
        if chunk["length"] > record["chunk_size"]:
            raise FailedPrecondition(f"chunk {i} is {chunk['length']} bytes, over the chunk size "
                                     f"{record['chunk_size']}")
    total = sum(chunk["length"] for chunk in chunks)
    if total != size:
        raise FailedPrecondition(f"chunk lengths add up to {total} bytes, not the size {size}")


def _seal_chunks(tx: Tx, chunks: list[dict]) -> None:
    """Record the committed length and checksum of each chunk."""
    for chunk in chunks:
        stored = tx.chunk(chunk["handle"])
        stored.update(length=chunk["length"], checksum=chunk["checksum"])
        tx.put_chunk(chunk["handle"], stored)


def _chunk_infos(tx: Tx, handles: list[int]) -> list[dict]:
    infos = []
    for handle in handles:
        chunk = tx.chunk(handle)
        infos.append({"handle": handle, "index": chunk["index"], "version": chunk["version"],
                      "length": chunk["length"], "checksum": chunk["checksum"],
                      "replicas": chunk["replicas"]})
    return infos


def _describe(tx: Tx, path: str, ino: int) -> dict:
    record = tx.inode(ino)
    return {"path": path, "inode": ino, "type": record["type"], "size": record["size"],
            "mode": record["mode"], "owner": record["owner"], "ctime": record["ctime"],
            "mtime": record["mtime"], "replication": record["replication"],
            "storage_class": record["storage_class"], "chunk_size": record["chunk_size"],
            "chunks": _chunk_infos(tx, record["chunks"])}


# --- commands: handler(tx, validated fields) -> ok result; errors are raised --------------------

def _mkdir(tx: Tx, args: dict) -> dict:
    path = args["path"]
    if args["parents"]:
        _make_ancestors(tx, path, args)
    parent, name, existing = _locate(tx, path)
    if existing is not None:
        if args["parents"] and tx.is_dir(existing):
            return {"inode": existing}
        raise AlreadyExists(f"{path} already exists")
    return {"inode": _new_dir(tx, parent, name, args)}


def _make_ancestors(tx: Tx, path: str, args: dict) -> None:
    """mkdir -p: create the missing directories above `path`."""
    parts = paths.components(path)[:-1]
    ino = ROOT_INODE
    for i, name in enumerate(parts):
        child = _child(tx, ino, parts, i)
        ino = child if child is not None else _new_dir(tx, ino, name, args)


def _create(tx: Tx, args: dict) -> dict:
    path, now = args["path"], args["now"]
    parent, name, existing = _locate(tx, path)
    if existing is not None:
        _check_replaceable(tx, path, existing, args["overwrite"])
    ino = tx.allocate(NEXT_INODE)
    tx.put_inode(ino, _inode_record(FILE, args["mode"], args["owner"], now, args["replication"],
                                    _file_class(tx, parent, args), args["chunk_size"], PENDING))
    tx.put_pending(ino, {"parent": parent, "name": name, "path": path,
                         "overwrite": args["overwrite"], "created": now, "touched": now})
    return {"inode": ino}


def _touched(pending: dict) -> int:
    """The last activity of a pending upload (records written before `touched` existed have
    only `created`)."""
    return pending.get("touched", pending["created"])


def _add_chunk(tx: Tx, args: dict) -> dict:
    ino, index, now = args["inode"], args["index"], args["now"]
    if tx.pending(ino) is None and tx.inode(ino) is not None:
        raise FailedPrecondition(f"inode {ino} is not a pending upload")
    record, pending = _upload(tx, ino)
    handles = record["chunks"]
    if index > len(handles):
        raise FailedPrecondition(f"chunk index {index} is past the end of inode {ino} "
                                 f"({len(handles)} chunks so far)")
    if index < len(handles):
        # A retry of a failed chunk write: same handle, next version; replicas that still hold
        # an older version are stale.
        handle = handles[index]
        version = tx.chunk(handle)["version"]
        if version >= MAX_U64:
            raise FailedPrecondition(f"chunk {handle} is at the highest version {version}")
        version += 1
    else:
        handle, version = tx.allocate(NEXT_CHUNK), CHUNK_VERSION
        handles.append(handle)
        tx.put_inode(ino, record)
    tx.put_chunk(handle, {"inode": ino, "index": index, "version": version, "length": 0,
                          "checksum": 0, "replicas": args["replicas"]})
    pending["touched"] = now
    tx.put_pending(ino, pending)
    return {"handle": handle, "version": version}


def _commit(tx: Tx, args: dict) -> dict:
    ino, now = args["inode"], args["now"]
    record, pending = _upload(tx, ino)
    parent, name, path = pending["parent"], pending["name"], pending["path"]
    if tx.inode(parent) is None:
        raise NotFound(f"the directory of {path} was deleted during the upload")
    _check_commit_chunks(record, args["chunks"], args["size"])
    existing = tx.lookup(parent, name)
    if existing is not None:
        _check_replaceable(tx, path, existing, pending["overwrite"])
        _drop_inode(tx, existing, now)
    _seal_chunks(tx, args["chunks"])
    record.update(size=args["size"], mtime=now, state=COMMITTED)
    tx.put_inode(ino, record)
    tx.add_entry(parent, name, ino, now)
    tx.delete_pending(ino)
    return {"inode": ino}


def _drop_upload(tx: Tx, ino: int, stamp: int) -> None:
    """Forget a pending upload; its chunks go to garbage stamped `stamp`."""
    _drop_inode(tx, ino, stamp)
    tx.delete_pending(ino)


def _abort(tx: Tx, args: dict) -> dict:
    _upload(tx, args["inode"])
    _drop_upload(tx, args["inode"], args["now"])
    return {}


def _expire_uploads(tx: Tx, args: dict) -> dict:
    expired = []
    for ino in args["inodes"]:
        pending = tx.pending(ino)
        if pending is None or _touched(pending) > args["before"]:
            continue
        _drop_upload(tx, ino, _touched(pending))
        expired.append(ino)
    return {"expired": expired}


def _expire_sessions(tx: Tx, args: dict) -> dict:
    expired, more = tx.expire_sessions(args["before"], args["limit"])
    return {"expired": expired, "more": more}


def _set_replicas(tx: Tx, args: dict) -> dict:
    handle = args["handle"]
    chunk = tx.chunk(handle)
    if chunk is None or chunk["version"] != args["version"]:
        return {"updated": False}
    chunk["replicas"] = args["replicas"]
    tx.put_chunk(handle, chunk)
    return {"updated": True}


def _forget_garbage(tx: Tx, args: dict) -> dict:
    return {"forgotten": sum(1 for handle in args["handles"] if tx.forget_garbage(handle))}


def _rename(tx: Tx, args: dict) -> dict:
    src, dst, now = args["src"], args["dst"], args["now"]
    if paths.ROOT in (src, dst):
        raise InvalidArgument("the root directory cannot be renamed or replaced")
    src_parent, src_name, ino = _existing(tx, src)
    if src == dst:
        return {}
    moving_dir = tx.is_dir(ino)
    if moving_dir and paths.is_same_or_ancestor(src, dst):
        raise InvalidArgument(f"cannot move the directory {src} into its own subtree ({dst})")
    dst_parent, dst_name, existing = _locate(tx, dst)
    if existing is not None:
        _check_replaceable(tx, dst, existing, args["overwrite"], by_dir=moving_dir)
        _drop_inode(tx, existing, now)
    tx.remove_entry(src_parent, src_name, now)
    tx.add_entry(dst_parent, dst_name, ino, now)
    return {}


def _delete(tx: Tx, args: dict) -> dict:
    path, now = args["path"], args["now"]
    if path == paths.ROOT:
        raise InvalidArgument("the root directory cannot be deleted")
    parent, name, ino = _existing(tx, path)
    if not args["recursive"] and tx.is_dir(ino) and tx.has_entries(ino):
        raise FailedPrecondition(f"directory {path} is not empty")
    tx.remove_entry(parent, name, now)
    if not args.get("trash", False):
        return {"deleted": _remove_tree(tx, ino, now), "trash_id": 0}
    inodes, files, size = _tree_summary(tx, ino)
    trash_id = tx.allocate(NEXT_TRASH)
    tx.put_trash(trash_id, {"id": trash_id, "user": args.get("user", ANONYMOUS), "path": path,
                            "inode": ino, "type": tx.inode(ino)["type"], "size": size,
                            "files": files, "deleted": now})
    return {"deleted": inodes, "trash_id": trash_id}


def _user_label(user: str) -> str:
    return repr(user) if user != ANONYMOUS else "(anonymous)"


def _trash_restore(tx: Tx, args: dict) -> dict:
    trash_id, user = args["id"], args["user"]
    entry = tx.trash(trash_id)
    if entry is None or entry["user"] != user:
        raise NotFound(f"no trash entry {trash_id} for user {_user_label(user)}")
    target = args["dst"] or entry["path"]
    _make_ancestors(tx, target, args)
    parent, name, existing = _locate(tx, target)
    if existing is not None:
        raise AlreadyExists(f"{target} already exists: restore trash entry {trash_id} to another "
                            f"path (dst)")
    tx.add_entry(parent, name, entry["inode"], args["now"])
    tx.delete_trash(trash_id)
    return {"path": target, "inode": entry["inode"]}


def _trash_purge(tx: Tx, args: dict) -> dict:
    user, all_users, before = args["user"], args["all_users"], args["before"]
    if args["ids"]:
        found = (tx.trash(trash_id) for trash_id in dict.fromkeys(args["ids"]))
        entries = [entry for entry in found if entry is not None]
    else:
        entries = tx.trash_records()
    selected = [entry for entry in entries
                if (all_users or entry["user"] == user) and (before == 0 or entry["deleted"] <= before)]
    for entry in selected:
        _remove_tree(tx, entry["inode"], args["now"])
        tx.delete_trash(entry["id"])
    return {"purged": len(selected)}


def _barrier(tx: Tx, args: dict) -> dict:
    return {}


class _Op(NamedTuple):
    """An op's schema (required and optional fields, validated in this order) and handler."""
    required: dict[str, Check]
    handler: Callable[[Tx, dict], dict]
    optional: Mapping[str, Check] = MappingProxyType({})


_REPLICAS = list_of(text)

_OPS: dict[str, _Op] = {
    "mkdir": _Op({"path": path_field, "parents": boolean, "mode": MODE, "owner": text}, _mkdir),
    "create": _Op({"path": path_field, "replication": int_in(1, MAX_REPLICATION),
                   "storage_class": one_of("", *STORAGE_CLASSES), "chunk_size": chunk_size_field,
                   "mode": MODE, "owner": text, "overwrite": boolean}, _create,
                  optional={"default_class": one_of(*STORAGE_CLASSES)}),
    "note_reads": _Op({"reads": list_of(pair_of(INODE, int_in(0)))}, _note_reads),
    "set_class": _Op({"path": path_field, "storage_class": one_of("", *STORAGE_CLASSES),
                      "recursive": boolean}, _set_class),
    "add_chunk": _Op({"inode": INODE, "index": int_in(0), "replicas": _REPLICAS}, _add_chunk),
    "commit": _Op({"inode": INODE, "size": int_in(0),
                   "chunks": list_of(map_of({"handle": int_in(1), "length": int_in(0),
                                               "checksum": int_in(0)}))}, _commit),
    "abort": _Op({"inode": INODE}, _abort),
    "rename": _Op({"src": path_field, "dst": path_field, "overwrite": boolean}, _rename),
    "delete": _Op({"path": path_field, "recursive": boolean}, _delete,
                  optional={"trash": boolean, "user": text}),
    "set_replicas": _Op({"handle": int_in(1), "version": int_in(1), "replicas": _REPLICAS},
                        _set_replicas),
    "expire_uploads": _Op({"inodes": list_of(INODE), "before": int_in(0)}, _expire_uploads),
    "forget_garbage": _Op({"handles": list_of(int_in(1))}, _forget_garbage),
    "expire_sessions": _Op({"before": int_in(0), "limit": int_in(1, 1_000_000)},
                           _expire_sessions),
    "trash_restore": _Op({"id": int_in(1), "user": text, "dst": path_or_empty, "mode": MODE,
                          "owner": text}, _trash_restore),
    "trash_purge": _Op({"user": text, "all_users": boolean, "ids": list_of(int_in(1)),
                        "before": int_in(0)}, _trash_purge),
    "barrier": _Op({}, _barrier),
}


def _parse(command: dict) -> tuple[Callable[[Tx, dict], dict], dict]:
    """The handler and validated fields of a command (already known to be a map)."""
    if "op" not in command:
        raise InvalidArgument("missing field 'op'")
    op = command["op"]
    if not isinstance(op, str) or op not in _OPS:
        raise InvalidArgument(f"unknown op {show(op)}")
    spec = _OPS[op]
    return spec.handler, fields(command, {**COMMON, **spec.required},
                                 optional={**SESSION, **spec.optional})


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building a large table of fresh containers:
    its generational passes over a big heap would otherwise cost more than the table itself.
    Nothing built here is cyclic, so reference counting frees it all as usual."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# --- snapshot install --------------------------------------------------------------------------

def _check_env(directory: str) -> None:
    """DataLoss unless `directory` holds a metadata LMDB environment."""
    try:
        env = lmdb.open(directory, readonly=True, lock=False, max_dbs=MAX_DBS, subdir=True)
        try:
            with env.begin() as txn:
                present = txn.get(NEXT_INODE, db=env.open_db(b"meta", txn=txn, create=False))
        finally:
            env.close()
    except lmdb.Error as exc:
        raise DataLoss(f"not a metadata store copy: {exc}") from None
    if present is None:
        raise DataLoss("not a metadata store copy: no 'next_inode' counter")


def _recover_install(path: str) -> None:
    """Finish an install_copy that a crash interrupted after staging, else drop its leftovers.

    `path` is missing only between the two renames of _swap_in, when PATH.staged is complete;
    if PATH.staged is missing too, the crash came after the second rename and before the
    clean-up, so nothing but PATH.retired is left and it goes back in place."""
    if not os.path.exists(path):
        for candidate in (path + _STAGED, path + _RETIRED):
            if os.path.isdir(candidate):
                os.rename(candidate, path)
                break
    for leftover in (_INSTALLING, _STAGED, _RETIRED):
        shutil.rmtree(path + leftover, ignore_errors=True)


def _stage(mdb_file: str, path: str) -> str:
    """Write a durable, verified environment directory holding a copy of `mdb_file` next to
    `path`; return it (PATH.staged)."""
    installing, staged = path + _INSTALLING, path + _STAGED
    shutil.rmtree(installing, ignore_errors=True)
    os.makedirs(installing)
    try:
        target = os.path.join(installing, _DATA_FILE)
        shutil.copyfile(mdb_file, target)
        fsync_path(target)
        _check_env(installing)
        fsync_path(installing)
    except BaseException:
        shutil.rmtree(installing, ignore_errors=True)
        raise
    os.rename(installing, staged)
    fsync_path(os.path.dirname(path))
    return staged


def _swap_in(staged: str, path: str) -> None:
    """Replace the directory `path` by `staged` (two renames; see _recover_install)."""
    retired = path + _RETIRED
    if os.path.exists(path):
        os.rename(path, retired)
    os.rename(staged, path)
    fsync_path(os.path.dirname(path))
    shutil.rmtree(retired, ignore_errors=True)


# --- the state machine -------------------------------------------------------------------------

class MetadataState:
    """The replicated namespace: apply log entries, answer reads, copy and restore snapshots."""

    def __init__(self, path: str, map_size: int = 1 << 34, *, sync: bool = True):
        self.path = os.path.abspath(path)
        _recover_install(self.path)
        os.makedirs(self.path, exist_ok=True)
        self._env = lmdb.open(self.path, map_size=map_size, max_dbs=MAX_DBS, sync=sync, subdir=True)
        self._dbs = {name: self._env.open_db(name.encode()) for name in DB_NAMES}
        self._init_root()

    def _init_root(self) -> None:
        """Create the root of a fresh store, and what a store written by older code lacks (the
        `trash` db is created by opening it; the `next_trash` counter here)."""
        with self._env.begin(write=True) as txn:
            tx = Tx(txn, self._dbs)
            if tx.inode(ROOT_INODE) is None:
                tx.put_inode(ROOT_INODE, _inode_record(DIR, ROOT_MODE, ROOT_OWNER, 0))
                tx.set_counter(NEXT_INODE, ROOT_INODE + 1)
                tx.set_counter(NEXT_CHUNK, 1)
                tx.set_counter(APPLIED, 0)
            if tx.counter(NEXT_TRASH) == 0:
                tx.set_counter(NEXT_TRASH, FIRST_TRASH_ID)

    def close(self) -> None:
        self._env.close()

    def __enter__(self) -> MetadataState:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- applying ----------------------------------------------------------------------------

    def applied_index(self) -> int:
        with self._env.begin() as txn:
            return Tx(txn, self._dbs).counter(APPLIED)

    def apply(self, index: int, command: dict) -> dict | None:
        """Apply a log entry holding one command; None if the entry was already applied."""
        results = self.apply_batch(index, [command])
        return None if results is None else results[0]

    def apply_batch(self, index: int, commands: list[dict]) -> list[dict] | None:
        """Apply log entry `index` in one write transaction; None if it was already applied."""
        if type(index) is not int or index < 1:
            raise ValueError(f"a log index must be an int >= 1, not {index!r}")
        if not isinstance(commands, list):
            raise TypeError(f"commands must be a list, not {type(commands).__name__}")
        txn = self._env.begin(write=True)
        try:
            results = self._apply_entry(txn, index, commands)
        except BaseException:
            txn.abort()
            raise
        if results is None:
            txn.abort()
        else:
            txn.commit()
        return results

    def _apply_entry(self, txn: lmdb.Transaction, index: int, commands: list[dict]) -> list[dict] | None:
        tx = Tx(txn, self._dbs)
        if index <= tx.counter(APPLIED):
            return None
        results = [self._apply_command(txn, command) for command in commands]
        tx.set_counter(APPLIED, index)
        return results

    def _apply_command(self, txn: lmdb.Transaction, command: Any) -> dict:
        """Exactly-once wrapper around one command (docs/state-machine.md, Exactly-once)."""
        try:
            session = parse_session(command)
        except InvalidArgument as exc:
            return error_result(exc)
        tx = Tx(txn, self._dbs)
        if session is not None:
            stored = tx.session_result(session)
            if stored is not None:
                return stored
        result = self._execute(txn, command)
        if session is not None:
            now = command.get("now")
            tx.store_session(session, result,
                             now if isinstance(now, int) and 0 <= now <= MAX_U64 else 0)
            tx.prune_sessions(session.client_id, session.ack_seq)
        return result

    def _execute(self, txn: lmdb.Transaction, command: dict) -> dict:
        """Run one command in a child transaction, kept only if the command succeeds."""
        child = self._env.begin(write=True, parent=txn)
        try:
            handler, args = _parse(command)
            result = {"ok": handler(Tx(child, self._dbs), args)}
        except GfsError as exc:
            child.abort()
            return error_result(exc)
        except BaseException:
            child.abort()
            raise
        child.commit()
        return result

    # --- reads -------------------------------------------------------------------------------

    @contextmanager
    def _reader(self) -> Iterator[Tx]:
        """A read-only transaction wrapped as a Tx."""
        txn = self._env.begin()
        try:
            yield Tx(txn, self._dbs)
        finally:
            txn.abort()

    def stat(self, path: str) -> dict:
        path = paths.normalize(path)
        with self._reader() as tx:
            return _describe(tx, path, _resolve(tx, path))

    def list(self, path: str, start_after: str = "", limit: int = 1000) -> tuple[list[dict], str]:
        """One page of a directory's entries in name order, and the `start_after` of the next
        page ('' when this is the last). Listing a file returns that file alone."""
        path = paths.normalize(path)
        text("start_after", start_after)
        int_in(1)("limit", limit)
        with self._reader() as tx:
            ino = _resolve(tx, path)
            if not tx.is_dir(ino):
                return [_describe(tx, path, ino)], ""
            found = tx.entries(ino, start_after, limit + 1)
            page = found[:limit]
            entries = [_describe(tx, paths.join(path, name), child) for name, child in page]
            return entries, (page[-1][0] if len(found) > limit else "")

    def file_chunks(self, inode: int) -> list[dict]:
        """The chunks of inode `inode` (committed or pending) in index order."""
        INODE("inode", inode)
        with self._reader() as tx:
            record = tx.inode(inode)
            if record is None:
                raise NotFound(f"no inode {inode}")
            return _chunk_infos(tx, record["chunks"])

    def unreferenced(self, handles: list[int]) -> dict[int, int | None]:
        """Of `handles`, those no file (committed or pending) references, each with the time it
        became garbage, or None when the metadata never knew it (e.g. written, never logged)."""
        with self._reader() as tx:
            return {h: tx._get("garbage", u64key(h)) for h in handles
                    if tx._get("chunks", u64key(h)) is None}

    def session_count(self) -> int:
        """Exactly-once results stored."""
        with self._reader() as tx:
            return tx.count("sessions")

    def oldest_session_ms(self) -> int | None:
        """When the oldest stored exactly-once result was stored (None: there is none)."""
        with self._reader() as tx:
            for key, _ in tx.raw_items("session_times"):
                return U64.unpack(key[:8])[0]
            return None

    def garbage_before(self, before_ms: int, limit: int = 1000) -> list[int]:
        """Handles whose garbage record is at most `before_ms` old (oldest handles first)."""
        with self._reader() as tx:
            out = []
            for key, since in tx.records("garbage"):
                if since <= before_ms:
                    out.append(U64.unpack(key)[0])
                    if len(out) >= limit:
                        break
            return out

    def chunk_table(self) -> list[dict]:
        """Every referenced chunk (committed files, pending uploads and files in the trash) in
        handle order, with what the repair loop needs of its file."""
        table: list[dict] = []
        append, unpack = table.append, msgpack.unpackb          # hot loop: local names
        # inode -> (replication, committed, storage class, last read ms)
        files: dict[int, tuple[int, bool, str, int]] = {}
        with self._reader() as tx, _gc_paused():
            for key, data in tx.raw_items("chunks"):
                chunk = unpack(data, raw=False)
                ino = chunk["inode"]
                file = files.get(ino)
                if file is None:
                    record = tx.inode(ino)
                    file = files[ino] = (record["replication"], record["state"] == COMMITTED,
                                         record["storage_class"],
                                         record.get("atime", record["mtime"]))
                append({"handle": int.from_bytes(key, "big"), "version": chunk["version"],
                        "length": chunk["length"], "checksum": chunk["checksum"],
                        "replicas": chunk["replicas"], "inode": ino,
                        "replication": file[0], "committed": file[1],
                        "storage_class": file[2], "atime": file[3]})
        return table

    def pending_uploads(self) -> list[dict]:
        """Every pending upload in inode order."""
        with self._reader() as tx:
            uploads = []
            for key, pending in tx.records("pending"):
                ino = U64.unpack(key)[0]
                uploads.append({"inode": ino, "path": pending["path"], "created": pending["created"],
                                "touched": _touched(pending), "chunks": len(tx.inode(ino)["chunks"])})
            return uploads

    def trash_list(self, user: str | None) -> list[dict]:
        """The trash records of `user` (every user's when None), ordered by (deleted, id)."""
        if user is not None:
            text("user", user)
        with self._reader() as tx:
            records = [r for r in tx.trash_records() if user is None or r["user"] == user]
        return sorted(records, key=lambda r: (r["deleted"], r["id"]))

    def inode_record(self, inode: int) -> dict | None:
        """The raw record of inode `inode` (pending uploads included), or None."""
        INODE("inode", inode)
        with self._reader() as tx:
            return tx.inode(inode)

    def counts(self) -> dict:
        """Sizes of the namespace: inodes = dirs + files + pending (uploads not yet committed);
        dirs and files include those in the trash."""
        with self._reader() as tx:
            inodes, pending = tx.count("inodes"), tx.count("pending")
            dirs = sum(1 for record in tx.inode_records() if record["type"] == DIR)
            trash = tx.trash_records()
            return {"inodes": inodes, "dirs": dirs, "files": inodes - dirs - pending,
                    "pending": pending, "chunks": tx.count("chunks"), "garbage": tx.count("garbage"),
                    "trash": len(trash), "trash_bytes": sum(r["size"] for r in trash)}

    def dump(self) -> dict[str, list[tuple[bytes, bytes]]]:
        """Every database's raw (key, value) pairs: for tests and debugging."""
        with self._reader() as tx:
            return {name: tx.dump(name) for name in DB_NAMES}

    # --- snapshots ---------------------------------------------------------------------------

    def copy_to_fd(self, fd: int) -> None:
        """Write a consistent, compacted copy of data.mdb to the open file `fd`."""
        self._env.copyfd(fd, compact=True)

    @classmethod
    def install_copy(cls, mdb_file: str, path: str) -> None:
        """Atomically make `path` an environment directory holding a copy of `mdb_file` (made
        by copy_to_fd). The caller has closed any MetadataState open on `path`."""
        path = os.path.abspath(path)
        _recover_install(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _swap_in(_stage(mdb_file, path), path)


