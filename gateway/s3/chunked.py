"""The `aws-chunked` content encoding of streaming uploads, decoded as it arrives.

Signed (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`): `HEX;chunk-signature=SIG\\r\\n DATA \\r\\n` ...
ending with a 0-length chunk; each signature chains on the previous one (the seed is the
request's), so every chunk is verified before its bytes go on (a chunk is held whole, at most
MAX_SIGNED_CHUNK bytes). Unsigned with trailer (`STREAMING-UNSIGNED-PAYLOAD-TRAILER`, what
boto3 sends by default over TLS): `HEX\\r\\n DATA \\r\\n` ... `0\\r\\n`, then trailer lines
`name:value\\r\\n` and an empty line; the trailers (a checksum) are kept for the caller to check.
Anything else (a bad size line, a chunk longer than it said, a truncated body, a decoded
length other than `x-amz-decoded-content-length`) is an S3 error, and nothing is stored.
"""
from __future__ import annotations

import hashlib
import hmac
from typing import AsyncIterator, Awaitable, Callable

from gateway.s3 import sigv4
from gateway.s3.errors import S3Error

MAX_LINE = 4096
MAX_SIGNED_CHUNK = 16 << 20
MAX_TRAILERS = 16
Read = Callable[[], Awaitable[bytes]]


def incomplete(message: str) -> S3Error:
    return S3Error("IncompleteBody", message, 400)


class ChunkedDecoder:
    def __init__(self, read: Read, verified: sigv4.Verified | None, decoded_length: int | None):
        """`verified`: the request's verification (None: unsigned chunks with trailers)."""
        self._read = read
        self._buf = bytearray()
        self._eof = False
        self._verified = verified
        self._previous = verified.seed_signature if verified else ""
        self._expected = decoded_length
        self.trailers: dict[str, str] = {}
        self.decoded = 0

    async def _more(self) -> None:
        data = await self._read()
        if not data:
            self._eof = True
        self._buf += data

    async def _line(self) -> str:
        while True:
            at = self._buf.find(b"\r\n")
            if at >= 0:
                line = bytes(self._buf[:at])
                del self._buf[:at + 2]
                try:
                    return line.decode("ascii")
                except UnicodeDecodeError:
                    raise incomplete("a chunk header is not ASCII") from None
            if len(self._buf) > MAX_LINE:
                raise incomplete("a chunk header line is too long")
            if self._eof:
                raise incomplete("the aws-chunked body ended inside a chunk header")
            await self._more()

    async def _exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if self._eof:
                raise incomplete(f"the aws-chunked body ended inside a chunk ({n} bytes "
                                 f"announced, {len(self._buf)} sent)")
            await self._more()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    async def _crlf(self) -> None:
        if await self._exactly(2) != b"\r\n":
            raise incomplete("a chunk is longer than its announced size")

    def _header(self, line: str) -> tuple[int, str]:
        size_text, _, ext = line.partition(";")
        size_text = size_text.strip()
        if not size_text or len(size_text) > 16 or any(c not in "0123456789abcdefABCDEF"
                                                       for c in size_text):
            raise incomplete(f"bad chunk size line {line[:80]!r}")
        signature = ""
        if self._verified is not None:
            name, _, signature = ext.partition("=")
            if name.strip() != "chunk-signature" or not signature:
                raise S3Error("SignatureDoesNotMatch", "a signed chunk has no chunk-signature",
                              403)
        return int(size_text, 16), signature.strip()

    def _check(self, data: bytes, signature: str) -> None:
        expected = sigv4.chunk_signature(self._verified, self._previous,
                                         hashlib.sha256(data).hexdigest())
        if not hmac.compare_digest(expected, signature):
            raise S3Error("SignatureDoesNotMatch", "a chunk's signature does not match", 403)
        self._previous = expected

    async def pieces(self) -> AsyncIterator[bytes]:
        """The decoded payload, in pieces; raises S3Error on any violation (before the end)."""
        while True:
            size, signature = self._header(await self._line())
            if self._verified is not None:
                if size > MAX_SIGNED_CHUNK:
                    raise incomplete(f"a signed chunk of {size} bytes is larger than "
                                     f"{MAX_SIGNED_CHUNK}")
                data = await self._exactly(size)
                self._check(data, signature)
                if size:
                    await self._crlf()
                    yield from_piece(self, data)
                    continue
                await self._crlf()
                break
            if size == 0:
                await self._read_trailers()
                break
            left = size
            while left:
                if not self._buf:
                    if self._eof:
                        raise incomplete("the aws-chunked body ended inside a chunk")
                    await self._more()
                    continue
                take = bytes(self._buf[:left])
                del self._buf[:len(take)]
                left -= len(take)
                yield from_piece(self, take)
            await self._crlf()
        if self._buf.strip() or not self._eof and await self._read():
            raise incomplete("bytes follow the end of the aws-chunked body")
        if self._expected is not None and self.decoded != self._expected:
            raise incomplete(f"x-amz-decoded-content-length is {self._expected}, the chunks "
                             f"held {self.decoded} bytes")

    async def _read_trailers(self) -> None:
        while True:
            line = await self._line()
            if line == "":
                return
            name, sep, value = line.partition(":")
            if not sep or len(self.trailers) >= MAX_TRAILERS:
                raise incomplete(f"bad trailer line {line[:80]!r}")
            self.trailers[name.strip().lower()] = value.strip()


def from_piece(decoder: ChunkedDecoder, data: bytes) -> bytes:
    decoder.decoded += len(data)
    if decoder._expected is not None and decoder.decoded > decoder._expected:
        raise incomplete("the chunks hold more than x-amz-decoded-content-length")
    return data
