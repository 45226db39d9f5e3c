"""The FUSE operations of FaultFS: a pass-through to the backing directory that records every
change in the undo log and injects the configured faults.

Everything happens on the backing directory at once, so reads (and mmap) always see the latest
view; what a power loss would take back lives in the undo log (undo.py)."""
from __future__ import annotations

import errno
import os
import stat
import threading

import mfusepy

from bench.chaos.faultfs.faults import Faults
from bench.chaos.faultfs.undo import UndoLog

_STAT_KEYS = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks",
              "st_blksize", "st_rdev")


def _attrs(st: os.stat_result) -> dict:
    attrs = {k: getattr(st, k) for k in _STAT_KEYS}
    attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
    return attrs


class FaultOps(mfusepy.Operations):
    """FUSE operations over `backing` (see the module docstring)."""

    use_ns = True

    def __init__(self, backing: str, log: UndoLog, faults: Faults):
        self.root = os.path.abspath(backing)
        self.log = log
        self.faults = faults
        self._inos: dict[int, int] = {}          # fd -> inode of the open file
        self._fd_lock = threading.Lock()
        self.fsyncs = 0

    def _path(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def _parent_ino(self, full: str) -> int:
        return os.stat(os.path.dirname(full)).st_ino

    # --- attributes and directories -------------------------------------------------------------

    def getattr(self, path, fh=None):
        self.faults.check("getattr", path)
        return _attrs(os.fstat(fh) if fh is not None else os.lstat(self._path(path)))

    def readdir(self, path, fh):
        self.faults.check("readdir", path)
        return [".", "..", *os.listdir(self._path(path))]

    def readlink(self, path):
        self.faults.check("readlink", path)
        return os.readlink(self._path(path))

    def statfs(self, path):
        st = os.statvfs(self.root)
        free = 0 if self.faults.enospc else None
        return {"f_bsize": st.f_bsize, "f_frsize": st.f_frsize, "f_blocks": st.f_blocks,
                "f_bfree": st.f_bfree if free is None else free,
                "f_bavail": st.f_bavail if free is None else free,
                "f_files": st.f_files, "f_ffree": st.f_ffree, "f_favail": st.f_favail,
                "f_namemax": st.f_namemax}

    def access(self, path, amode):
        if not os.access(self._path(path), amode):
            raise mfusepy.FuseOSError(errno.EACCES)
        return 0

    def chmod(self, path, mode):
        os.chmod(self._path(path), mode)
        return 0

    def chown(self, path, uid, gid):
        os.lchown(self._path(path), uid, gid)
        return 0

    def utimens(self, path, times=None):
        os.utime(self._path(path), ns=times, follow_symlinks=False) if times else \
            os.utime(self._path(path), follow_symlinks=False)
        return 0

    # --- directory entries ----------------------------------------------------------------------

    def _new_entry(self, path: str, make) -> None:
        """Create an entry with `make(full_path)` and record it."""
        self.faults.check("create", path)
        self.faults.check_space()
        full = self._path(path)
        with self.log.lock:
            make(full)
            st = os.lstat(full)
            self.log.created(self._parent_ino(full), os.path.basename(full), st.st_ino,
                             stat.S_ISDIR(st.st_mode))

    def mkdir(self, path, mode):
        self.faults.check("mkdir", path)
        self._new_entry(path, lambda full: os.mkdir(full, mode))
        return 0

    def mknod(self, path, mode, dev):
        self._new_entry(path, lambda full: os.mknod(full, mode, dev))
        return 0

    def symlink(self, target, source):
        self._new_entry(target, lambda full: os.symlink(source, full))
        return 0

    def link(self, target, source):
        raise mfusepy.FuseOSError(errno.EPERM)       # hard links are not modelled

    def unlink(self, path):
        self.faults.check("unlink", path)
        full = self._path(path)
        with self.log.lock:
            if os.path.isdir(full) and not os.path.islink(full):
                raise mfusepy.FuseOSError(errno.EISDIR)
            self.log.remove(full, is_dir=False)
        return 0

    def rmdir(self, path):
        self.faults.check("unlink", path)
        full = self._path(path)
        with self.log.lock:
            if not os.path.isdir(full) or os.path.islink(full):
                raise mfusepy.FuseOSError(errno.ENOTDIR)
            if os.listdir(full):
                raise mfusepy.FuseOSError(errno.ENOTEMPTY)
            self.log.remove(full, is_dir=True)
        return 0

    def rename(self, old, new):
        self.faults.check("rename", old)
        self.faults.check("rename", new)
        src, dst = self._path(old), self._path(new)
        with self.log.lock:
            src_dir = os.path.isdir(src) and not os.path.islink(src)
            if os.path.lexists(dst):
                if os.path.samefile(src, dst):
                    return 0
                dst_dir = os.path.isdir(dst) and not os.path.islink(dst)
                if dst_dir and not src_dir:
                    raise mfusepy.FuseOSError(errno.EISDIR)
                if src_dir and not dst_dir:
                    raise mfusepy.FuseOSError(errno.ENOTDIR)
                if dst_dir and os.listdir(dst):
                    raise mfusepy.FuseOSError(errno.ENOTEMPTY)
            self.log.rename(src, dst)
        return 0

    def fsyncdir(self, path, datasync, fh):
        self.faults.check("fsync", path)
        ino = os.stat(self._path(path)).st_ino
        before = self.log.seq
        self.faults.delay_fsync()
        with self.log.lock:
            self.log.dir_synced(ino, before)
        self.fsyncs += 1
        return 0

    # --- files ----------------------------------------------------------------------------------

    def _opened(self, fd: int) -> int:
        with self._fd_lock:
            self._inos[fd] = os.fstat(fd).st_ino
        return fd

    def open(self, path, flags):
        self.faults.check("open", path)
        full = self._path(path)
        fd = os.open(full, os.O_RDWR | os.O_NOFOLLOW)
        self._opened(fd)
        if flags & os.O_TRUNC:
            self.truncate(path, 0, fd)
        return fd

    def create(self, path, mode, flags):
        full = self._path(path)
        if os.path.lexists(full):
            if flags & os.O_EXCL:
                raise mfusepy.FuseOSError(errno.EEXIST)
            return self.open(path, flags)
        box = []
        self._new_entry(path, lambda f: box.append(
            os.open(f, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)))
        return self._opened(box[0])

    def read(self, path, size, offset, fh):
        self.faults.check("read", path or "")
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        self.faults.check("write", path or "")
        ino = self._inos[fh]
        with self.log.lock:
            if offset + len(data) > os.fstat(fh).st_size:
                self.faults.check_space()
            return self.log.write(fh, ino, data, offset)

    def truncate(self, path, length, fh=None):
        self.faults.check("truncate", path or "")
        fd = fh if fh is not None else os.open(self._path(path), os.O_RDWR | os.O_NOFOLLOW)
        try:
            with self.log.lock:
                if length > os.fstat(fd).st_size:
                    self.faults.check_space()
                self.log.truncate(fd, os.fstat(fd).st_ino, length)
        finally:
            if fh is None:
                os.close(fd)
        return 0

    def fallocate(self, path, mode, offset, size, fh):
        if mode:
            raise mfusepy.FuseOSError(errno.EOPNOTSUPP)
        if offset + size > os.fstat(fh).st_size:
            self.truncate(path, offset + size, fh)
        return 0

    def fsync(self, path, datasync, fh):
        self.faults.check("fsync", path or "")
        before = self.log.seq
        self.faults.delay_fsync()
        with self.log.lock:
            self.log.file_synced(self._inos[fh], before)
        self.fsyncs += 1
        return 0

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        with self._fd_lock:
            self._inos.pop(fh, None)
        os.close(fh)
        return 0
