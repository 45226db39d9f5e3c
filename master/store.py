"""Typed access to the metadata LMDB databases inside one transaction, and the encodings the
state machine's modules share (see docs/state-machine.md for the databases)."""
from __future__ import annotations

import struct
import threading
from typing import Any, Iterator, NamedTuple

import lmdb
import msgpack

from gfs.errors import GfsError, InvalidArgument

MAX_U32 = (1 << 32) - 1
MAX_U64 = (1 << 64) - 1       # every integer must fit msgpack's uint64 and struct '>Q'
CLIENT_ID_BYTES = 16
DIR, FILE = "dir", "file"
ROOT_INODE = 1
DB_NAMES = ("meta", "inodes", "dirents", "pending", "chunks", "garbage", "sessions", "trash",
            "session_times", "users", "tokens", "usage", "audit", "auth_log",
            "oidc_issuers", "oidc_links", "oidc_used", "routes", "inline")
MAX_DBS = 24
MAX_KEY_BYTES = 511               # LMDB's compiled-in limit (mdb_env_get_maxkeysize)
APPLIED, NEXT_INODE, NEXT_CHUNK = b"applied_index", b"next_inode", b"next_chunk"
NEXT_TRASH = b"next_trash"
DIRS = b"dirs"              # directories in the namespace (trash included), kept on every change
U64 = struct.Struct(">Q")
SHOW_CHARS = 60


# --- encoding --------------------------------------------------------------------------------

def u64key(number: int) -> bytes:
    return U64.pack(number)


_PACKERS = threading.local()


def pack(value: Any) -> bytes:
    """msgpack bytes of `value`, through a packer kept per thread. `msgpack.packb` makes a
    packer per call, whose 256 KiB buffer is an mmap and a munmap each in a daemon (their
    mmap threshold is 256 KiB: gfs/memory.py) — ~10 µs a record instead of ~0.4, and a TLB
    shootdown across the process's threads per munmap; a command writes several records on
    every master."""
    packer = getattr(_PACKERS, "packer", None)
    if packer is None:
        packer = _PACKERS.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(value)     # autoreset: the buffer is emptied after a value or an error


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


def show(value: Any) -> str:
    """A short one-line repr of an arbitrary (client-supplied) value for error messages."""
    text = repr(value)
    return text if len(text) <= SHOW_CHARS else text[:SHOW_CHARS] + "..."


def _session_seq(key: bytes, client_id: bytes) -> int | None:
    """The seq of a sessions key if the key belongs to `client_id`."""
    if key[:CLIENT_ID_BYTES] != client_id:
        return None
    return U64.unpack(key[CLIENT_ID_BYTES:])[0]


def error_result(exc: GfsError) -> dict:
    return {"err": [exc.code, exc.message]}


class Session(NamedTuple):
    """The exactly-once header of a command."""
    client_id: bytes
    seq: int
    ack_seq: int

    @property
    def key(self) -> bytes:
        return self.client_id + u64key(self.seq)


# --- typed access to the databases inside one transaction --------------------------------------

class Tx:
    """One LMDB transaction seen through the named databases of docs/state-machine.md."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, Any]):
        self._txn = txn
        self._dbs = dbs

    # LMDB refuses an empty key or one over MAX_KEY_BYTES with an exception. Inside apply that
    # would fail the log entry on every replica, for ever (a wedged log): a key that cannot be
    # stored is simply absent, and storing one is a command error.
    def get(self, db: str, key: bytes) -> Any:
        if not 0 < len(key) <= MAX_KEY_BYTES:
            return None
        data = self._txn.get(key, db=self._dbs[db])
        return None if data is None else unpack(data)

    def put(self, db: str, key: bytes, value: Any) -> None:
        if not 0 < len(key) <= MAX_KEY_BYTES:
            raise InvalidArgument(f"a {db} key must be 1 to {MAX_KEY_BYTES} bytes, "
                                  f"not {len(key)}")
        self._txn.put(key, pack(value), db=self._dbs[db])

    def delete(self, db: str, key: bytes) -> bool:
        """Delete `key` from `db`; whether it was there."""
        if not 0 < len(key) <= MAX_KEY_BYTES:
            return False
        return self._txn.delete(key, db=self._dbs[db])

    def raw_items(self, db: str) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, raw value) of `db` in key order."""
        return self._txn.cursor(db=self._dbs[db]).iternext()

    def cursor(self, db: str) -> lmdb.Cursor:
        return self._txn.cursor(db=self._dbs[db])

    @staticmethod
    def decode(data: bytes) -> Any:
        return unpack(data)

    def records(self, db: str) -> Iterator[tuple[bytes, Any]]:
        for key, data in self.raw_items(db):
            yield key, unpack(data)

    def count(self, db: str) -> int:
        return self._txn.stat(self._dbs[db])["entries"]

    def dump(self, db: str) -> list[tuple[bytes, bytes]]:
        """Every (key, value) of `db` in key order (raw bytes)."""
        return list(self.raw_items(db))

    # meta: 8-byte big-endian counters
    def counter(self, name: bytes) -> int:
        data = self._txn.get(name, db=self._dbs["meta"])
        return 0 if data is None else U64.unpack(data)[0]

    def set_counter(self, name: bytes, value: int) -> None:
        self._txn.put(name, u64key(value), db=self._dbs["meta"])

    def allocate(self, name: bytes) -> int:
        """Take the next id from counter `name`."""
        value = self.counter(name)
        self.set_counter(name, value + 1)
        return value

    # inodes
    def inode(self, ino: int) -> dict | None:
        return self.get("inodes", u64key(ino))

    def inodes(self, inos: list[int]) -> list[dict | None]:
        """`inode` of each of `inos` (a listing's entries: one lookup of the database for all)."""
        get, db, key = self._txn.get, self._dbs["inodes"], U64.pack
        return [None if (data := get(key(ino), db=db)) is None else unpack(data) for ino in inos]

    def put_inode(self, ino: int, record: dict) -> None:
        self.put("inodes", u64key(ino), record)

    def delete_inode(self, ino: int) -> None:
        self.delete("inodes", u64key(ino))

    # inline: inode (8 bytes) -> the bytes of a small file stored in the metadata (raw)
    def inline_data(self, ino: int) -> bytes | None:
        return self._txn.get(u64key(ino), db=self._dbs["inline"])

    def put_inline(self, ino: int, data: bytes) -> None:
        self._txn.put(u64key(ino), data, db=self._dbs["inline"])

    def delete_inline(self, ino: int) -> None:
        self._txn.delete(u64key(ino), db=self._dbs["inline"])

    def is_dir(self, ino: int) -> bool:
        return self.inode(ino)["type"] == DIR

    def touch(self, ino: int, now: int) -> None:
        record = self.inode(ino)
        record["mtime"] = now
        self.put_inode(ino, record)

    def inode_records(self) -> Iterator[dict]:
        for _, data in self._txn.cursor(db=self._dbs["inodes"]).iternext():
            yield unpack(data)

    # dirents: parent (8 bytes) + name -> child (8 bytes)
    def lookup(self, parent: int, name: str) -> int | None:
        data = self._txn.get(u64key(parent) + name.encode(), db=self._dbs["dirents"])
        return None if data is None else U64.unpack(data)[0]

    def add_entry(self, parent: int, name: str, child: int, now: int) -> None:
        """Point `parent`/`name` at `child` (replacing any entry there) and touch the parent."""
        self._txn.put(u64key(parent) + name.encode(), u64key(child), db=self._dbs["dirents"])
        self.touch(parent, now)

    def remove_entry(self, parent: int, name: str, now: int) -> None:
        self._txn.delete(u64key(parent) + name.encode(), db=self._dbs["dirents"])
        self.touch(parent, now)

    def entries(self, parent: int, start_after: str = "", limit: int | None = None) -> list[tuple[str, int]]:
        """(name, child) of `parent` in name order, after `start_after`, at most `limit`."""
        prefix = u64key(parent)
        skip = prefix + start_after.encode() if start_after else None
        cursor = self._txn.cursor(db=self._dbs["dirents"])
        found: list[tuple[str, int]] = []
        if not cursor.set_range(skip or prefix):
            return found
        for key, value in cursor.iternext():
            if not key.startswith(prefix) or (limit is not None and len(found) >= limit):
                break
            if key != skip:
                found.append((key[len(prefix):].decode(), U64.unpack(value)[0]))
        return found

    def has_entries(self, parent: int) -> bool:
        return bool(self.entries(parent, limit=1))

    def drop_entries(self, parent: int) -> list[int]:
        """Delete every entry of `parent` (no mtime update); return the children."""
        children = self.entries(parent)
        for name, _ in children:
            self._txn.delete(u64key(parent) + name.encode(), db=self._dbs["dirents"])
        return [child for _, child in children]

    # pending uploads
    def pending(self, ino: int) -> dict | None:
        return self.get("pending", u64key(ino))

    def put_pending(self, ino: int, record: dict) -> None:
        self.put("pending", u64key(ino), record)

    def delete_pending(self, ino: int) -> None:
        self.delete("pending", u64key(ino))

    # chunks and garbage
    def chunk(self, handle: int) -> dict | None:
        return self.get("chunks", u64key(handle))

    def put_chunk(self, handle: int, record: dict) -> None:
        self.put("chunks", u64key(handle), record)

    def discard_chunks(self, handles: list[int], now: int) -> None:
        """Move chunks out of `chunks` into `garbage`, stamped with `now`."""
        for handle in handles:
            self.delete("chunks", u64key(handle))
            self.put("garbage", u64key(handle), now)

    def forget_garbage(self, handle: int) -> bool:
        return self.delete("garbage", u64key(handle))

    # trash: id -> trash record
    def trash(self, trash_id: int) -> dict | None:
        return self.get("trash", u64key(trash_id))

    def put_trash(self, trash_id: int, record: dict) -> None:
        self.put("trash", u64key(trash_id), record)

    def delete_trash(self, trash_id: int) -> None:
        self.delete("trash", u64key(trash_id))

    def trash_records(self) -> list[dict]:
        """Every trash record, in id order."""
        return [record for _, record in self.records("trash")]

    # sessions: client id (16 bytes) + seq (8 bytes) -> {"at": ms stored, "result": result,
    #   "op": the command's op} (no "op" in data written before it was kept; a bare result in
    #   data written before sessions expired)
    # session_times: at (8 bytes) + sessions key -> b"" (oldest first, for expire_sessions)
    def session_result(self, session: Session) -> tuple[dict, str | None] | None:
        """(the stored result, the op of the command it answered, None if not kept)."""
        stored = self.get("sessions", session.key)
        if stored is None:
            return None
        return (stored["result"], stored.get("op")) if "at" in stored else (stored, None)

    def store_session(self, session: Session, result: dict, now: int,
                      op: str | None = None) -> None:
        self.put("sessions", session.key, {"at": now, "result": result, "op": op})
        self._txn.put(u64key(now) + session.key, b"", db=self._dbs["session_times"])

    def prune_sessions(self, client_id: bytes, ack_seq: int) -> None:
        """Forget the client's results with seq <= ack_seq."""
        cursor = self._txn.cursor(db=self._dbs["sessions"])
        cursor.set_range(client_id + u64key(0))     # unpositioned (key b"") when nothing follows
        while (seq := _session_seq(cursor.key(), client_id)) is not None and seq <= ack_seq:
            stored = unpack(cursor.value())
            if "at" in stored:
                self._txn.delete(u64key(stored["at"]) + cursor.key(),
                                 db=self._dbs["session_times"])
            cursor.delete()                         # moves to the next key

    def expire_sessions(self, before: int, limit: int) -> tuple[int, bool]:
        """Forget up to `limit` results stored before `before` (ms), oldest first; (how many,
        whether older ones remain)."""
        cursor = self._txn.cursor(db=self._dbs["session_times"])
        cursor.first()
        expired = 0
        while (key := cursor.key()) and U64.unpack(key[:8])[0] < before:
            if expired == limit:
                return expired, True
            self.delete("sessions", key[8:])
            cursor.delete()
            expired += 1
        return expired, False

