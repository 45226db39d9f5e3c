"""The asyncio client: the same operations as `gfs.client.Client`, awaitable.

Most calls run the synchronous client's code in a worker thread (`asyncio.to_thread`, or the
executor the client was given), so the event loop never blocks on the network or the disk and
both clients share one implementation of redirects, retries, exactly-once tagging and checksum
verification. The one-RPC calls a server makes per request (`stat`, `put_inline`,
`list_page`) go over grpc.aio channels on the running loop instead (`Client.call_async`: the
same retry policy): no thread hand-off, which costs a small object's request as much as the
call itself — and as messages of one stream per master (gfs/callstream.py), which costs both
sides less than a call each.
"""
from __future__ import annotations

import asyncio
import contextvars
import functools
from concurrent.futures import Executor
from typing import BinaryIO, Callable, TypeVar

from gfs.callstream import CallStream
from gfs.client import Client, FileInfo, stat_request
from gfs.errors import GfsError
from gfs.paths import utf8
from proto import master_pb2 as pb
from proto import master_pb2_grpc as pb_grpc

T = TypeVar("T")


class _LoopStubs:
    """Master calls on the running loop: over one call stream per master (gfs/callstream.py),
    or as grpc.aio calls of their own to a master that does not serve the stream. Channels
    belong to the loop they were made on: another loop gets fresh ones."""

    def __init__(self, client: Client):
        self._client = client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._channels: dict[str, object] = {}
        self._stubs: dict[str, pb_grpc.MasterStub] = {}
        self._streams: dict[str, CallStream] = {}

    def _channel(self, address: str):
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._channels, self._stubs, self._streams = loop, {}, {}, {}
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = self._client._channels.aio_channel(address)
        return channel

    async def send(self, address: str, method: str, request, timeout: float,
                   metadata: tuple) -> object:
        """One try of `method` at `address` (Client.call_async)."""
        channel = self._channel(address)
        stream = self._streams.get(address)
        if stream is None:
            stream = self._streams[address] = CallStream(channel, address)
        if not stream.unsupported:
            return await stream.call(method, request, timeout=timeout, metadata=metadata)
        stub = self._stubs.get(address)
        if stub is None:
            stub = self._stubs[address] = pb_grpc.MasterStub(channel)
        return await getattr(stub, method)(request, timeout=timeout, metadata=metadata)

    async def close(self) -> None:
        mine = self._loop is asyncio.get_running_loop()
        channels, streams = (self._channels, self._streams) if mine else ({}, {})
        self._loop, self._channels, self._stubs, self._streams = None, {}, {}, {}
        for stream in streams.values():
            await stream.close()
        for channel in channels.values():
            await channel.close()


class AsyncClient:
    def __init__(self, masters: str | list[str] | None = None, *,
                 executor: Executor | None = None, **kwargs):
        """`executor`: where the calls run (default: asyncio's default executor, whose few
        threads a server that blocks one per transfer would soon use up)."""
        self._client = Client(masters, **kwargs)
        self._executor = executor
        self._aio = None if self._client._channels.signs_calls else _LoopStubs(self._client)

    @classmethod
    def _view(cls, client: Client, executor: Executor | None,
              aio: _LoopStubs | None) -> "AsyncClient":
        """An AsyncClient over an existing synchronous client (its connections are shared)."""
        view = cls.__new__(cls)
        view._client, view._executor, view._aio = client, executor, aio
        return view

    def in_executor(self, executor: Executor) -> "AsyncClient":
        """A view of this client (same connections, same identity) whose calls run in
        `executor`."""
        return self._view(self._client, executor, self._aio)

    async def run(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """`fn(*args, **kwargs)`, blocking, in one of this client's worker threads (in a copy
        of the caller's context: `gfs.client.MASTER_CALLS` counts its calls too)."""
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        if self._executor is None:
            return await asyncio.to_thread(call)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def _rpc(self, method: str, request):
        """One master call on the loop (grpc.aio), or in a worker thread for a client whose
        calls are signed (daemons)."""
        if self._aio is None:
            return await self.run(self._client._call, method, request)
        return await self._client.call_async(self._aio.send, method, request)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._aio is not None:
            await self._aio.close()
        await self.run(self._client.close)

    async def mkdir(self, path: str, parents: bool = False, mode: int = 0o755) -> int:
        return await self.run(self._client.mkdir, path, parents, mode)

    def acting_for(self, delegate: bytes | None) -> "AsyncClient":
        """`Client.acting_for`: the same connections, calls acting for another token."""
        return self._view(self._client.acting_for(delegate), self._executor, self._aio)

    @property
    def inline_max(self) -> int:
        """`Client.inline_max`: the largest file `put` offers the masters to store inline."""
        return self._client.inline_max

    async def stat(self, path: str, stale_ok: bool = False, for_read: bool = False,
                   span: tuple[int, int] | None = None) -> FileInfo:
        """`Client.stat`, on the loop."""
        return FileInfo.from_proto((await self._rpc("Stat", stat_request(
            path, stale_ok, for_read, span))).info)

    async def exists(self, path: str) -> bool:
        return await self.run(self._client.exists, path)

    async def list(self, path: str, stale_ok: bool = False, page_size: int = 1000,
                   brief: bool = False) -> list[FileInfo]:
        return await self.run(lambda: list(self._client.list(path, stale_ok, page_size, brief)))

    async def list_page(self, path: str, start_after: str = "", limit: int = 1000,
                        brief: bool = False) -> tuple[list[FileInfo], str]:
        """`Client.list_page` (linearizable), on the loop."""
        resp = await self._rpc("List", pb.ListRequest(path=utf8(path), start_after=start_after,
                                                      limit=limit, brief=brief))
        return [FileInfo.from_proto(e) for e in resp.entries], resp.next

    async def rename(self, src: str, dst: str, overwrite: bool = False) -> None:
        await self.run(self._client.rename, src, dst, overwrite)

    async def compose(self, dest: str, sources: list[str], **kwargs) -> int:
        return await self.run(self._client.compose, dest, sources, **kwargs)

    async def delete(self, path: str, recursive: bool = False, skip_trash: bool = False) -> int:
        return await self.run(self._client.delete, path, recursive, skip_trash)

    async def put_inline(self, data: bytes, path: str, *, overwrite: bool = False,
                         mode: int = 0o644, xattrs: Callable[[], dict[str, str]] | None = None
                         ) -> FileInfo | None:
        """Store `data` (at most `inline_max` bytes) at `path` inline in the metadata with its
        `xattrs()`, by one PutInline on the loop — what `put` does for a small file; None when
        the masters refuse to store that much inline (then `put` it as chunks)."""
        fields = self._client.inline_fields(data, path, overwrite=overwrite, mode=mode,
                                            xattrs=xattrs)
        try:
            with self._client.tagged(pb.PutInlineRequest, fields) as request:
                resp = await self._rpc("PutInline", request)
        except GfsError as err:
            self._client.inline_refused(err, len(data))
            return None
        return FileInfo.from_proto(resp.info)

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


