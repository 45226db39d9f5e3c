"""The `compose` command: make one file of the chunks of others, without copying a byte.

`dest` becomes a committed file whose chunks are the sources' chunks in the order given, and
the sources leave the namespace, all in one log entry. Ownership of each chunk moves (its
record's `inode` and `index` change): no chunk is ever shared by two files, so nothing needs
reference counts, and no chunk passes through `garbage` (garbage collection never sees a moved
chunk as unreferenced). The chunks keep their lengths, which need not be equal: a composed
file is the first kind of file whose chunks may be shorter than its chunk size anywhere, not
only at the end (readers find offsets by summing lengths: gfs/client.py `_with_offsets`).

The S3 gateway uses it to complete multipart uploads: each part is a file of its own, and
completion composes them.
"""
from __future__ import annotations

from gfs import paths
from gfs.auth.checker import DELETE, READ, WRITE, Principal
from gfs.errors import FailedPrecondition, InvalidArgument, NotFound
from master import usage
from master.access import Access, access_dir, authorize, child_access, new_owner, writable_dir
from master.identity import SYSTEM, user
from master.namespace import (COMMITTED, DEFAULT_CLASS, check_replaceable, drop_inode,
                              inode_record)
from master.store import DIR, FILE, NEXT_INODE, Tx

MAX_SOURCES = 10_000              # S3 allows 10,000 parts
MAX_CHUNKS = 100_000              # chunks of one composed file (its record holds the list)


class _Source:
    """A source file, resolved and authorized."""

    def __init__(self, path: str, parent: Access, name: str, target: Access):
        self.path, self.parent, self.name = path, parent, name
        self.ino, self.record = target.ino, target.record


def _being_written(tx: Tx, caller: Principal, path: str) -> bool:
    """Is there a pending upload of the caller's (any, for an administrator) to `path`? Only
    asked once a source is missing, to say why."""
    return any(pending["path"] == path and (caller.admin or pending.get("creator") == caller.user)
               for _, pending in tx.records("pending"))


def _resolve_source(tx: Tx, caller: Principal, path: str) -> _Source:
    parent_path, name = paths.split(path)
    if not name:
        raise InvalidArgument("the root directory cannot be a source")
    parent = access_dir(tx, parent_path)
    ino = tx.lookup(parent.ino, name)
    if ino is None:
        if _being_written(tx, caller, path):
            raise FailedPrecondition(f"source {path} is still being written (its upload has not "
                                     "committed)")
        raise NotFound(f"source {path}: no such file")
    target = child_access(parent, ino, tx.inode(ino))
    authorize(caller, READ, path, target)
    authorize(caller, DELETE, path, target)
    if target.record["type"] == DIR:
        raise FailedPrecondition(f"source {path} is a directory")
    return _Source(path, parent, name, target)


def _check_sources(sources: list[str]) -> None:
    if not sources:
        raise InvalidArgument("compose needs at least one source")
    if len(sources) > MAX_SOURCES:
        raise InvalidArgument(f"too many sources: {len(sources)} (at most {MAX_SOURCES})")
    seen: set[str] = set()
    for path in sources:
        if path in seen:
            raise InvalidArgument(f"source {path} is named more than once")
        seen.add(path)


def _take(tx: Tx, source: _Source, now: int) -> None:
    """Unlink a source and drop its inode record, keeping its chunks (they change owner)."""
    usage.detach(tx, source.parent.ino, source.ino)
    tx.remove_entry(source.parent.ino, source.name, now)
    usage.forget_file(tx, source.record)
    tx.delete_inode(source.ino)


def compose(tx: Tx, args: dict) -> dict:
    """Make `dest` the concatenation of `sources` (committed files, each removed)."""
    dest, sources, now, caller = args["dest"], args["sources"], args["now"], args["caller"]
    _check_sources(sources)
    if dest == paths.ROOT:
        raise InvalidArgument("the root directory cannot be replaced")
    found = [_resolve_source(tx, caller, path) for path in sources]
    handles = [handle for s in found for handle in s.record["chunks"]]
    if len(handles) > MAX_CHUNKS:
        raise InvalidArgument(f"the composed file would have {len(handles)} chunks (at most "
                              f"{MAX_CHUNKS})")
    size = sum(s.record["size"] for s in found)
    dest_parent_path, dest_name = paths.split(dest)
    dest_parent = writable_dir(tx, caller, dest_parent_path)
    existing = tx.lookup(dest_parent.ino, dest_name)
    replaced = None
    if existing is not None and not any(s.ino == existing for s in found):
        check_replaceable(tx, dest, existing, args["overwrite"])
        replaced = child_access(dest_parent, existing, tx.inode(existing))
        authorize(caller, WRITE, dest, replaced)
    owner = new_owner(caller, dest_parent.record, args["owner"], SYSTEM.user)
    _check_quota(tx, owner, size, found, replaced.record if replaced else None)

    for source in found:
        _take(tx, source, now)
    if replaced is not None:
        usage.detach(tx, dest_parent.ino, replaced.ino)
        tx.remove_entry(dest_parent.ino, dest_name, now)
        drop_inode(tx, replaced.ino, now)
    ino = tx.allocate(NEXT_INODE)
    record = inode_record(FILE, args["mode"], owner, now,
                          max(s.record["replication"] for s in found),
                          _storage_class(tx, dest_parent.ino, args),
                          max(s.record["chunk_size"] for s in found), COMMITTED)
    record.update(chunks=handles, size=size)
    tx.put_inode(ino, record)
    for index, handle in enumerate(handles):
        chunk = tx.chunk(handle)
        chunk.update(inode=ino, index=index)
        tx.put_chunk(handle, chunk)
    tx.add_entry(dest_parent.ino, dest_name, ino, now)
    usage.charge(tx, owner, size, 1)
    usage.propagate(tx, dest_parent.ino, size, 1)
    return {"inode": ino, "size": size, "chunks": len(handles)}


def _storage_class(tx: Tx, parent: int, args: dict) -> str:
    return (args["storage_class"] or tx.inode(parent).get("storage_class", "")
            or args.get("default_class", DEFAULT_CLASS))


def _check_quota(tx: Tx, owner: str, size: int, found: list[_Source],
                 replaced: dict | None) -> None:
    """The new file counts against `owner`; what leaves that owner (their sources, the file
    replaced) counts for them."""
    record = user(tx, owner)
    leaving = [s.record for s in found if s.record["owner"] == owner]
    if replaced is not None and replaced["owner"] == owner and replaced["state"] == COMMITTED:
        leaving.append(replaced)
    usage.check_quota(tx, owner, record["quota"] if record else None, size, 1,
                      (sum(r["size"] for r in leaving), len(leaving)))
