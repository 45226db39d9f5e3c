"""Request bodies as the S3 API receives them: plain (its SHA-256 checked when the signature
covers it), aws-chunked (chunked.py), with x-amz-checksum-* and Content-MD5 verified, read on
the event loop or by the gfs client's upload threads (objectio.BodySource)."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import zlib
from typing import AsyncIterator, Callable

from gateway.http.exchange import Exchange
from gateway.objectio import BodySource, body_pieces
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
        async for piece in body_pieces(self.ex):
            yield piece

    def _absorb(self, piece: bytes) -> None:
        self.size += len(piece)
        self.md5.update(piece)
        if self.sha256 is not None:
            self.sha256.update(piece)
        if self.checksum is not None:
            self.checksum.update(piece)

    async def pieces(self) -> AsyncIterator[bytes]:
        async for piece in self._raw():
            self._absorb(piece)
            yield piece
        self._check_digests()

    def thread_source(self, loop: asyncio.AbstractEventLoop,
                      limit: Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]] | None = None
                      ) -> BodySource:
        """The body as a blocking stream for the gfs client's upload threads, digested in
        the thread that reads it (objectio.BodySource: the MD5 / SHA-256 / CRC32 of parallel
        uploads no longer queue on the event loop) and checked at its end. `limit` wraps the
        raw pieces (e.g. a size cap raising S3Error)."""
        raw = self._raw() if limit is None else limit(self._raw())
        return BodySource(raw, loop, absorb=self._absorb, finish=self._check_digests,
                          expected_length=self.declared_size)

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
