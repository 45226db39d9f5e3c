"""FUSE operations of `gfs mount` (mfusepy's path-based API, called from its threads).

Semantics (docs/mount.md): files appear whole when closed (as a put); `fsync` on a file being
written returns once its bytes are durable on every replica; unlink and rmdir move to the
mount identity's trash; rename is gfs's atomic rename; permissions are the mount token's,
decided by the masters. Writing into the middle of an existing file rewrites it whole at close
(its current content is fetched at open). Symlinks and hard links are not in the gfs namespace:
EOPNOTSUPP.
"""
from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import posixpath
import stat as statmod
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import mfusepy as fuse

from gfs import paths
from gfs.client import Client, FileInfo
from gfs.errors import GfsError, errno_of
from gfs.mount.blockcache import BlockCache
from gfs.mount import streaming
from gfs.mount.handles import ReadHandle, WriteHandle
from gfs.mount.runner import KERNEL_READAHEAD_KIB

log = logging.getLogger("gfs.mount")

NOBODY = 65534                     # the uid/gid shown for files of other gfs users
BLOCK_SIZE = 1 << 20               # the unit the mount caches file data in
ATTR_TTL = 1.0                     # seconds a stat result is reused (as the kernel's own)
READAHEAD_WORKERS = 4              # background fetches of sequential readers, mount-wide


def fuse_errors(method):
    """Turn gfs errors into the errno FUSE passes back to the program, with one log line."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except GfsError as err:
            code = errno_of(err)
            if code not in (errno.ENOENT, errno.EEXIST):
                log.info("%s %s: %s: %s", method.__name__, args[0] if args else "", err.code, err)
            raise fuse.FuseOSError(code) from None
    return wrapper


class GfsOperations(fuse.Operations):
    use_ns = True

    def __init__(self, client: Client, root: str = "/", read_only: bool = False,
                 cache_size: int = 256 << 20, user: str = "", uid: int | None = None,
                 gid: int | None = None, spool_dir: str | None = None):
        self.client, self.read_only = client, read_only
        self.root = paths.normalize("/" + root.strip("/") if root.strip("/") else "/")
        self.cache = BlockCache(cache_size, BLOCK_SIZE)
        # Bytes of files being written that wait in memory until durable (streaming.py).
        streaming.set_hold_budget(cache_size // 2)
        self.readahead = ThreadPoolExecutor(max_workers=READAHEAD_WORKERS,
                                            thread_name_prefix="gfs-readahead")
        self.user = user                        # the gfs identity the mount acts as
        self.spool_dir = spool_dir              # where files being written live (None: $TMPDIR)
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        self._handles: dict[int, ReadHandle | WriteHandle] = {}
        self._writing: dict[str, WriteHandle] = {}   # path -> the handle writing it
        self._attrs: dict[str, tuple[float, FileInfo]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # --- helpers -------------------------------------------------------------------------------

    def _path(self, path: str) -> str:
        """The gfs path of a path inside the mount."""
        return self.root if path == "/" else self.root.rstrip("/") + path

    def _check_writable(self) -> None:
        if self.read_only:
            raise fuse.FuseOSError(errno.EROFS)

    def _stat(self, gpath: str) -> FileInfo:
        now = time.monotonic()
        cached = self._attrs.get(gpath)
        if cached and now - cached[0] < ATTR_TTL:
            return cached[1]
        info = self.client.stat(gpath)
        self._attrs[gpath] = (now, info)
        return info

    def _remember(self, info: FileInfo) -> FileInfo:
        """A fresh stat (an open's) is what getattr answers from now on: with the size of the
        version before it (a file replaced behind the mount's back), the kernel would not
        take this handle's short read as the end of the file and would fill the rest with
        zeros."""
        self._attrs[info.path] = (time.monotonic(), info)
        return info

    def _forget(self, *gpaths: str) -> None:
        for p in gpaths:
            self._attrs.pop(p, None)

    def _forget_tree(self, gpath: str) -> None:
        prefix = gpath.rstrip("/") + "/"
        for p in [p for p in self._attrs if p == gpath or p.startswith(prefix)]:
            self._attrs.pop(p, None)

    def _owner_ids(self, owner: str) -> tuple[int, int]:
        return (self.uid, self.gid) if owner == self.user else (NOBODY, NOBODY)

    def _attr_dict(self, info: FileInfo) -> dict[str, Any]:
        kind = statmod.S_IFDIR if info.is_dir else statmod.S_IFREG
        uid, gid = self._owner_ids(info.owner)
        mtime, ctime = info.mtime_ms * 1_000_000, info.ctime_ms * 1_000_000
        size = 0 if info.is_dir else info.size
        return {"st_mode": kind | (info.mode & 0o7777), "st_nlink": 2 if info.is_dir else 1,
                "st_size": size, "st_uid": uid, "st_gid": gid, "st_mtime": mtime,
                "st_ctime": ctime, "st_atime": mtime, "st_blocks": (size + 511) // 512,
                "st_blksize": BLOCK_SIZE}

    def _pending_attr(self, handle: WriteHandle) -> dict[str, Any]:
        now = time.time_ns()
        size = handle.size
        return {"st_mode": statmod.S_IFREG | (handle.mode & 0o7777), "st_nlink": 1,
                "st_size": size, "st_uid": self.uid, "st_gid": self.gid,
                "st_mtime": now if handle.mtime_ms is None else handle.mtime_ms * 1_000_000,
                "st_ctime": now, "st_atime": now, "st_blocks": (size + 511) // 512,
                "st_blksize": BLOCK_SIZE}

    def _new_handle(self, handle: ReadHandle | WriteHandle) -> int:
        with self._lock:
            fh = next(self._ids)
            self._handles[fh] = handle
            if isinstance(handle, WriteHandle):
                self._writing[handle.path] = handle
            return fh

    # --- attributes and directories ------------------------------------------------------------

    @fuse_errors
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        gpath = self._path(path)
        handle = self._handles.get(fh) if fh else None
        if not isinstance(handle, WriteHandle):
            handle = self._writing.get(gpath)
        if handle is not None:
            return self._pending_attr(handle)
        return self._attr_dict(self._stat(gpath))

    @fuse_errors
    def readdir(self, path: str, fh: int) -> list[str]:
        gpath = self._path(path)
        now = time.monotonic()
        names = []
        # Brief: the attribute cache answers getattr and type checks, never reads (an open
        # stats afresh), so chunk lists would only cost the masters.
        for info in self.client.list(gpath, brief=True):
            self._attrs[info.path] = (now, info)
            names.append(posixpath.basename(info.path))
        pending = [posixpath.basename(p) for p in list(self._writing)
                   if posixpath.dirname(p) == gpath and posixpath.basename(p) not in names]
        return [".", ".."] + names + pending

    @fuse_errors
    def mkdir(self, path: str, mode: int) -> int:
        self._check_writable()
        self.client.mkdir(self._path(path), mode=mode & 0o7777)
        return 0

    @fuse_errors
    def rmdir(self, path: str) -> int:
        self._check_writable()
        gpath = self._path(path)
        if not self._stat(gpath).is_dir:
            raise fuse.FuseOSError(errno.ENOTDIR)
        self.client.delete(gpath, recursive=False)
        self._forget(gpath)
        return 0

    @fuse_errors
    def unlink(self, path: str) -> int:
        self._check_writable()
        gpath = self._path(path)
        if self._stat(gpath).is_dir:
            raise fuse.FuseOSError(errno.EISDIR)
        self.client.delete(gpath, recursive=False)
        self._forget(gpath)
        return 0

    @fuse_errors
    def rename(self, old: str, new: str) -> int:
        self._check_writable()
        src, dst = self._path(old), self._path(new)
        with self._lock:
            pending = self._writing.get(src)
        if pending is not None and not self.client.exists(src):
            with self._lock:                    # still being written: it will appear at dst
                self._writing.pop(src, None)
                pending.path = dst
                self._writing[dst] = pending
            return 0
        self.client.rename(src, dst, overwrite=True)
        self._forget_tree(src)
        self._forget(dst)
        return 0

    @fuse_errors
    def chmod(self, path: str, mode: int) -> int:
        self._check_writable()
        gpath = self._path(path)
        pending = self._writing.get(gpath)
        if pending is not None:
            pending.mode = mode
            if not self.client.exists(gpath):
                return 0
        self.client.set_attr(gpath, mode=mode & 0o7777)
        self._forget(gpath)
        return 0

    @fuse_errors
    def chown(self, path: str, uid: int, gid: int) -> int:
        """Owners are gfs identities (`gfs chown`): only a no-op change is accepted."""
        gpath = self._path(path)
        shown = (self.uid, self.gid) if gpath in self._writing else \
            self._owner_ids(self._stat(gpath).owner)
        unchanged = (-1, 0xFFFFFFFF)
        if uid not in unchanged + (shown[0],) or gid not in unchanged + (shown[1],):
            raise fuse.FuseOSError(errno.EPERM)
        return 0

    @fuse_errors
    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        self._check_writable()
        gpath = self._path(path)
        mtime_ms = (times[1] if times else time.time_ns()) // 1_000_000
        pending = self._writing.get(gpath)
        if pending is not None:
            pending.mtime_ms = mtime_ms
            if not self.client.exists(gpath):
                return 0
        self.client.set_attr(gpath, mtime_ms=mtime_ms)
        self._forget(gpath)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        total = free = 0
        try:
            for server in self.client.chunkservers():
                if server["alive"]:
                    total += server["capacity_bytes"]
                    free += server["free_bytes"]
        except GfsError:
            pass            # only administrators may list chunkservers: sizes unknown (0)
        return {"f_bsize": BLOCK_SIZE, "f_frsize": BLOCK_SIZE, "f_blocks": total // BLOCK_SIZE,
                "f_bfree": free // BLOCK_SIZE, "f_bavail": free // BLOCK_SIZE,
                "f_namemax": 255}

    # --- files -----------------------------------------------------------------------------------

    @fuse_errors
    def create(self, path: str, mode: int, fi=None) -> int:
        self._check_writable()
        gpath = self._path(path)
        parent = self._stat(posixpath.dirname(gpath) or "/")
        if not parent.is_dir:
            raise fuse.FuseOSError(errno.ENOTDIR)
        return self._new_handle(WriteHandle(gpath, mode, self.spool_dir, stream_with=self.client))

    @fuse_errors
    def open(self, path: str, flags: int) -> int:
        gpath = self._path(path)
        if flags & os.O_ACCMODE == os.O_RDONLY:
            pending = self._writing.get(gpath)
            if pending is not None and not self.client.exists(gpath):
                raise fuse.FuseOSError(errno.EAGAIN)     # not there until its writer closes it
            info = self._remember(self.client.stat(gpath, for_read=True))
            if info.is_dir:
                raise fuse.FuseOSError(errno.EISDIR)
            return self._new_handle(ReadHandle(self.client, info, self.cache, self.readahead,
                                              reorder=KERNEL_READAHEAD_KIB * 1024 // BLOCK_SIZE))
        self._check_writable()
        info = self.client.stat(gpath, for_read=not flags & os.O_TRUNC)
        if info.is_dir:
            raise fuse.FuseOSError(errno.EISDIR)
        handle = WriteHandle(gpath, info.mode, self.spool_dir, stream_with=self.client)
        try:
            if not flags & os.O_TRUNC and info.size:
                handle.load(self.client, info)
        except BaseException:
            handle.close()
            raise
        return self._new_handle(handle)

    @fuse_errors
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return self._handles[fh].read(size, offset)

    @fuse_errors
    def read_into(self, fh: int, out: memoryview, offset: int) -> int:
        """`read` into the kernel's reply buffer (fuse_binding.Fuse): one copy per block."""
        return self._handles[fh].read_into(out, offset)

    @fuse_errors
    def write(self, path: str | None, data: bytes | memoryview, offset: int, fh: int) -> int:
        """`data` may be a view of libfuse's buffer (fuse_binding.Fuse): used, never kept."""
        handle = self._handles[fh]
        if not isinstance(handle, WriteHandle):
            raise fuse.FuseOSError(errno.EBADF)
        return handle.write(data, offset)

    @fuse_errors
    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        self._check_writable()
        gpath = self._path(path)
        handle = self._handles.get(fh) if fh else None
        handle = handle if isinstance(handle, WriteHandle) else self._writing.get(gpath)
        if handle is not None:
            handle.truncate(length)
            return 0
        # Not open for writing here: a whole-file rewrite, like open + truncate + close.
        info = self.client.stat(gpath, for_read=True)
        if info.is_dir:
            raise fuse.FuseOSError(errno.EISDIR)
        if length == info.size:
            return 0
        handle = WriteHandle(gpath, info.mode, self.spool_dir)
        try:
            if length:
                handle.load(self.client, info)
            handle.truncate(length)
            handle.upload(self.client)
        finally:
            handle.close()
        self._forget(gpath)
        return 0

    def _upload(self, fh: int) -> None:
        handle = self._handles.get(fh)
        if isinstance(handle, WriteHandle):
            try:
                handle.upload(self.client)
            except GfsError:
                handle.failed = True      # the program was told; release does not retry
                raise
            self._forget(handle.path)

    @fuse_errors
    def flush(self, path: str, fh: int) -> int:
        """Every close(2): the file appears now, or close returns the error."""
        self._upload(fh)
        return 0

    @fuse_errors
    def fsync(self, path: str, datasync: int, fh: int) -> int:
        self._upload(fh)            # a put returns once every replica fsync'd and it committed
        return 0

    @fuse_errors
    def release(self, path: str, fh: int) -> int:
        with self._lock:
            handle = self._handles.pop(fh, None)
            if isinstance(handle, WriteHandle) and self._writing.get(handle.path) is handle:
                self._writing.pop(handle.path, None)
        if handle is None:
            return 0
        try:
            if isinstance(handle, WriteHandle) and not handle.failed:
                handle.upload(self.client)      # normally done by flush already
                self._forget(handle.path)
        finally:
            handle.close()
        return 0

    # --- not in the gfs namespace ----------------------------------------------------------------

    def symlink(self, target: str, source: str) -> int:
        raise fuse.FuseOSError(errno.EOPNOTSUPP)

    def link(self, target: str, source: str) -> int:
        raise fuse.FuseOSError(errno.EOPNOTSUPP)

    def mknod(self, path: str, mode: int, dev: int) -> int:
        raise fuse.FuseOSError(errno.EOPNOTSUPP)
