"""One S3 request as the operations see it, and how gfs errors become S3 errors."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gateway.http.exchange import Exchange
from gateway.s3 import sigv4
from gateway.s3.errors import S3Error, access_denied
from gateway.s3.payload import Payload
from gfs.aio import AsyncClient
from gfs.errors import GfsError

XML = "application/xml"


@dataclass
class Call:
    ex: Exchange
    method: str
    bucket: str                       # "" for the service (ListBuckets)
    key: str                          # "" for bucket operations
    query: dict[str, str]
    client: AsyncClient               # acts for the caller's token (anonymous: nobody's)
    user: str                         # the caller's user ("" anonymous)
    verified: sigv4.Verified | None
    request_id: str
    owner: str = ""                   # the bucket's owner, once resolved
    caller_key: bytes = b""           # the caller's token hash (b"" anonymous): cache keys
    extra_headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def header(self, name: str) -> str | None:
        return self.ex.head.header(name)

    def headers_with(self, prefix: str) -> list[tuple[str, str]]:
        return [(k, v) for k, v in self.ex.head.headers if k.startswith(prefix)]

    def payload(self) -> Payload:
        return Payload(self.ex, self.verified)

    def require_user(self) -> str:
        if not self.user:
            raise access_denied("anonymous requests cannot do this: sign the request")
        return self.user

    async def xml(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None
                  ) -> None:
        await self.ex.respond(status, body, [("content-type", XML), *self.common_headers(),
                                             *(headers or [])])

    async def empty(self, status: int, headers: list[tuple[str, str]] | None = None) -> None:
        await self.ex.start_response(status, [*self.common_headers(), *(headers or []),
                                              ("content-length", "0")], end=True)

    def common_headers(self) -> list[tuple[str, str]]:
        return [("x-amz-request-id", self.request_id), ("x-amz-id-2", self.request_id),
                ("server", "gfs"), *self.extra_headers]


def s3_error(err: GfsError, not_found: str = "NoSuchKey", **extra: str) -> S3Error:
    """The S3 error for a gfs error (`not_found`: NoSuchKey or NoSuchBucket)."""
    code = err.code
    if code == "NOT_FOUND":
        what = "key" if not_found == "NoSuchKey" else "bucket"
        return S3Error(not_found, f"The specified {what} does not exist.", 404, **extra)
    if code in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
        return access_denied(f"Access Denied: {err.message}")
    if code == "ALREADY_EXISTS" or code == "FAILED_PRECONDITION" and "directory" in err.message:
        return S3Error("InvalidArgument", f"{err.message} (a key cannot be both an object and "
                       f"a prefix in gfs: docs/s3.md)", 409, **extra)
    if code == "FAILED_PRECONDITION":
        return S3Error("ServiceUnavailable", err.message, 503)
    if code == "RESOURCE_EXHAUSTED":
        return S3Error("QuotaExceeded", err.message, 403, **extra)
    if code == "INVALID_ARGUMENT":
        return S3Error("InvalidArgument", err.message, 400, **extra)
    if code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
        return S3Error("ServiceUnavailable", f"Please reduce your request rate: {err.message}",
                       503)
    return S3Error("InternalError", f"{code}: {err.message}", 500)
