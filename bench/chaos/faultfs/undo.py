"""The undo log: what a power loss would take back from the backing directory.

FaultFS writes every change straight through to the backing directory, so what the mount
shows is always the latest view. Next to it, this log keeps for every change that is not yet
durable what it takes to undo it:

* a data write: the file's size before it and the bytes it overwrote (spilled to segment files
  in the state directory, never held in memory); becomes durable on fsync/fdatasync of the file;
* a truncate: the size before it and the bytes it cut off;
* a directory entry change (create, mkdir, symlink, unlink, rmdir, rename): enough to put the
  entry back. An unlinked or replaced file is moved into the state directory's trash, not
  deleted, until its directory is fsync'd. Durable on fsync of the parent directory (a rename:
  of the destination directory, as on a journalling file system that commits a rename in one
  transaction; until then it is undone whole).

Files are keyed by inode number, directories too (a rename of a parent must not lose its
children's records). A power loss undoes the records it drops newest first, so each undo finds
the state its change left behind.
"""
from __future__ import annotations

import os
import random
import shutil
import threading
from dataclasses import dataclass, field

PAGE = 4096
SEGMENT_BYTES = 64 << 20
MODES = ("all", "prefix", "torn")


@dataclass
class Spilled:
    """Bytes saved in a spill segment."""
    segment: int
    offset: int
    length: int


@dataclass
class DataRecord:
    """A write of `length` bytes at `offset` (kind "write"), or a truncate to `offset` (kind
    "truncate"), on file `ino` whose size was `pre_size` before it."""
    seq: int
    kind: str
    ino: int
    offset: int
    length: int
    pre_size: int
    saved: Spilled | None


@dataclass
class DirRecord:
    """A directory entry change. "create": `name` appeared in `parent`; "remove": it went to the
    trash as `trash`; "rename": `name` in `parent` became `new_name` in `new_parent`, and what
    was there went to the trash as `trash` (if anything was)."""
    seq: int
    kind: str
    parent: int
    name: str
    is_dir: bool = False
    new_parent: int = 0
    new_name: str = ""
    trash: str | None = None
    ino: int = 0                                         # "create": the new entry's inode
    pending: set[int] = field(default_factory=set)      # directories still to be fsync'd


class SpillFile:
    """Append-only segment files for saved bytes; a segment is deleted once nothing refers to it."""

    def __init__(self, directory: str):
        self.dir = directory
        self._live: dict[int, int] = {}
        self._fds: dict[int, int] = {}
        self._current = 0
        self._end = 0
        self._open(0)

    def _open(self, n: int) -> None:
        self._fds[n] = os.open(os.path.join(self.dir, f"spill-{n}"),
                               os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._live[n] = 0

    def save(self, data: bytes) -> Spilled:
        if self._end + len(data) > SEGMENT_BYTES and self._end:
            self._current += 1
            self._end = 0
            self._open(self._current)
        os.pwrite(self._fds[self._current], data, self._end)
        ref = Spilled(self._current, self._end, len(data))
        self._end += len(data)
        self._live[self._current] += len(data)
        return ref

    def load(self, ref: Spilled) -> bytes:
        return os.pread(self._fds[ref.segment], ref.length, ref.offset)

    def release(self, ref: Spilled) -> None:
        self._live[ref.segment] -= ref.length
        if self._live[ref.segment]:
            return
        if ref.segment == self._current:
            os.ftruncate(self._fds[ref.segment], 0)
            self._end = 0
        else:
            os.close(self._fds.pop(ref.segment))
            del self._live[ref.segment]
            os.unlink(os.path.join(self.dir, f"spill-{ref.segment}"))

    def bytes_on_disk(self) -> int:
        return sum(os.fstat(fd).st_size for fd in self._fds.values())

    def close(self) -> None:
        for n, fd in self._fds.items():
            os.close(fd)
            os.unlink(os.path.join(self.dir, f"spill-{n}"))
        self._fds.clear()


class UndoLog:
    """Every not-yet-durable change under `backing`, and the power loss that undoes them.

    The methods that change the backing directory do so themselves, under the log's lock, so
    a record's place in the log is the change's place in time. Paths are backing paths."""

    def __init__(self, backing: str, state_dir: str):
        self.backing = os.path.abspath(backing)
        self.trash = os.path.join(state_dir, "trash")
        os.makedirs(self.trash, exist_ok=True)
        if os.stat(self.trash).st_dev != os.stat(self.backing).st_dev:
            raise ValueError(f"{state_dir} must be on the same file system as {backing}")
        for leftover in os.listdir(self.trash):      # from a server that died: count as durable
            _remove_tree(os.path.join(self.trash, leftover))
        self.lock = threading.Lock()
        self._spill = SpillFile(state_dir)
        self._seq = 0
        self._data: dict[int, DataRecord] = {}
        self._dirs: dict[int, DirRecord] = {}
        self._by_ino: dict[int, list[int]] = {}

    # --- recording (caller holds self.lock) ---------------------------------------------------

    @property
    def seq(self) -> int:
        """The sequence number the next change gets (an fsync covers every change before it)."""
        return self._seq + 1

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def write(self, fd: int, ino: int, data: bytes, offset: int) -> int:
        pre_size = os.fstat(fd).st_size
        overlap = max(0, min(len(data), pre_size - offset))
        saved = self._spill.save(os.pread(fd, overlap, offset)) if overlap else None
        n = os.pwrite(fd, data, offset)
        self._add_data(DataRecord(self._next(), "write", ino, offset, n, pre_size, saved))
        return n

    def truncate(self, fd: int, ino: int, size: int) -> None:
        pre_size = os.fstat(fd).st_size
        saved = self._spill.save(os.pread(fd, pre_size - size, size)) if size < pre_size else None
        os.ftruncate(fd, size)
        if size != pre_size:
            self._add_data(DataRecord(self._next(), "truncate", ino, size, 0, pre_size, saved))

    def _add_data(self, rec: DataRecord) -> None:
        self._data[rec.seq] = rec
        self._by_ino.setdefault(rec.ino, []).append(rec.seq)

    def created(self, parent_ino: int, name: str, ino: int, is_dir: bool) -> None:
        """`name` was just created in the directory `parent_ino` (the inode `ino` is new: records
        of a deleted file that had the same number are dropped)."""
        self._forget_ino(ino)
        self._add_dir(DirRecord(self._next(), "create", parent_ino, name, is_dir, ino=ino,
                                pending={parent_ino}))

    def remove(self, path: str, is_dir: bool) -> None:
        """unlink/rmdir `path`: move it to the trash, where it stays until its directory is
        fsync'd (open file descriptors keep working, as after a real unlink)."""
        parent, name = os.path.split(path)
        parent_ino = os.stat(parent).st_ino
        seq = self._next()
        trash = f"{seq}"
        os.rename(path, os.path.join(self.trash, trash))
        self._add_dir(DirRecord(seq, "remove", parent_ino, name, is_dir, trash=trash,
                                pending={parent_ino}))

    def rename(self, old: str, new: str) -> None:
        """rename `old` to `new`; a file or empty directory at `new` goes to the trash."""
        old_parent, old_name = os.path.split(old)
        new_parent, new_name = os.path.split(new)
        old_ino, new_ino = os.stat(old_parent).st_ino, os.stat(new_parent).st_ino
        seq = self._next()
        trash = None
        if os.path.lexists(new):
            trash = f"{seq}"
            os.rename(new, os.path.join(self.trash, trash))
        try:
            os.rename(old, new)
        except OSError:
            if trash:
                os.rename(os.path.join(self.trash, trash), new)
            raise
        self._add_dir(DirRecord(seq, "rename", old_ino, old_name, os.path.isdir(new),
                                new_ino, new_name, trash, pending={new_ino}))

    def _add_dir(self, rec: DirRecord) -> None:
        self._dirs[rec.seq] = rec

    # --- durability -----------------------------------------------------------------------------

    def file_synced(self, ino: int, before: int) -> int:
        """fsync/fdatasync of file `ino` that began when the next change was `before`: every
        write to it before that is durable. Returns how many records became durable."""
        seqs = self._by_ino.get(ino)
        if not seqs:
            return 0
        done = [s for s in seqs if s < before]
        for s in done:
            rec = self._data.pop(s)
            if rec.saved:
                self._spill.release(rec.saved)
        rest = [s for s in seqs if s >= before]
        if rest:
            self._by_ino[ino] = rest
        else:
            del self._by_ino[ino]
        return len(done)

    def dir_synced(self, ino: int, before: int) -> int:
        """fsync of directory `ino` that began when the next change was `before`."""
        done = 0
        for seq in [s for s in self._dirs if s < before]:
            rec = self._dirs[seq]
            rec.pending.discard(ino)
            if not rec.pending:
                del self._dirs[seq]
                done += 1
                if rec.trash:
                    self._purge(rec.trash)
        return done

    def _purge(self, trash: str) -> None:
        path = os.path.join(self.trash, trash)
        try:
            self._forget_ino(os.lstat(path).st_ino)
        except FileNotFoundError:
            return
        _remove_tree(path)

    def _forget_ino(self, ino: int) -> None:
        for s in self._by_ino.pop(ino, []):
            rec = self._data.pop(s)
            if rec.saved:
                self._spill.release(rec.saved)

    def stats(self) -> dict:
        return {"pending_writes": len(self._data), "pending_dir_ops": len(self._dirs),
                "pending_files": len(self._by_ino),
                "unsynced_bytes": sum(r.length for r in self._data.values() if r.kind == "write"),
                "spill_bytes": self._spill.bytes_on_disk()}

    # --- the end: power loss or clean unmount ---------------------------------------------------

    def settle(self) -> None:
        """A clean unmount: everything written counts as durable."""
        for rec in self._dirs.values():
            if rec.trash:
                _remove_tree(os.path.join(self.trash, rec.trash))
        self._close()

    def power_loss(self, mode: str = "all", seed: int | None = None) -> dict:
        """Undo what a power cut would lose (the mount must be gone):

        * "all": every change not durable;
        * "prefix": the changes after a random point (the disk wrote in order and stopped);
        * "torn": each 4 KiB page of each non-durable write independently (restored, or zeros
          past the old end of file), each file left at a random one of its recent sizes, and
          the directory changes after a random point (a journalling file system's metadata).
        Returns what was kept and lost."""
        if mode not in MODES:
            raise ValueError(f"power loss mode must be one of {', '.join(MODES)}")
        rng = random.Random(seed)
        records: list = sorted([*self._data.values(), *self._dirs.values()], key=lambda r: r.seq)
        dir_records = [r for r in records if isinstance(r, DirRecord)]
        if mode == "all":
            lost = {r.seq for r in records}
        elif mode == "prefix":
            cut = rng.randint(0, len(records))
            lost = {r.seq for r in records[cut:]}
        else:
            cut = rng.randint(0, len(dir_records))
            lost = {r.seq for r in dir_records[cut:]}
        undo = _Undo(self.backing, self.trash, self._spill, rng)
        try:
            undo.open_files(self._by_ino)
            for rec in reversed(records):
                if isinstance(rec, DataRecord):
                    if mode == "torn":
                        undo.tear(rec)
                    elif rec.seq in lost:
                        undo.data(rec)
                elif rec.seq in lost:
                    undo.entry(rec)
            if mode == "torn":
                undo.random_sizes(self._data.values())
        finally:
            undo.close()
        for rec in dir_records:        # what stays in the trash was removed durably enough
            if rec.trash and rec.seq not in lost:
                _remove_tree(os.path.join(self.trash, rec.trash))
        result = {"mode": mode, "seed": seed,
                  "writes_lost": undo.writes_undone, "pages_lost": undo.pages_undone,
                  "writes_kept": len(self._data) - undo.writes_undone,
                  "dir_ops_lost": undo.entries_undone,
                  "dir_ops_kept": len(dir_records) - undo.entries_undone,
                  "lost_entries": undo.lost_entries[:50], "errors": undo.errors}
        self._close()
        return result

    def _close(self) -> None:
        self._data.clear()
        self._dirs.clear()
        self._by_ino.clear()
        self._spill.close()


class _Undo:
    """Applies undo records to the backing directory (one power loss)."""

    def __init__(self, backing: str, trash: str, spill: SpillFile, rng: random.Random):
        self.backing, self.trash, self.spill, self.rng = backing, trash, spill, rng
        self.fds: dict[int, int] = {}
        self.dirs: dict[int, str] = {}
        self.writes_undone = self.pages_undone = self.entries_undone = 0
        self.errors: list[str] = []
        self.lost_entries: list[str] = []        # what was undone, for the reader of a result

    def open_files(self, inos) -> None:
        """An fd for every file with records, found by inode in the backing tree and the trash
        (fds keep working while undone renames move the files around)."""
        wanted = set(inos)
        for top in (self.backing, self.trash):
            for dirpath, dirnames, filenames in os.walk(top):
                for name in filenames:
                    path = os.path.join(dirpath, name)
                    try:
                        st = os.lstat(path)
                        if st.st_ino in wanted and st.st_ino not in self.fds:
                            self.fds[st.st_ino] = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
                    except OSError:
                        continue

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)

    def data(self, rec: DataRecord) -> None:
        fd = self.fds.get(rec.ino)
        if fd is None:
            return                 # the file is gone for good (its removal was durable)
        if rec.saved:
            os.pwrite(fd, self.spill.load(rec.saved), rec.offset)
        if rec.kind == "truncate" or rec.offset + rec.length > rec.pre_size:
            os.ftruncate(fd, rec.pre_size)
        self.writes_undone += 1

    def tear(self, rec: DataRecord) -> None:
        """Torn mode: a truncate is lost or kept whole; a write page by page."""
        fd = self.fds.get(rec.ino)
        if fd is None:
            return
        if rec.kind == "truncate":
            if self.rng.random() < 0.5:
                self.data(rec)
            return
        old = self.spill.load(rec.saved) if rec.saved else b""
        size = os.fstat(fd).st_size
        lost = 0
        start = rec.offset
        end = rec.offset + rec.length
        while start < end:
            stop = min(end, (start // PAGE + 1) * PAGE)
            if self.rng.random() < 0.5:
                keep_old = old[start - rec.offset:stop - rec.offset]
                zeros = max(0, min(stop, size) - start - len(keep_old))
                os.pwrite(fd, keep_old + bytes(zeros), start)
                lost += 1
            start = stop
        if lost:
            self.pages_undone += lost
            self.writes_undone += 1

    def random_sizes(self, records) -> None:
        sizes: dict[int, list[int]] = {}
        for rec in records:
            after = rec.offset if rec.kind == "truncate" else max(rec.pre_size,
                                                                  rec.offset + rec.length)
            sizes.setdefault(rec.ino, []).extend((rec.pre_size, after))
        for ino, candidates in sizes.items():
            fd = self.fds.get(ino)
            if fd is not None:
                size = self.rng.choice(candidates)
                if size < os.fstat(fd).st_size:
                    os.ftruncate(fd, size)

    def _dir(self, ino: int) -> str:
        path = self.dirs.get(ino)
        try:
            if path is not None and os.stat(path).st_ino == ino:
                return path
        except OSError:
            pass
        self.dirs = {}
        for top in (self.backing, self.trash):
            self.dirs[os.stat(top).st_ino] = top
            for dirpath, dirnames, _ in os.walk(top):
                for name in dirnames:
                    p = os.path.join(dirpath, name)
                    self.dirs[os.lstat(p).st_ino] = p
        if ino not in self.dirs:
            raise FileNotFoundError(f"directory inode {ino}")
        return self.dirs[ino]

    def entry(self, rec: DirRecord) -> None:
        try:
            where = os.path.join(self._dir(rec.parent), rec.name)
            if rec.kind == "create":
                if os.lstat(where).st_ino != rec.ino:       # renamed away (durably) since
                    return
                _remove_tree(where)
            elif rec.kind == "remove":
                os.rename(os.path.join(self.trash, rec.trash), where)
            else:
                now = os.path.join(self._dir(rec.new_parent), rec.new_name)
                os.rename(now, where)
                if rec.trash:
                    os.rename(os.path.join(self.trash, rec.trash), now)
            self.entries_undone += 1
            arrow = f" -> {rec.new_name}" if rec.kind == "rename" else ""
            self.lost_entries.append(f"{rec.kind} {os.path.relpath(where, self.backing)}{arrow}")
        except FileNotFoundError:
            if rec.kind != "create":                         # a create renamed away is fine
                self.errors.append(f"undo {rec.kind} {rec.name!r}: not found")
        except OSError as exc:
            self.errors.append(f"undo {rec.kind} {rec.name!r}: {exc}")


def _remove_tree(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
