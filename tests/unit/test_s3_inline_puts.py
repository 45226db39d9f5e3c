"""The pieces behind small S3 objects on the inline path: the body size a request announces
(Payload.declared_size), the bucket-owner memory (Owners), the inline bytes check. The end to
end test is tests/integration/test_s3_small_objects.py."""
from __future__ import annotations

import asyncio
import time

import pytest

from gateway.http.exchange import RequestHead
from gateway.s3 import sigv4
from gateway.s3.buckets import CACHE_S, Owners
from gateway.s3.payload import Payload
from gfs.checksum import inline_checksum
from gfs.client import FileInfo, checked_inline
from gfs.errors import DataLoss, NotFound


class _Exchange:
    def __init__(self, headers: list[tuple[str, str]], body: bytes = b""):
        self.head = RequestHead("PUT", "/b/k", "", headers, "1.1", "http", "h", ("127.0.0.1", 1))
        self._body = [body, b""]

    async def read(self) -> bytes:
        return self._body.pop(0) if self._body else b""


def _verified(payload_hash: str) -> sigv4.Verified:
    claim = sigv4.Claim("GK00", "20260101", "us-east-1", "s3", "20260101T000000Z", (), "0" * 64,
                        payload_hash)
    return sigv4.Verified(claim, b"k" * 32)


def test_the_declared_size_is_the_content_length_or_the_decoded_length():
    assert Payload(_Exchange([("content-length", "4096")]), None).declared_size == 4096
    assert Payload(_Exchange([]), None).declared_size is None
    assert Payload(_Exchange([("content-length", "x1")]), None).declared_size is None
    streamed = Payload(_Exchange([("content-length", "4200"),
                                  ("x-amz-decoded-content-length", "4096"),
                                  ("x-amz-trailer", "x-amz-checksum-crc32")]),
                       _verified(sigv4.STREAMING_UNSIGNED_TRAILER))
    assert streamed.declared_size == 4096


def test_a_small_body_is_read_whole_with_its_digest():
    payload = Payload(_Exchange([("content-length", "5")], b"hello"), None)
    assert asyncio.run(payload.read_all(payload.declared_size)) == b"hello"
    assert payload.etag == '"5d41402abc4b2a76b9719d911017c592"'


class _Admin:
    """The gateway's client as Owners uses it: stat of /USER/BUCKET, counted."""

    def __init__(self, buckets: set[str]):
        self.buckets = buckets
        self.stats = 0

    async def stat(self, path: str) -> FileInfo:
        self.stats += 1
        if path not in self.buckets:
            raise NotFound(path)
        return FileInfo(path=path, inode=1, type="dir", size=0, mode=0o755, owner="",
                        ctime_ms=0, mtime_ms=0, replication=0, storage_class="", chunk_size=0)


def test_a_callers_own_bucket_is_remembered_but_create_bucket_looks_again():
    admin = _Admin({"/alice/b"})
    owners = Owners(admin, lambda: ["alice", "bob"])
    assert asyncio.run(owners.find("b", "alice")) == "alice" and admin.stats == 1
    assert asyncio.run(owners.find("b", "alice")) == "alice" and admin.stats == 1
    admin.buckets.clear()                                     # deleted elsewhere
    assert asyncio.run(owners.find("b", "alice", fresh=True)) == ""
    assert asyncio.run(owners.find("b", "alice")) == ""       # not the forgotten memory
    admin.buckets.add("/alice/b")
    assert asyncio.run(owners.find("b", "alice")) == "alice"
    calls = admin.stats
    owners._cache["b"] = ("alice", time.monotonic() - CACHE_S - 1)   # remembered long ago
    assert asyncio.run(owners.find("b", "alice")) == "alice" and admin.stats == calls + 1


def test_another_users_bucket_is_not_taken_for_the_callers():
    admin = _Admin({"/bob/shared"})
    owners = Owners(admin, lambda: ["alice", "bob"])
    assert asyncio.run(owners.find("shared", "alice")) == "bob"
    assert asyncio.run(owners.find("shared", "alice")) == "bob"
    admin.buckets = {"/alice/shared"}                         # bob's went, alice made hers
    assert asyncio.run(owners.find("shared", "alice")) == "alice"


def test_inline_bytes_are_served_only_when_they_match_their_checksum():
    info = FileInfo(path="/a/b/k", inode=2, type="file", size=5, mode=0o644, owner="a",
                    ctime_ms=0, mtime_ms=0, replication=3, storage_class="hot", chunk_size=0,
                    inline=True, inline_checksum=inline_checksum(b"hello"))
    assert checked_inline(info, b"hello") == b"hello"
    for damaged in (b"hellO", b"hell", b"hello!"):
        with pytest.raises(DataLoss):
            checked_inline(info, damaged)


def test_the_s3_apps_client_calls_run_in_its_own_threads_not_asyncios_few():
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from gfs.aio import AsyncClient
    pool = ThreadPoolExecutor(max_workers=20, thread_name_prefix="given")
    base = AsyncClient("127.0.0.1:1", token="")
    client = base.in_executor(pool)
    barrier = threading.Barrier(20, timeout=10)

    def meet() -> str:
        barrier.wait()                     # 20 calls at once: more than asyncio's default pool
        return threading.current_thread().name

    async def main():
        names = await asyncio.gather(*(client.run(meet) for _ in range(20)))
        default = await base.run(lambda: threading.current_thread().name)
        return names, default
    names, default = asyncio.run(main())
    assert all(n.startswith("given") for n in names) and not default.startswith("given")
    assert client.acting_for(None)._executor is pool
    pool.shutdown()
