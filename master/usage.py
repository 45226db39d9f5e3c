"""What the namespace holds, kept up to date by the state machine instead of by scans.

* Every directory record carries `du`: [bytes, files] of the committed files below it, and
  `parent`, the inode of the directory holding it, so a change walks up to the root.
* The `usage` database holds, per owner, [bytes, files] of every committed file they own —
  files in the trash included, until the trash is purged (they still take the space).
* Quotas live on user records (`quota`: [bytes, files], 0 = no limit) and are checked when a
  file is created (against the size the writer announces) and again when it is committed.

Logical bytes are counted once: replicas are the cluster's cost, not the user's.
"""
from __future__ import annotations

from gfs.errors import ResourceExhausted
from gfs.units import human_size
from master.store import DIR, Tx

USAGE_DB = "usage"
LAYOUT = b"layout"             # meta counter: the layout the counts below were laid out in
# 2: parents, du and usage exist. 3: a tree in the trash hangs below nothing (`detach` clears
# its parent); a store of layout 2 may keep the old parent on a trashed tree, and that parent's
# du may hold what was committed in the trash since: the rebuild on open lays both out again.
CURRENT_LAYOUT = 3


def usage(tx: Tx, owner: str) -> list[int]:
    """[bytes, files] of `owner`."""
    return tx.get(USAGE_DB, owner.encode()) or [0, 0]


def charge(tx: Tx, owner: str, dbytes: int, dfiles: int) -> None:
    """Add to (or, negative, take from) what `owner` uses."""
    used = usage(tx, owner)
    used = [max(0, used[0] + dbytes), max(0, used[1] + dfiles)]
    if used == [0, 0]:
        tx.delete(USAGE_DB, owner.encode())
    else:
        tx.put(USAGE_DB, owner.encode(), used)


def totals(record: dict) -> tuple[int, int]:
    """(bytes, files) a committed inode adds to the directories above it."""
    if record["type"] == DIR:
        du = record.get("du") or [0, 0]
        return du[0], du[1]
    return (record["size"], 1) if record["state"] == "committed" else (0, 0)


def propagate(tx: Tx, directory: int, dbytes: int, dfiles: int) -> None:
    """Add (bytes, files) to `directory` and every directory above it."""
    if not dbytes and not dfiles:
        return
    ino: int | None = directory
    while ino:
        record = tx.inode(ino)
        if record is None:
            # A parent pointer to an inode that is gone (left by code before `detach` cleared
            # it; a store of layout 3 has none): nothing above it to count, and never an
            # error inside apply, which every master would hit on the same entry.
            return
        du = record.get("du") or [0, 0]
        record["du"] = [max(0, du[0] + dbytes), max(0, du[1] + dfiles)]
        tx.put_inode(ino, record)
        ino = record.get("parent")


def attach(tx: Tx, parent: int, ino: int) -> None:
    """`ino` (a file or a whole tree) now hangs below `parent`: count it there."""
    record = tx.inode(ino)
    if record["type"] == DIR and record.get("parent") != parent:
        record["parent"] = parent
        tx.put_inode(ino, record)
    propagate(tx, parent, *totals(record))


def detach(tx: Tx, parent: int, ino: int) -> None:
    """`ino` no longer hangs below `parent` (moved away, to the trash, or deleted): its bytes
    leave `parent`'s counts, and a directory forgets `parent` (`attach` sets the new one) —
    else what is later added below a tree in the trash was counted in its old parents, and
    once they were deleted the count climbed into inodes that no longer exist."""
    record = tx.inode(ino)
    dbytes, dfiles = totals(record)
    propagate(tx, parent, -dbytes, -dfiles)
    if record["type"] == DIR and "parent" in record:
        del record["parent"]
        tx.put_inode(ino, record)


def forget_file(tx: Tx, record: dict) -> None:
    """A committed file leaves the cluster for good: its owner no longer pays for it."""
    if record["type"] != DIR and record["state"] == "committed":
        charge(tx, record["owner"], -record["size"], -1)


def check_quota(tx: Tx, owner: str, quota: list[int] | None, add_bytes: int, add_files: int,
                replacing: tuple[int, int] = (0, 0)) -> None:
    """ResourceExhausted if `owner` would go over `quota` ([bytes, files], 0 = unlimited) by
    adding a file of `add_bytes` (that replaces one of `replacing` bytes and files)."""
    if not quota:
        return
    used = usage(tx, owner)
    max_bytes, max_files = quota
    new_bytes = used[0] + add_bytes - replacing[0]
    new_files = used[1] + add_files - replacing[1]
    if max_bytes and add_bytes > replacing[0] and new_bytes > max_bytes:
        raise ResourceExhausted(f"quota exceeded: {owner} would use {human_size(new_bytes)} of "
                                f"{human_size(max_bytes)} (now {human_size(used[0])})")
    if max_files and add_files > replacing[1] and new_files > max_files:
        raise ResourceExhausted(f"quota exceeded: {owner} would have {new_files} files, the "
                                f"quota is {max_files}")


def rebuild(tx: Tx, root: int, trash_roots: list[int]) -> None:
    """Lay out parents, du and usage for a store written before they existed (one pass)."""
    for key, _ in list(tx.raw_items(USAGE_DB)):
        tx.delete(USAGE_DB, key)
    for top, parent in [(root, None)] + [(t, None) for t in trash_roots]:
        _rebuild_tree(tx, top, parent)
    tx.set_counter(LAYOUT, CURRENT_LAYOUT)


def _rebuild_tree(tx: Tx, top: int, parent: int | None) -> None:
    """Post-order walk: each directory's du is the sum of its children's."""
    stack: list[tuple[int, int | None, bool]] = [(top, parent, False)]
    while stack:
        ino, above, done = stack.pop()
        record = tx.inode(ino)
        if record["type"] != DIR:
            if record["state"] == "committed":
                charge(tx, record["owner"], record["size"], 1)
            continue
        if not done:
            stack.append((ino, above, True))
            stack.extend((child, ino, False) for _, child in tx.entries(ino))
            continue
        du = [0, 0]
        for _, child in tx.entries(ino):
            b, f = totals(tx.inode(child))
            du = [du[0] + b, du[1] + f]
        record["du"] = du
        if above is not None:
            record["parent"] = above
        else:
            record.pop("parent", None)          # a tree in the trash hangs below nothing
        tx.put_inode(ino, record)
