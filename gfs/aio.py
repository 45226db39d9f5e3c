"""The asyncio client: the same operations as `gfs.client.Client`, awaitable.

Each call runs the synchronous client's code in a worker thread (`asyncio.to_thread`, or the
executor the client was given), so the event loop never blocks on the network or the disk and
both clients share one implementation of redirects, retries, exactly-once tagging and checksum
verification.
"""
from __future__ import annotations

import asyncio
import functools
from concurrent.futures import Executor
from typing import BinaryIO, Callable, TypeVar

from gfs.client import Client, FileInfo

T = TypeVar("T")


class AsyncClient:
    def __init__(self, masters: str | list[str] | None = None, *,
                 executor: Executor | None = None, **kwargs):
        """`executor`: where the calls run (default: asyncio's default executor, whose few
        threads a server that blocks one per transfer would soon use up)."""
        self._client = Client(masters, **kwargs)
        self._executor = executor

    @classmethod
    def _view(cls, client: Client, executor: Executor | None) -> "AsyncClient":
        """An AsyncClient over an existing synchronous client (its connections are shared)."""
        view = cls.__new__(cls)
        view._client, view._executor = client, executor
        return view

    def in_executor(self, executor: Executor) -> "AsyncClient":
        """A view of this client (same connections, same identity) whose calls run in
        `executor`."""
        return self._view(self._client, executor)

    async def run(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """`fn(*args, **kwargs)`, blocking, in one of this client's worker threads."""
        if self._executor is None:
            return await asyncio.to_thread(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(fn, *args, **kwargs))

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self.run(self._client.close)

    async def mkdir(self, path: str, parents: bool = False, mode: int = 0o755) -> int:
        return await self.run(self._client.mkdir, path, parents, mode)

    def acting_for(self, delegate: bytes | None) -> "AsyncClient":
        """`Client.acting_for`: the same connections, calls acting for another token."""
        return self._view(self._client.acting_for(delegate), self._executor)

    @property
    def inline_max(self) -> int:
        """`Client.inline_max`: the largest file `put` offers the masters to store inline."""
        return self._client.inline_max

    async def stat(self, path: str, stale_ok: bool = False, for_read: bool = False) -> FileInfo:
        return await self.run(self._client.stat, path, stale_ok, for_read)

    async def exists(self, path: str) -> bool:
        return await self.run(self._client.exists, path)

    async def list(self, path: str, stale_ok: bool = False, page_size: int = 1000
                   ) -> list[FileInfo]:
        return await self.run(lambda: list(self._client.list(path, stale_ok, page_size)))

    async def rename(self, src: str, dst: str, overwrite: bool = False) -> None:
        await self.run(self._client.rename, src, dst, overwrite)

    async def compose(self, dest: str, sources: list[str], **kwargs) -> int:
        return await self.run(self._client.compose, dest, sources, **kwargs)

    async def delete(self, path: str, recursive: bool = False, skip_trash: bool = False) -> int:
        return await self.run(self._client.delete, path, recursive, skip_trash)

    async def put(self, source: str | BinaryIO, path: str, **kwargs) -> FileInfo:
        return await self.run(self._client.put, source, path, **kwargs)

    async def get(self, path: str, sink: str | BinaryIO, **kwargs) -> int:
        return await self.run(self._client.get, path, sink, **kwargs)

    async def download(self, info: FileInfo, sink: BinaryIO, **kwargs) -> int:
        return await self.run(self._client.download, info, sink, **kwargs)

    async def set_visibility(self, path: str, visibility: str) -> None:
        await self.run(self._client.set_visibility, path, visibility)

    async def read(self, path: str, offset: int = 0, length: int = -1) -> bytes:
        return await self.run(self._client.read, path, offset, length)

    async def master_statuses(self) -> list[dict]:
        return await self.run(self._client.master_statuses)

    async def chunkservers(self) -> list[dict]:
        return await self.run(self._client.chunkservers)


