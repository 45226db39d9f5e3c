"""Namespace commands of the state machine: handler(tx, validated fields) -> ok result; errors
are raised. `args["caller"]` is the Principal the command runs as (see master/identity.py):
every handler authorizes against the state it applies to, through master/access.py, and keeps
directory totals and per-owner usage current through master/usage.py."""
from __future__ import annotations

from gfs import paths
from gfs.auth.checker import DELETE, LIST, PRIVATE, READ, SHARE, WRITE, Principal
from gfs.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from master import usage
from master.access import (ROOT_OWNER, Access, access, access_dir, authorize, child_access,
                           may_see, new_owner, writable_dir)
from master.identity import SYSTEM, changed, require_admin, user
from master.store import DIR, DIRS, FILE, MAX_U64, NEXT_INODE, NEXT_CHUNK, NEXT_TRASH, ROOT_INODE, Tx

COMMITTED, PENDING = "committed", "pending"
STORAGE_CLASSES = ("hot", "cold", "auto")
DEFAULT_CLASS = "hot"
CHUNK_VERSION = 1             # version of a freshly allocated chunk
ROOT_MODE = 0o755
ANONYMOUS = ""                # the user of trash entries made without one


# --- helpers -----------------------------------------------------------------------------------

def check_replaceable(tx: Tx, path: str, existing: int, overwrite: bool, by_dir: bool = False) -> None:
    """May a new entry take `path`, held by `existing`? Only with overwrite, and file by file."""
    if not overwrite:
        raise AlreadyExists(f"{path} already exists")
    if tx.is_dir(existing):
        raise FailedPrecondition(f"{path} is a directory and cannot be overwritten")
    if by_dir:
        raise FailedPrecondition(f"a directory cannot overwrite the file {path}")


def inode_record(kind: str, mode: int, owner: str, now: int, replication: int = 0,
                 storage_class: str = "", chunk_size: int = 0, state: str = COMMITTED) -> dict:
    record = {"type": kind, "mode": mode, "owner": owner, "ctime": now, "mtime": now, "size": 0,
              "replication": replication, "storage_class": storage_class,
              "chunk_size": chunk_size, "chunks": [], "state": state}
    if kind == DIR:
        record["du"] = [0, 0]
    return record


def new_dir(tx: Tx, parent: int, name: str, args: dict, owner: str | None = None) -> int:
    """A new directory inherits its parent's storage class ("" when the parent has none) and,
    unless `owner` is given, gets the owner `access.new_owner` picks."""
    ino = tx.allocate(NEXT_INODE)
    above = tx.inode(parent)
    if owner is None:
        owner = new_owner(args["caller"], above, args.get("owner", ""), SYSTEM.user)
    record = inode_record(DIR, args["mode"], owner, args["now"],
                          storage_class=above.get("storage_class", ""))
    record["parent"] = parent
    tx.put_inode(ino, record)
    tx.set_counter(DIRS, tx.counter(DIRS) + 1)
    tx.add_entry(parent, name, ino, args["now"])
    return ino


def file_class(tx: Tx, parent: int, args: dict) -> str:
    """A new file's storage class: the one asked for, else its directory's, else the default."""
    return (args["storage_class"] or tx.inode(parent).get("storage_class", "")
            or args.get("default_class", DEFAULT_CLASS))


def drop_inode(tx: Tx, ino: int, now: int) -> dict:
    """Delete one inode record for good, sending a file's chunks to garbage and taking it off
    its owner's usage; return the record."""
    record = tx.inode(ino)
    tx.discard_chunks(record["chunks"], now)
    if record.get("inline") is not None:
        tx.delete_inline(ino)
    usage.forget_file(tx, record)
    tx.delete_inode(ino)
    if record["type"] == DIR:
        tx.set_counter(DIRS, tx.counter(DIRS) - 1)
    return record


def remove_tree(tx: Tx, ino: int, now: int) -> int:
    """Delete `ino` and everything below it (its own entry is the caller's); count the inodes."""
    removed, stack = 0, [ino]
    while stack:
        current = stack.pop()
        if tx.is_dir(current):
            stack.extend(reversed(tx.drop_entries(current)))
        drop_inode(tx, current, now)
        removed += 1
    return removed


def smaller_than(tx: Tx, ino: int, limit: int) -> bool:
    """Does the tree at `ino` have fewer than `limit` inodes? Reads at most `limit` entries
    (each directory's only up to what is left to count: a directory of a million entries was
    read whole, holding the apply thread ~10 s; bench/namespace_scale.py)."""
    count, stack = 0, [ino]
    while stack:
        current = stack.pop()
        count += 1
        if count >= limit:
            return False
        if tx.is_dir(current):
            stack.extend(child for _, child in tx.entries(current, limit=limit - count))
    return True


def queue_reap(tx: Tx, record: dict) -> None:
    """Hand a detached tree (its trash record, new or from the trash) to the `reap` command:
    it is no longer anyone's trash (not listed, not restorable) and goes a bounded slice per
    command, so the apply thread never spends long on one huge tree."""
    tx.put_trash(record["id"], {**record, "reaping": True})


def reap(tx: Tx, args: dict) -> dict:
    """Remove at most `limit` inodes of the trees queued by queue_reap, deepest first (a leaf
    at a time, so what is left is always one whole tree hanging from its record); a tree's
    record goes with its root. Returns how many inodes went and whether any tree is left."""
    budget, now = args["limit"], args["now"]
    removed = 0
    for record in tx.trash_records():
        if not record.get("reaping"):
            continue
        while budget > 0:
            parent, name, leaf = None, "", record["inode"]
            while tx.is_dir(leaf):
                first = tx.entries(leaf, limit=1)
                if not first:
                    break
                parent, (name, leaf) = leaf, first[0]
            if parent is not None:
                tx.remove_entry(parent, name, now)
            drop_inode(tx, leaf, now)
            removed += 1
            budget -= 1
            if parent is None:
                tx.delete_trash(record["id"])
                break
        if budget == 0:
            break
    left = any(r.get("reaping") for r in tx.trash_records())
    return {"removed": removed, "left": left}


def _walk(tx: Tx, ino: int):
    """`ino` and every inode below it: (inode, record)."""
    stack = [ino]
    while stack:
        current = stack.pop()
        record = tx.inode(current)
        yield current, record
        if record["type"] == DIR:
            stack.extend(child for _, child in tx.entries(current))


def tree_summary(tx: Tx, ino: int) -> tuple[int, int, int]:
    """(inodes, files, bytes) of `ino` and everything below it; bytes sums the file sizes."""
    inodes = files = size = 0
    for _, record in _walk(tx, ino):
        inodes += 1
        if record["type"] != DIR:
            files += 1
            size += record["size"]
    return inodes, files, size


def _deleted_totals(tx: Tx, ino: int, record: dict, reap_over: int) -> tuple[int, int, int]:
    """(inodes, files, bytes) of a tree going to the trash. A small one is walked
    (tree_summary); one of `reap_over` inodes or more is not — walking a million inodes would
    hold the apply thread for seconds — and takes its committed files and bytes from the
    directory totals kept up to date on every change (usage.py), its files standing for its
    inodes (as a big tree's delete reports them)."""
    if not reap_over or smaller_than(tx, ino, reap_over):
        return tree_summary(tx, ino)
    size, files = usage.totals(record)
    return files, files, size


def touched(pending: dict) -> int:
    """The last activity of a pending upload (records written before `touched` existed have
    only `created`)."""
    return pending.get("touched", pending["created"])


def _upload(tx: Tx, ino: int, caller: Principal) -> tuple[dict, dict]:
    """(inode record, pending record) of a pending upload of the caller's (an administrator's
    or the leader's: any)."""
    pending = tx.pending(ino)
    if pending is None or not (caller.admin or pending.get("creator") == caller.user):
        raise NotFound(f"inode {ino} is not a pending upload")
    return tx.inode(ino), pending


def upload_chunks(tx: Tx, caller: Principal, ino: int) -> list[dict]:
    """The chunks allocated so far to a pending upload of the caller's, in order."""
    record, _ = _upload(tx, ino, caller)
    return [{**tx.chunk(handle), "handle": handle} for handle in record["chunks"]]


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


def _chunk_info(handle: int, chunk: dict) -> dict:
    return {"handle": handle, "index": chunk["index"], "version": chunk["version"],
            "length": chunk["length"], "checksum": chunk["checksum"],
            "replicas": chunk["replicas"]}


def chunk_infos(tx: Tx, handles: list[int]) -> list[dict]:
    return [_chunk_info(handle, tx.chunk(handle)) for handle in handles]


def chunk_infos_in(tx: Tx, handles: list[int], lo: int, hi: int) -> list[dict]:
    """The chunks holding bytes [lo, hi) of a file, each with its `offset` in the file. Chunks
    may differ in length anywhere (master/compose.py), so offsets are summed from the first; no
    chunk past `hi` is read."""
    infos, pos = [], 0
    for handle in handles:
        if pos >= hi:
            break
        chunk = tx.chunk(handle)
        end = pos + chunk["length"]
        if end > lo:
            info = _chunk_info(handle, chunk)
            info["offset"] = pos
            infos.append(info)
        pos = end
    return infos


def describe(tx: Tx, path: str, target: Access, with_chunks: bool = True) -> dict:
    """A path's stat dict; without `with_chunks`, its chunk list is left empty (a brief
    listing: no chunk record read)."""
    record = target.record
    return {"path": path, "inode": target.ino, "type": record["type"], "size": record["size"],
            "mode": record["mode"], "owner": record["owner"], "ctime": record["ctime"],
            "mtime": record["mtime"], "replication": record["replication"],
            "storage_class": record["storage_class"], "chunk_size": record["chunk_size"],
            "visibility": target.visibility, "own_visibility": record.get("visibility", ""),
            "xattrs": record.get("xattrs", {}),
            "chunks": chunk_infos(tx, record["chunks"]) if with_chunks and record["chunks"] else [],
            "inline": record.get("inline")}


def _quota(tx: Tx, owner: str, add_bytes: int, replacing: dict | None) -> None:
    record = user(tx, owner)
    old = (replacing["size"], 1) if replacing and replacing["state"] == COMMITTED else (0, 0)
    usage.check_quota(tx, owner, record["quota"] if record else None, add_bytes, 1, old)


# --- commands ----------------------------------------------------------------------------------

def mkdir(tx: Tx, args: dict) -> dict:
    path, caller = args["path"], args["caller"]
    if path == paths.ROOT:
        if args["parents"]:
            return {"inode": ROOT_INODE}
        raise AlreadyExists("/ already exists")
    if args["parents"]:
        make_ancestors(tx, path, args)
    parent_path, name = paths.split(path)
    parent = access(tx, parent_path)
    existing = tx.lookup(parent.ino, name) if parent.record["type"] == DIR else None
    if existing is not None and args["parents"]:
        found = child_access(parent, existing, tx.inode(existing))
        if found.record["type"] == DIR and may_see(caller, path, found):
            return {"inode": existing}
    writable_dir(tx, caller, parent_path)
    if existing is not None:
        raise AlreadyExists(f"{path} already exists")
    return {"inode": new_dir(tx, parent.ino, name, args)}


def make_ancestors(tx: Tx, path: str, args: dict) -> None:
    """mkdir -p: create the missing directories above `path`, where the caller may write."""
    parts = paths.components(path)[:-1]
    ino = ROOT_INODE
    for i, name in enumerate(parts):
        if not tx.is_dir(ino):
            raise FailedPrecondition(f"{'/' + '/'.join(parts[:i])} is not a directory")
        child = tx.lookup(ino, name)
        if child is None:
            writable_dir(tx, args["caller"], "/" + "/".join(parts[:i]))
            child = new_dir(tx, ino, name, args)
        ino = child


def new_file_place(tx: Tx, args: dict, size: int) -> tuple[Access, str, int | None, str]:
    """Where a new file of `size` bytes goes at `args["path"]`, checked (the directory
    writable, an existing file replaceable and writable, the owner's quota): (parent, name,
    the inode it replaces or None, owner)."""
    path, caller = args["path"], args["caller"]
    parent_path, name = paths.split(path)
    if not name:
        check_replaceable(tx, path, ROOT_INODE, args["overwrite"])
    parent = writable_dir(tx, caller, parent_path)
    existing = tx.lookup(parent.ino, name)
    replaced = None
    if existing is not None:
        check_replaceable(tx, path, existing, args["overwrite"])
        replaced = tx.inode(existing)
        authorize(caller, WRITE, path, child_access(parent, existing, replaced))
    owner = new_owner(caller, parent.record, args["owner"], SYSTEM.user)
    _quota(tx, owner, size, replaced)
    return parent, name, existing, owner


def create(tx: Tx, args: dict) -> dict:
    path, now, caller = args["path"], args["now"], args["caller"]
    parent, name, _, owner = new_file_place(tx, args, args.get("size", 0))
    ino = tx.allocate(NEXT_INODE)
    tx.put_inode(ino, inode_record(FILE, args["mode"], owner, now, args["replication"],
                                   file_class(tx, parent.ino, args), args["chunk_size"], PENDING))
    tx.put_pending(ino, {"parent": parent.ino, "name": name, "path": path,
                         "overwrite": args["overwrite"], "created": now, "touched": now,
                         "creator": caller.user})
    if "first_chunk" not in args:
        return {"inode": ino}
    # Chunk 0 in the same command (CreateRequest.first_chunk), placed on these replicas.
    chunk = add_chunk(tx, {"inode": ino, "index": 0, "replicas": args["first_chunk"],
                           "now": now, "caller": caller})
    return {"inode": ino, **chunk}


def add_chunk(tx: Tx, args: dict) -> dict:
    ino, index, now = args["inode"], args["index"], args["now"]
    if tx.pending(ino) is None and tx.inode(ino) is not None and args["caller"].admin:
        raise FailedPrecondition(f"inode {ino} is not a pending upload")
    record, pending = _upload(tx, ino, args["caller"])
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


def commit(tx: Tx, args: dict) -> dict:
    """Publish an upload: authorized and quota-checked again at this point of the log."""
    ino, now, caller = args["inode"], args["now"], args["caller"]
    record, pending = _upload(tx, ino, caller)
    parent, name, path = pending["parent"], pending["name"], pending["path"]
    above = tx.inode(parent)
    if above is None:
        raise NotFound(f"the directory of {path} was deleted during the upload")
    authorize(caller, WRITE, paths.split(path)[0], Access(parent, above, PRIVATE))
    _check_commit_chunks(record, args["chunks"], args["size"])
    existing = tx.lookup(parent, name)
    replaced = tx.inode(existing) if existing is not None else None
    if existing is not None:
        check_replaceable(tx, path, existing, pending["overwrite"])
    _quota(tx, record["owner"], args["size"], replaced)
    if existing is not None:
        usage.detach(tx, parent, existing)
        drop_inode(tx, existing, now)
    _seal_chunks(tx, args["chunks"])
    record.update(size=args["size"], mtime=now, state=COMMITTED)
    if args.get("xattrs"):
        record["xattrs"] = args["xattrs"]     # the S3 gateway's object attributes (ETag...)
    tx.put_inode(ino, record)
    tx.add_entry(parent, name, ino, now)
    tx.delete_pending(ino)
    usage.charge(tx, record["owner"], args["size"], 1)
    usage.propagate(tx, parent, args["size"], 1)
    return {"inode": ino, "path": path}


def drop_upload(tx: Tx, ino: int, stamp: int) -> None:
    """Forget a pending upload; its chunks go to garbage stamped `stamp`."""
    drop_inode(tx, ino, stamp)
    tx.delete_pending(ino)


def abort(tx: Tx, args: dict) -> dict:
    _upload(tx, args["inode"], args["caller"])
    drop_upload(tx, args["inode"], args["now"])
    return {}


def expire_uploads(tx: Tx, args: dict) -> dict:
    expired = []
    for ino in args["inodes"]:
        pending = tx.pending(ino)
        if pending is None or touched(pending) > args["before"]:
            continue
        drop_upload(tx, ino, touched(pending))
        expired.append(ino)
    return {"expired": expired}


def rename(tx: Tx, args: dict) -> dict:
    src, dst, now, caller = args["src"], args["dst"], args["now"], args["caller"]
    if paths.ROOT in (src, dst):
        raise InvalidArgument("the root directory cannot be renamed or replaced")
    src_parent = access_dir(tx, paths.split(src)[0])
    ino = tx.lookup(src_parent.ino, paths.split(src)[1])
    if ino is None:
        raise NotFound(f"{src}: no such file or directory")
    moving = child_access(src_parent, ino, tx.inode(ino))
    authorize(caller, DELETE, src, moving)
    if src == dst:
        return {}
    moving_dir = moving.record["type"] == DIR
    if moving_dir and paths.is_same_or_ancestor(src, dst):
        raise InvalidArgument(f"cannot move the directory {src} into its own subtree ({dst})")
    dst_parent_path, dst_name = paths.split(dst)
    dst_parent = writable_dir(tx, caller, dst_parent_path)
    existing = tx.lookup(dst_parent.ino, dst_name)
    if existing is not None:
        check_replaceable(tx, dst, existing, args["overwrite"], by_dir=moving_dir)
        authorize(caller, WRITE, dst, child_access(dst_parent, existing, tx.inode(existing)))
        usage.detach(tx, dst_parent.ino, existing)
        drop_inode(tx, existing, now)
    usage.detach(tx, src_parent.ino, ino)
    tx.remove_entry(src_parent.ino, paths.split(src)[1], now)
    tx.add_entry(dst_parent.ino, dst_name, ino, now)
    usage.attach(tx, dst_parent.ino, ino)
    return {}


def delete(tx: Tx, args: dict) -> dict:
    path, now, caller = args["path"], args["now"], args["caller"]
    if path == paths.ROOT:
        raise InvalidArgument("the root directory cannot be deleted")
    target = access(tx, path)
    authorize(caller, DELETE, path, target)
    parent_path, name = paths.split(path)
    parent, ino = access(tx, parent_path).ino, target.ino
    if not args["recursive"] and target.record["type"] == DIR and tx.has_entries(ino):
        raise FailedPrecondition(f"directory {path} is not empty")
    usage.detach(tx, parent, ino)
    tx.remove_entry(parent, name, now)
    who = args.get("user", ANONYMOUS) if caller is SYSTEM else caller.user
    if not args.get("trash", False):
        reap_over = args.get("reap_over", 0)
        if not reap_over or smaller_than(tx, ino, reap_over):
            return {"deleted": remove_tree(tx, ino, now), "trash_id": 0}
        # A big tree: gone from the namespace now (this command), removed by `reap` commands.
        size, files = usage.totals(target.record)
        queue_reap(tx, {"id": tx.allocate(NEXT_TRASH), "user": who, "path": path,
                        "inode": ino, "type": target.record["type"], "size": size,
                        "files": files, "deleted": now})
        return {"deleted": files, "trash_id": 0}
    inodes, files, size = _deleted_totals(tx, ino, target.record, args.get("reap_over", 0))
    trash_id = tx.allocate(NEXT_TRASH)
    tx.put_trash(trash_id, {"id": trash_id, "user": who, "path": path, "inode": ino,
                            "type": target.record["type"], "size": size, "files": files,
                            "deleted": now})
    return {"deleted": inodes, "trash_id": trash_id}


def _trash_user(args: dict) -> str | None:
    """Whose trash a command works on: the caller's own; an administrator (or the leader) names
    any user, and None means every user's."""
    caller = args["caller"]
    if args.get("all_users"):
        require_admin(caller, "every user's trash")
        return None
    if caller is SYSTEM or (caller.admin and args["user"]):
        return args["user"]
    return caller.user


def _user_label(user: str) -> str:
    return repr(user) if user != ANONYMOUS else "(anonymous)"


def trash_restore(tx: Tx, args: dict) -> dict:
    trash_id, user = args["id"], _trash_user(args)
    entry = tx.trash(trash_id)
    if entry is None or entry["user"] != user or entry.get("reaping"):
        raise NotFound(f"no trash entry {trash_id} for user {_user_label(user)}")
    target = args["dst"] or entry["path"]
    make_ancestors(tx, target, args)
    parent_path, name = paths.split(target)
    if not name:
        raise AlreadyExists(f"/ already exists: restore trash entry {trash_id} to another path (dst)")
    parent = writable_dir(tx, args["caller"], parent_path)
    if tx.lookup(parent.ino, name) is not None:
        raise AlreadyExists(f"{target} already exists: restore trash entry {trash_id} to another "
                            f"path (dst)")
    tx.add_entry(parent.ino, name, entry["inode"], args["now"])
    usage.attach(tx, parent.ino, entry["inode"])
    tx.delete_trash(trash_id)
    return {"path": target, "inode": entry["inode"]}


def trash_purge(tx: Tx, args: dict) -> dict:
    user, before = _trash_user(args), args["before"]
    if args["ids"]:
        found = (tx.trash(trash_id) for trash_id in dict.fromkeys(args["ids"]))
        entries = [entry for entry in found if entry is not None]
    else:
        entries = tx.trash_records()
    selected = [entry for entry in entries
                if not entry.get("reaping") and (user is None or entry["user"] == user)
                and (before == 0 or entry["deleted"] <= before)]
    reap_over = args.get("reap_over", 0)
    for entry in selected:
        if reap_over and not smaller_than(tx, entry["inode"], reap_over):
            queue_reap(tx, entry)           # a big tree: removed by `reap` commands
            continue
        remove_tree(tx, entry["inode"], args["now"])
        tx.delete_trash(entry["id"])
    return {"purged": len(selected)}


def set_class(tx: Tx, args: dict) -> dict:
    """Set the storage class of a file, or of a directory (inherited by what is created in it
    later; "" = none); with `recursive`, of every directory and file below it too ("" then
    clears the directories' classes and leaves the files' as they are)."""
    path, cls = args["path"], args["storage_class"]
    target = access(tx, path)
    authorize(args["caller"], WRITE, path, target)
    ino = target.ino
    if target.record["type"] != DIR and not cls:
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


def set_attr(tx: Tx, args: dict) -> dict:
    """chmod / touch: set the permission bits and/or the modification time of a file or
    directory, for whoever may write it (the bits are kept for tools such as rsync; access is
    decided by owner, visibility and token scopes, not by them)."""
    path = args["path"]
    target = access(tx, path)
    authorize(args["caller"], WRITE, path, target)
    record = target.record
    for field, key in (("mode", "mode"), ("mtime_ms", "mtime")):
        if field in args:
            record[key] = args[field]
    tx.put_inode(target.ino, record)
    return {"mode": record["mode"], "mtime_ms": record["mtime"]}


def set_visibility(tx: Tx, args: dict) -> dict:
    """Give a file or directory its own visibility ("" = inherit from above again)."""
    path = args["path"]
    target = access(tx, path)
    authorize(args["caller"], SHARE, path, target)
    record = target.record
    if args["visibility"]:
        record["visibility"] = args["visibility"]
    else:
        record.pop("visibility", None)
    tx.put_inode(target.ino, record)
    changed(tx, "visibility", path, {"visibility": args["visibility"], "owner": record["owner"]})
    return {"path": path, "visibility": args["visibility"]}


def chown(tx: Tx, args: dict) -> dict:
    """An administrator gives a file or tree another owner (usage moves with it)."""
    require_admin(args["caller"], "changing an owner")
    target = access(tx, args["path"])
    changed = 0
    for ino, record in (_walk(tx, target.ino) if args["recursive"] else [(target.ino, target.record)]):
        if record["owner"] == args["owner"]:
            continue
        if record["type"] != DIR and record["state"] == COMMITTED:
            usage.charge(tx, record["owner"], -record["size"], -1)
            usage.charge(tx, args["owner"], record["size"], 1)
        record["owner"] = args["owner"]
        tx.put_inode(ino, record)
        changed += 1
    return {"changed": changed}


def make_home(tx: Tx, name: str, now: int) -> str:
    """A new user's own namespace: /NAME, private, owned by them (an existing directory of
    nobody's is adopted)."""
    path = paths.join(paths.ROOT, name)
    existing = tx.lookup(ROOT_INODE, name)
    if existing is None:
        ino = new_dir(tx, ROOT_INODE, name, {"mode": ROOT_MODE, "now": now}, owner=name)
    else:
        record = tx.inode(existing)
        if record["type"] != DIR or record["owner"] not in ("", ROOT_OWNER, name):
            raise FailedPrecondition(f"{path} already exists and belongs to {record['owner']!r}")
        ino = existing
    record = tx.inode(ino)
    record["owner"], record["visibility"] = name, PRIVATE
    tx.put_inode(ino, record)
    return path


def note_reads(tx: Tx, args: dict) -> dict:
    """Record when files' data was last read (batched by the leader, for `auto` tiering)."""
    noted = 0
    for ino, when in args["reads"]:
        record = tx.inode(ino)
        if record is not None and record["type"] == FILE and when > record.get("atime", 0):
            record["atime"] = when
            tx.put_inode(ino, record)
            noted += 1
    return {"noted": noted}


# --- reads -------------------------------------------------------------------------------------

def stat(tx: Tx, caller: Principal, path: str, for_read: bool = False,
         span: tuple[int, int] | None = None) -> dict:
    """`span` (offset, length): only the chunks holding those bytes, and `chunk_span` (first,
    end) saying which bytes they cover."""
    target = access(tx, path)
    authorize(caller, READ if for_read and target.record["type"] != DIR else LIST, path, target)
    info = describe(tx, path, target, span is None)
    if span is not None and target.record["type"] != DIR:
        size = target.record["size"]
        lo = min(span[0], size)
        hi = max(lo, min(size, span[0] + span[1]))
        info["chunks"] = chunk_infos_in(tx, target.record["chunks"], lo, hi) if hi > lo else []
        info["chunk_span"] = (lo, hi)
    if for_read and info["inline"] is not None:        # master/inline.py: the bytes too
        info["data"] = tx.inline_data(target.ino)
    return info


def list_page(tx: Tx, caller: Principal, path: str, start_after: str,
              limit: int, brief: bool = False) -> tuple[list[dict], str]:
    """One page of the entries of directory `path` the caller may see, in name order, and the
    `start_after` of the next page ('' when this is the last). A file lists as itself.
    `brief`: entries without their chunk lists."""
    target = access(tx, path)
    authorize(caller, LIST, path, target)
    if target.record["type"] != DIR:
        return [describe(tx, path, target, not brief)], ""
    out: list[dict] = []
    after = start_after
    prefix = path.rstrip(paths.SEP) + paths.SEP     # names in the store were checked when made
    while True:
        batch = tx.entries(target.ino, after, limit + 1)
        records = tx.inodes([child for _, child in batch])
        for (name, child), record in zip(batch, records):
            entry_path = prefix + name
            entry = child_access(target, child, record)
            if not may_see(caller, entry_path, entry):
                continue
            if len(out) == limit:
                return out, out[-1]["path"].rsplit("/", 1)[1]
            out.append(describe(tx, entry_path, entry, not brief))
        if len(batch) <= limit:
            return out, ""
        after = batch[-1][0]


def du(tx: Tx, caller: Principal, path: str) -> dict:
    """(bytes, files) of the committed files at or below `path`, kept by the state machine."""
    target = access(tx, path)
    authorize(caller, LIST, path, target)
    size, files = usage.totals(target.record)
    return {"path": path, "bytes": size, "files": files, "type": target.record["type"]}
