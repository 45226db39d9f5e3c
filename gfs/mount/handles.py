"""What an open file of the mount is.

A `ReadHandle` reads one version of a file — the one stat'ed at open — through the mount's block
cache. A `WriteHandle` spools the file's new content to an unlinked local temporary file and
`put`s it whole when the program flushes, fsyncs or closes it: the file appears atomically, as a
`gfs put` does, and a failed upload leaves the previous version untouched.
"""
from __future__ import annotations

import os
import tempfile
import threading

from gfs.client import Client, FileInfo
from gfs.mount.blockcache import BlockCache


def version_key(info: FileInfo) -> tuple:
    """Changes whenever the file's bytes may have: replaced (inode), rewritten (mtime, chunk
    versions)."""
    return (info.inode, info.mtime_ms, info.size,
            tuple((c.handle, c.version) for c in info.chunks))


class ReadHandle:
    READAHEAD_BLOCKS = 8           # fetched beyond a sequential read, in the same request

    def __init__(self, client: Client, info: FileInfo, cache: BlockCache):
        self.client, self.info, self.cache = client, info, cache
        self.key = version_key(info)
        self._next = 0             # where a sequential reader will read next
        self._lock = threading.Lock()

    def read(self, size: int, offset: int) -> bytes:
        with self._lock:
            sequential = offset == self._next and offset > 0
            self._next = offset + size
        return self.cache.read(self.key, self.info.size, offset, size,
                               lambda start, n: self.client.read_at(self.info, start, n),
                               readahead=self.READAHEAD_BLOCKS if sequential else 0)

    def close(self) -> None:
        pass


class WriteHandle:
    def __init__(self, path: str, mode: int, spool_dir: str | None = None):
        self.path, self.mode = path, mode
        self.mtime_ms: int | None = None       # set by utimens while open: applied after upload
        self.dirty = True                      # a new or truncated file is written at close
        self.failed = False                    # an upload failed and the program was told
        self._file = tempfile.TemporaryFile(prefix="gfs-mount-", dir=spool_dir)
        self.lock = threading.Lock()

    @property
    def size(self) -> int:
        return os.fstat(self._file.fileno()).st_size

    def load(self, client: Client, info: FileInfo) -> None:
        """Start from the file's current content (an open without O_TRUNC)."""
        client.download(info, self._file)
        self.dirty = False

    def read(self, size: int, offset: int) -> bytes:
        return os.pread(self._file.fileno(), size, offset)

    def write(self, data: bytes, offset: int) -> int:
        with self.lock:
            self.dirty = True
            return os.pwrite(self._file.fileno(), data, offset)

    def truncate(self, length: int) -> None:
        with self.lock:
            self.dirty = True
            os.ftruncate(self._file.fileno(), length)

    def upload(self, client: Client) -> None:
        """Put the spooled content (durable on every replica when this returns)."""
        with self.lock:
            if not self.dirty:
                return
            self._file.seek(0)
            client.put(self._file, self.path, overwrite=True)
            self.dirty = False
            if self.mode & 0o7777 != 0o644 or self.mtime_ms is not None:
                client.set_attr(self.path, mode=self.mode & 0o7777, mtime_ms=self.mtime_ms)

    def close(self) -> None:
        self._file.close()
