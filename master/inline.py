"""Small files stored inline in the metadata (docs/state-machine.md, Inline files).

A file of at most the masters' `--inline-max` bytes is written by one command, `put_inline`:
create, data and commit in one log entry, replicated by Raft with the namespace and read back by
one linearizable stat. Its bytes live in the `inline` database (key: the inode), apart from the
inode record, so stat and list of other files never unpack them. The record's `inline` field is
the data's checksum (gfs/checksum.py, the chunk format: xxh3-64 of the per-64-KiB-block
xxh3-64s), which apply verifies before storing and readers verify on every read.

An inline file has no chunks, so the chunk loops (repair, tiering, balance, garbage collection)
never see it; it counts toward quotas and directory totals like any file. Writing a path again
with more than `--inline-max` bytes makes a chunked file that replaces it (the inline bytes go
with the old inode), which is how a small file grows into chunks.
"""
from __future__ import annotations

from gfs.checksum import inline_checksum
from gfs.errors import DataLoss
from master import namespace as ns
from master import usage
from master.store import FILE, NEXT_INODE, Tx

HARD_MAX = 1 << 20        # no command carries more inline bytes, whatever --inline-max says
DEFAULT_MAX = 64 << 10    # --inline-max


def put_inline(tx: Tx, args: dict) -> dict:
    """Create (or, with overwrite, replace) the file at `path` holding `data`, committed, with
    its extended attributes (`xattrs`, optional) in the same entry."""
    path, now, data = args["path"], args["now"], args["data"]
    if inline_checksum(data) != args["checksum"]:
        raise DataLoss(f"the bytes of {path} do not match their checksum (damaged on the way)")
    parent, name, existing, owner = ns.new_file_place(tx, args, len(data))
    if existing is not None:
        usage.detach(tx, parent.ino, existing)
        ns.drop_inode(tx, existing, now)
    ino = tx.allocate(NEXT_INODE)
    record = ns.inode_record(FILE, args["mode"], owner, now, args["replication"],
                             ns.file_class(tx, parent.ino, args), args["chunk_size"], ns.COMMITTED)
    record.update(size=len(data), inline=args["checksum"])
    if args.get("xattrs"):
        record["xattrs"] = args["xattrs"]     # the S3 gateway's object attributes (ETag...)
    tx.put_inode(ino, record)
    tx.put_inline(ino, data)
    tx.add_entry(parent.ino, name, ino, now)
    usage.charge(tx, owner, len(data), 1)
    usage.propagate(tx, parent.ino, len(data), 1)
    return {"inode": ino, "size": len(data), "mode": record["mode"], "owner": owner,
            "mtime": now, "replication": record["replication"],
            "storage_class": record["storage_class"], "chunk_size": record["chunk_size"]}
