"""Request bodies as the S3 API receives them: plain (its SHA-256 checked when the signature
covers it), aws-chunked (chunked.py), with x-amz-checksum-* and Content-MD5 verified; and the
bridges between the gateway's event loop and the gfs client's worker threads."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import zlib
from typing import AsyncIterator, Callable

from gateway.http.exchange import Exchange
from gateway.s3 import sigv4
from gateway.s3.sigv4 import header_value
from gateway.s3.chunked import ChunkedDecoder
from gateway.s3.errors import S3Error, invalid_argument, not_implemented


class _Crc32:
    def __init__(self):
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


CHECKSUMS: dict[str, Callable[[], object]] = {
    "crc32": _Crc32, "sha1": hashlib.sha1, "sha256": hashlib.sha256}
UNVERIFIABLE = ("crc32c", "crc64nvme")


class Payload:
    """One request's body: `pieces()` yields the decoded bytes and, at the end, checks every
    digest the request claimed (raising S3Error before the last piece is acknowledged)."""

    def __init__(self, ex: Exchange, verified: sigv4.Verified | None):
        self.ex = ex
        headers = ex.head.headers
        self.headers = headers
        mode = verified.claim.payload_hash if verified else sigv4.UNSIGNED
        self.mode = mode
        self.md5 = hashlib.md5()
        self.sha256 = hashlib.sha256() if len(mode) == 64 else None
        self.size = 0
        decoded = header_value(headers, "x-amz-decoded-content-length")
        if mode in (sigv4.STREAMING_SIGNED, sigv4.STREAMING_UNSIGNED_TRAILER):
            if decoded is None or not decoded.isdigit():
                raise S3Error("MissingContentLength", "a streaming upload needs "
                              "x-amz-decoded-content-length", 411)
            self.decoder = ChunkedDecoder(ex.read, verified if mode == sigv4.STREAMING_SIGNED
                                          else None, int(decoded))
            self.declared_size: int | None = int(decoded)
        elif mode.startswith("STREAMING-"):
            raise not_implemented(f"the payload mode {mode[:60]}")
        else:
            self.decoder = None
            length = header_value(headers, "content-length")
            self.declared_size = int(length) if length and length.strip().isdigit() else None
        self.algorithm, self.claimed = self._checksum_claim()
        self.checksum = CHECKSUMS[self.algorithm]() if self.algorithm else None
        md5 = header_value(headers, "content-md5")
        self.content_md5 = md5.strip() if md5 else None

    def _checksum_claim(self) -> tuple[str, str | None]:
        """(algorithm, the value in a header, or None when it comes as a trailer)."""
        for key, value in self.headers:
            if key.startswith("x-amz-checksum-") and key not in ("x-amz-checksum-type",
                                                                 "x-amz-checksum-algorithm"):
                return self._algorithm(key[len("x-amz-checksum-"):]), value.strip()
        trailer = header_value(self.headers, "x-amz-trailer")
        if trailer:
            name = trailer.strip().lower()
            if not name.startswith("x-amz-checksum-"):
                raise invalid_argument(f"unsupported trailer {name[:60]!r}")
            return self._algorithm(name[len("x-amz-checksum-"):]), None
        return "", None

    @staticmethod
    def _algorithm(name: str) -> str:
        if name in CHECKSUMS:
            return name
        if name in UNVERIFIABLE:
            raise not_implemented(f"the {name} checksum (use crc32, sha1 or sha256)")
        raise invalid_argument(f"unknown checksum algorithm {name[:40]!r}")

    async def _raw(self) -> AsyncIterator[bytes]:
        if self.decoder is not None:
            async for piece in self.decoder.pieces():
                yield piece
            return
        while True:
            data = await self.ex.read()
            if not data:
                return
            yield data

    async def pieces(self) -> AsyncIterator[bytes]:
        async for piece in self._raw():
            self.size += len(piece)
            self.md5.update(piece)
            if self.sha256 is not None:
                self.sha256.update(piece)
            if self.checksum is not None:
                self.checksum.update(piece)
            yield piece
        self._check_digests()

    def _check_digests(self) -> None:
        if self.sha256 is not None and self.sha256.hexdigest() != self.mode:
            raise S3Error("XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' "
                          "header does not match what was computed.", 400)
        if self.content_md5 is not None and not hmac.compare_digest(
                base64.b64encode(self.md5.digest()).decode(), self.content_md5):
            raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we "
                          "received.", 400)
        if self.checksum is not None:
            claimed = self.claimed
            if claimed is None:
                claimed = (self.decoder.trailers if self.decoder else {}).get(
                    f"x-amz-checksum-{self.algorithm}")
                if claimed is None:
                    raise invalid_argument(f"the trailer x-amz-checksum-{self.algorithm} was "
                                           f"announced but not sent")
            if not hmac.compare_digest(self.checksum_value(), claimed):
                raise S3Error("BadDigest", f"The {self.algorithm.upper()} you specified did "
                              f"not match the calculated checksum.", 400)

    def checksum_value(self) -> str:
        return base64.b64encode(self.checksum.digest()).decode() if self.checksum else ""

    @property
    def etag(self) -> str:
        return '"' + self.md5.hexdigest() + '"'

    async def read_all(self, limit: int) -> bytes:
        out = bytearray()
        async for piece in self.pieces():
            out += piece
            if len(out) > limit:
                raise S3Error("MaxMessageLengthExceeded", f"the request body is larger than "
                              f"{limit} bytes", 400)
        return bytes(out)


class ThreadSource(io.BufferedIOBase):
    """A blocking, read-only file over an async iterator of bytes on `loop`, for the gfs
    client's upload threads. read(n) returns n bytes except at the end."""

    def __init__(self, pieces: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop):
        self._pieces = pieces
        self._loop = loop
        self._buf = bytearray()
        self._done = False

    def readable(self) -> bool:
        return True

    def _next(self) -> bytes:
        future = asyncio.run_coroutine_threadsafe(anext(self._pieces, b""), self._loop)
        return future.result()

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n < 0 or len(self._buf) < n):
            piece = self._next()
            if not piece:
                self._done = True
                break
            self._buf += piece
        if n < 0 or n >= len(self._buf):
            out, self._buf = bytes(self._buf), bytearray()
        else:
            out = bytes(self._buf[:n])
            del self._buf[:n]
        return out


class ThreadSink(io.RawIOBase):
    """A blocking, write-only file that sends what the gfs client's download threads write to
    the exchange on `loop` (waiting for it: the client's backpressure)."""

    def __init__(self, ex: Exchange, loop: asyncio.AbstractEventLoop):
        self._ex = ex
        self._loop = loop

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        asyncio.run_coroutine_threadsafe(self._ex.write(bytes(data)), self._loop).result()
        return len(data)
