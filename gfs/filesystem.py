"""`gfs://` for fsspec: pandas, pyarrow, dask, DuckDB and other data tools open gfs files by URL.

Addresses:
    gfs://alice/data/x.parquet        the cluster the CLI uses ($GFS_MASTERS, else the one
                                      `gfs cluster up` recorded), path /alice/data/x.parquet
    gfs://host:port/alice/x.parquet   the cluster whose master answers at host:port (a comma
                                      list of masters works too)
Credentials are the CLI's: `token=` / $GFS_TOKEN / the token `gfs login` stored, and `tls_ca=` /
$GFS_TLS_CA / the CA `gfs cluster up --tls` recorded.

Reads fetch only the byte ranges asked for (a Parquet column read does not download the file);
the file is stat'ed once when opened, so every range reads the same version. Writes are spooled
to a local temporary file (memory bounded; spills to disk past `spool_memory`) and become visible
atomically when the file is closed, as a `gfs put` does; a `with` block left by an exception
discards the write and leaves any previous file untouched. Writing creates missing parent
directories (`auto_mkdir=False` turns that off), as object stores and the tools written for them
expect.
"""
from __future__ import annotations

import datetime
import errno
import io
import tempfile
from contextlib import contextmanager
from typing import Any, BinaryIO, Iterator

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from gfs.client import Client, FileInfo, read_span
from gfs.errors import GfsError, errno_of

SPOOL_MEMORY = 16 << 20          # bytes a writer keeps in memory before spooling to disk

@contextmanager
def os_errors(path: str) -> Iterator[None]:
    """Raise gfs errors as the OSError subclass a Python data tool expects, message kept."""
    try:
        yield
    except GfsError as err:
        raise OSError(errno_of(err), f"{err.code}: {err}", path) from None


def _entry(info: FileInfo) -> dict[str, Any]:
    """fsspec's description of one file or directory (`name`, `size`, `type` + gfs's own)."""
    return {"name": info.path, "size": 0 if info.is_dir else info.size,
            "type": "directory" if info.is_dir else "file",
            "mtime": info.mtime_ms / 1000, "created": info.ctime_ms / 1000,
            "mode": info.mode, "owner": info.owner, "visibility": info.visibility,
            "inode": info.inode, "replication": info.replication,
            "storage_class": info.storage_class}


class GfsFileSystem(AbstractFileSystem):
    """fsspec file system over a gfs cluster (registered as the `gfs` protocol)."""

    protocol = "gfs"
    root_marker = "/"

    def __init__(self, masters: str | list[str] | None = None, token: str | None = None,
                 tls_ca: str | None = None, timeout: float = 30.0,
                 spool_memory: int = SPOOL_MEMORY, auto_mkdir: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.auto_mkdir = auto_mkdir
        self.masters, self.token, self.tls_ca = masters, token, tls_ca
        self.timeout, self.spool_memory = timeout, spool_memory
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        """Made on first use, so a file system can be pickled to workers (dask) and rebuilt."""
        if self._client is None:
            self._client = Client(self.masters, deadline=self.timeout, token=self.token,
                                  tls_ca=self.tls_ca)
        return self._client

    # --- addresses -----------------------------------------------------------------------------

    @staticmethod
    def _split_url(path: str) -> tuple[str | None, str]:
        """(masters in the URL or None, the gfs path)."""
        if path.startswith("gfs://"):
            path = path[len("gfs://"):]
            first, _, rest = path.partition("/")
            if ":" in first:                   # gfs://host:port/... names the cluster
                return first, "/" + rest
        elif path.startswith("gfs:"):
            path = path[len("gfs:"):]
        return None, path

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        _, path = cls._split_url(path)
        path = "/" + path.strip("/")
        while "//" in path:
            path = path.replace("//", "/")
        return path

    @staticmethod
    def _get_kwargs_from_urls(path: str) -> dict[str, Any]:
        masters, _ = GfsFileSystem._split_url(path)
        return {"masters": masters} if masters else {}

    def unstrip_protocol(self, name: str) -> str:
        return "gfs://" + name.lstrip("/")

    # --- reading the namespace -----------------------------------------------------------------

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list:
        path = self._strip_protocol(path)
        with os_errors(path):
            entries = [_entry(i) for i in self.client.list(path, brief=True)]
        return entries if detail else [e["name"] for e in entries]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        with os_errors(path):
            return _entry(self.client.stat(path))

    def exists(self, path: str, **kwargs: Any) -> bool:
        try:
            self.info(path)
            return True
        except FileNotFoundError:
            return False

    def ukey(self, path: str) -> str:
        """Changes whenever the file is replaced or rewritten (fsspec's cache key)."""
        info = self.info(path)
        return f"{info['inode']}:{info['mtime']}"

    def modified(self, path: str) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.info(path)["mtime"], datetime.timezone.utc)

    def created(self, path: str) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.info(path)["created"], datetime.timezone.utc)

    def cat_file(self, path: str, start: int | None = None, end: int | None = None,
                 **kwargs: Any) -> bytes:
        path = self._strip_protocol(path)
        with os_errors(path):
            info = self.client.stat(path, for_read=True, span=_span(start, end))
            lo, hi = _bounds(info.size, start, end)
            return self.client.read_at(info, lo, hi - lo) if hi > lo else b""

    # --- changing the namespace ----------------------------------------------------------------

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        path = self._strip_protocol(path)
        with os_errors(path):
            self.client.mkdir(path, parents=create_parents)
        self.invalidate_cache(self._parent(path))

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        path = self._strip_protocol(path)
        if not exist_ok and self.exists(path):
            raise FileExistsError(errno.EEXIST, "already exists", path)
        self.mkdir(path, create_parents=True)

    def rmdir(self, path: str) -> None:
        path = self._strip_protocol(path)
        if self.info(path)["type"] != "directory":
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
        with os_errors(path):
            self.client.delete(path, recursive=False)
        self.invalidate_cache(self._parent(path))

    def _rm(self, path: str) -> None:
        """One file or empty directory, to the caller's trash as `gfs rm` does."""
        path = self._strip_protocol(path)
        with os_errors(path):
            self.client.delete(path, recursive=False)
        self.invalidate_cache(self._parent(path))

    def rm(self, path, recursive: bool = False, maxdepth: int | None = None) -> None:
        """A directory with `recursive` is removed in one command (atomically, to the trash)."""
        paths = path if isinstance(path, list) else [path]
        for p in paths:
            if any(ch in p for ch in "*?["):
                for match in sorted(self.expand_path(p, recursive=recursive, maxdepth=maxdepth),
                                    reverse=True):
                    self._rm_one(match, recursive)
            else:
                self._rm_one(p, recursive)

    def _rm_one(self, path: str, recursive: bool) -> None:
        path = self._strip_protocol(path)
        with os_errors(path):
            try:
                self.client.delete(path, recursive=recursive)
            except GfsError as err:
                if err.code != "NOT_FOUND":    # already gone (inside a directory removed above)
                    raise
        self.invalidate_cache(self._parent(path))

    def mv(self, path1: str, path2: str, recursive: bool = False, maxdepth: int | None = None,
           **kwargs: Any) -> None:
        """A gfs rename: atomic, for files and whole directories alike; replaces a file at the
        destination as POSIX rename does."""
        src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
        with os_errors(src):
            self.client.rename(src, dst, overwrite=True)
        self.invalidate_cache(self._parent(src))
        self.invalidate_cache(self._parent(dst))

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        self.put_stream(io.BytesIO(value), self._strip_protocol(path),
                        overwrite=mode == "overwrite")

    def put_stream(self, source: BinaryIO, path: str, overwrite: bool = True) -> None:
        """Upload a readable, seekable source to `path`, creating missing parent directories
        (as object stores and the data tools writing to them expect)."""
        with os_errors(path):
            try:
                self.client.put(source, path, overwrite=overwrite)
            except GfsError as err:
                parent = self._parent(path)
                if err.code != "NOT_FOUND" or not self.auto_mkdir or self.client.exists(parent):
                    raise
                try:
                    self.client.mkdir(parent, parents=True)
                except GfsError:
                    raise err from None        # the put's own error says more (hidden parent)
                source.seek(0)
                self.client.put(source, path, overwrite=overwrite)
        self.invalidate_cache(self._parent(path))

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None,
              autocommit: bool = True, cache_options: dict | None = None,
              **kwargs: Any) -> "GfsFile":
        path = self._strip_protocol(path)
        if mode not in ("rb", "wb", "xb"):
            raise ValueError(f"gfs files open as rb, wb or xb, not {mode!r} "
                             "(gfs files are written whole and appear at close)")
        return GfsFile(self, path, mode, block_size=block_size or "default",
                       autocommit=autocommit, cache_options=cache_options, **kwargs)


def _bounds(size: int, start: int | None, end: int | None) -> tuple[int, int]:
    """fsspec's start/end (None, negative = from the end) as 0 <= lo <= hi <= size."""
    lo = 0 if start is None else (max(0, size + start) if start < 0 else min(start, size))
    hi = size if end is None else (max(0, size + end) if end < 0 else min(end, size))
    return lo, max(lo, hi)


def _span(start: int | None, end: int | None) -> tuple[int, int] | None:
    """The `Client.stat` span of a start/end known before the size (neither from the end);
    None for the whole chunk list."""
    if (start or 0) < 0 or (end is not None and end < 0):
        return None
    first = start or 0
    return read_span(first, -1 if end is None else max(0, end - first))


class GfsFile(AbstractBufferedFile):
    """A file opened through `GfsFileSystem.open`."""

    # What a read fetches beyond what was asked (fsspec's readahead cache). Small, because the
    # big readers of these files (Parquet, Arrow) jump between column chunks: each jump costs
    # this much extra, while large sequential reads ask for large ranges anyway.
    DEFAULT_BLOCK_SIZE = 256 << 10

    def __init__(self, fs: GfsFileSystem, path: str, mode: str = "rb", **kwargs: Any):
        self._gfs_info: FileInfo | None = None
        self._spool = None
        if mode == "rb":
            with os_errors(path):
                self._gfs_info = fs.client.stat(path, for_read=True)
            if self._gfs_info.is_dir:
                raise IsADirectoryError(errno.EISDIR, "is a directory", path)
            kwargs["size"] = self._gfs_info.size
        elif mode == "xb" and fs.exists(path):
            raise FileExistsError(errno.EEXIST, "already exists", path)
        super().__init__(fs, path, mode, **kwargs)

    def _fetch_range(self, start: int, end: int) -> bytes:
        lo, hi = _bounds(self.size, start, end)
        if hi <= lo:
            return b""
        with os_errors(self.path):
            return self.fs.client.read_at(self._gfs_info, lo, hi - lo)

    def _initiate_upload(self) -> None:
        self._spool = io.BytesIO()

    def _upload_chunk(self, final: bool = False) -> bool:
        data = self.buffer.getbuffer()
        if isinstance(self._spool, io.BytesIO) and \
                self._spool.tell() + len(data) > self.fs.spool_memory:
            on_disk = tempfile.TemporaryFile(prefix="gfs-upload-")   # unlinked: nothing leaks
            on_disk.write(self._spool.getbuffer())
            self._spool = on_disk
        self._spool.write(data)
        del data
        if final and self.autocommit:
            self.commit()
        return True

    def commit(self) -> None:
        """Put the spooled bytes: the file appears whole, or not at all."""
        spool, self._spool = self._spool, None
        try:
            spool.seek(0)
            self.fs.put_stream(spool, self.path, overwrite=self.mode == "wb")
        finally:
            spool.close()

    def discard(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self.mode != "rb" and not self.closed:
            # Leaving the block by an exception: nothing was meant to be published.
            self.discard()
            self.closed = True
            return
        self.close()
