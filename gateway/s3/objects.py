"""Object operations: PutObject, GetObject/HeadObject, DeleteObject, DeleteObjects, CopyObject."""
from __future__ import annotations

import asyncio
import hashlib
import io
import os
from urllib.parse import unquote

from gateway.s3 import attributes, conditions, xmldoc
from gateway.s3.errors import S3Error, invalid_argument
from gateway.s3.naming import bucket_path, check_bucket, object_path
from gateway.objectio import ResponseSink, range_span
from gateway.s3.payload import Payload
from gateway.s3.request import Call, s3_error
from gfs.client import FileInfo, checked_inline
from gfs.errors import GfsError

OVERRIDES = {"response-content-type": "content-type",
             "response-content-language": "content-language",
             "response-expires": "expires", "response-cache-control": "cache-control",
             "response-content-disposition": "content-disposition",
             "response-content-encoding": "content-encoding"}
MAX_DELETE_KEYS = 1000
DELETE_PARALLEL = 8


async def require_bucket(call: Call, owner: str | None = None, bucket: str | None = None) -> None:
    """NoSuchBucket unless the bucket exists (and the caller may see it)."""
    try:
        info = await call.client.stat(bucket_path(owner or call.owner, bucket or call.bucket))
    except GfsError as err:
        raise s3_error(err, "NoSuchBucket", BucketName=bucket or call.bucket) from None
    if not info.is_dir:
        raise S3Error("NoSuchBucket", "The specified bucket does not exist.", 404,
                      BucketName=bucket or call.bucket)


async def _make_parents(call: Call, path: str) -> None:
    parent = path.rsplit("/", 1)[0]
    if parent != bucket_path(call.owner, call.bucket):
        try:
            await call.client.mkdir(parent, parents=True)
        except GfsError as err:
            raise s3_error(err, Key=call.key) from None


async def put_object(call: Call) -> None:
    path, marker = object_path(call.owner, call.bucket, call.key)
    payload = call.payload()
    attrs = attributes.from_request(call.ex.head.headers)
    size = payload.declared_size
    if not marker and size is not None and size <= call.client.inline_max:
        await _put_small(call, path, payload, attrs)
        return
    await require_bucket(call)
    if marker:
        if await payload.read_all(xmldoc.MAX_BODY):
            raise invalid_argument("a key ending in '/' is a folder marker and must be empty "
                                   "(docs/s3.md)", ArgumentName="key")
        try:
            await call.client.mkdir(path, parents=True)
        except GfsError as err:
            raise s3_error(err, Key=call.key) from None
        await call.empty(200, [("etag", attributes.EMPTY_ETAG)])
        return
    await _make_parents(call, path)

    try:
        await call.client.put(payload.thread_source(call.loop), path, overwrite=True,
                              xattrs=lambda: _stored_attrs(payload, attrs))
    except GfsError as err:
        raise s3_error(err, Key=call.key) from None
    await _put_done(call, payload)


def _stored_attrs(payload: Payload, attrs: dict[str, str]) -> dict[str, str]:
    """The xattrs of an uploaded object: its request's attributes, ETag and checksum."""
    out = {**attrs, attributes.ETAG: payload.etag}
    if payload.checksum is not None:
        out[attributes.CHECKSUM + payload.algorithm] = payload.checksum_value()
    return out


async def _put_done(call: Call, payload: Payload) -> None:
    headers = [("etag", payload.etag)]
    if payload.checksum is not None:
        headers.append((f"x-amz-checksum-{payload.algorithm}", payload.checksum_value()))
    await call.empty(200, headers)


async def _put_small(call: Call, path: str, payload: Payload, attrs: dict[str, str]) -> None:
    """A body of at most the client's inline limit, read whole (its digests checked) before
    anything is written: one PutInline, made on the event loop, carries the bytes and the
    xattrs, so the object never exists without its ETag and metadata (the masters may refuse
    inline: then chunks, as a large PUT). The bucket is looked at only when the write finds no
    directory to go in (the first object under a new prefix, or a bucket deleted since the
    caller's request was routed): never a parent made for a bucket that is gone."""
    body = await payload.read_all(call.client.inline_max)
    stored = _stored_attrs(payload, attrs)
    for attempt in range(2):
        try:
            if await call.client.put_inline(body, path, overwrite=True,
                                            xattrs=lambda: stored) is None:
                await call.client.put(io.BytesIO(body), path, overwrite=True,
                                      xattrs=lambda: stored)
            break
        except GfsError as err:
            if err.code != "NOT_FOUND" or attempt:
                raise s3_error(err, Key=call.key) from None
        await require_bucket(call)
        await _make_parents(call, path)
    await _put_done(call, payload)


async def stat_object(call: Call, owner: str, bucket: str, key: str,
                      span: tuple[int, int] | None = None) -> FileInfo:
    """The object's file (a directory for a folder marker); NoSuchKey / NoSuchBucket. `span`:
    only the chunks of those bytes (`Client.stat`)."""
    path, marker = object_path(owner, bucket, key)
    try:
        info = await call.client.stat(path, for_read=True, span=span)
    except GfsError as err:
        if err.code == "NOT_FOUND":
            await require_bucket(call, owner, bucket)
        raise s3_error(err, Key=key) from None
    if info.is_dir != marker:
        raise S3Error("NoSuchKey", "The specified key does not exist.", 404, Key=key)
    return info


async def get_object(call: Call, head_only: bool) -> None:
    info = await stat_object(call, call.owner, call.bucket, call.key,
                             (0, 0) if head_only else range_span(call.header("range")))
    etag = attributes.etag(info)
    basic = [("etag", etag), ("last-modified", xmldoc.http_time(info.mtime_ms))]
    if conditions.evaluate(call.header, etag, info.mtime_ms) == conditions.NOT_MODIFIED:
        await call.empty(304, basic)
        return
    headers = basic + [("accept-ranges", "bytes")] + attributes.response_headers(info)
    overrides = {OVERRIDES[k]: v for k, v in call.query.items() if k in OVERRIDES}
    if overrides:
        if call.verified is None:
            raise S3Error("InvalidRequest", "Request specific response headers cannot be used "
                          "for anonymous GET requests.", 400)
        headers = [(k, v) for k, v in headers if k not in overrides] + list(overrides.items())
    size = 0 if info.is_dir else info.size
    wanted = conditions.byte_range(call.header("range"), size)
    status, first, length = 200, 0, size
    if wanted is not None:
        first, last = wanted
        status, length = 206, last - first + 1
        headers = [(k, v) for k, v in headers if not k.startswith("x-amz-checksum-")]
        headers.append(("content-range", f"bytes {first}-{last}/{size}"))
    headers.append(("content-length", str(length)))
    inline = None if head_only or length == 0 else _inline_bytes(call, info)
    await call.ex.start_response(status, [*call.common_headers(), *headers],
                                 end=head_only or length == 0)
    if head_only or length == 0:
        return
    if inline is not None:               # came with the stat: no thread, no second call
        await call.ex.write(inline[first:first + length])
        await call.ex.end()
        return
    try:
        await call.client.download(info, ResponseSink(call.ex, call.loop), offset=first,
                                   length=length, parallel=1)
    except BaseException:
        call.ex.abort()                  # never a short body that looks complete
        raise
    await call.ex.end()


def _inline_bytes(call: Call, info: FileInfo) -> bytes | None:
    """The checked bytes of an inline object stat'ed for reading (None: read them otherwise);
    checked before the response starts, so damage is an error, never a served body."""
    if not info.inline or info.inline_data is None:
        return None
    try:
        return checked_inline(info, info.inline_data)
    except GfsError as err:
        raise s3_error(err, Key=call.key) from None


async def _delete_one(call: Call, key: str) -> None:
    """Delete `key` (a folder marker: its directory, when empty); a missing key is no error,
    as in S3. Directories left empty above it are removed (listings then match S3's)."""
    path, marker = object_path(call.owner, call.bucket, key)
    try:
        info = await call.client.stat(path)
    except GfsError as err:
        if err.code == "NOT_FOUND":
            return
        raise s3_error(err, Key=key) from None
    if info.is_dir != marker:
        return
    try:
        await call.client.delete(path, recursive=False, skip_trash=marker)
    except GfsError as err:
        if err.code in ("NOT_FOUND", "FAILED_PRECONDITION"):
            return                       # gone already; a marker over keys stays implied
        raise s3_error(err, Key=key) from None
    await _prune(call, path)


async def _prune(call: Call, path: str) -> None:
    top = bucket_path(call.owner, call.bucket)
    parent = path.rsplit("/", 1)[0]
    while parent != top and parent.startswith(top + "/"):
        try:
            await call.client.delete(parent, recursive=False, skip_trash=True)
        except GfsError:
            return                       # not empty (or not ours): stop
        parent = parent.rsplit("/", 1)[0]


async def delete_object(call: Call) -> None:
    object_path(call.owner, call.bucket, call.key)       # refuses an unrepresentable key
    await require_bucket(call)
    await _delete_one(call, call.key)
    await call.empty(204)


async def delete_objects(call: Call) -> None:
    await require_bucket(call)
    body = await call.payload().read_all(xmldoc.MAX_BODY)
    root = xmldoc.parse(body, "Delete")
    quiet = (xmldoc.text_of(root, "Quiet") or "").strip().lower() == "true"
    keys = [xmldoc.text_of(o, "Key") for o in xmldoc.children(root, "Object")]
    if not keys or len(keys) > MAX_DELETE_KEYS or any(k is None for k in keys):
        raise S3Error("MalformedXML", f"DeleteObjects takes 1 to {MAX_DELETE_KEYS} Object "
                      f"elements, each with a Key", 400)
    limit = asyncio.Semaphore(DELETE_PARALLEL)

    async def one(key: str):
        async with limit:
            try:
                await _delete_one(call, key)
                return key, None
            except S3Error as err:
                return key, err
    results = await asyncio.gather(*(one(k) for k in keys))
    items = []
    for key, err in results:
        if err is None:
            if not quiet:
                items.append(("Deleted", [("Key", key)]))
        else:
            items.append(("Error", [("Key", key), ("Code", err.code), ("Message", err.message)]))
    await call.xml(200, xmldoc.document("DeleteResult", items))


def copy_source(call: Call) -> tuple[str, str]:
    raw = call.header("x-amz-copy-source") or ""
    text = unquote(raw.split("?", 1)[0]).lstrip("/")
    bucket, _, key = text.partition("/")
    if not bucket or not key:
        raise invalid_argument("x-amz-copy-source must be BUCKET/KEY",
                               ArgumentName="x-amz-copy-source")
    return check_bucket(bucket), key


async def copy_bytes(call: Call, src: FileInfo, dst_path: str, attrs: dict[str, str],
                     first: int = 0, length: int = -1) -> tuple[str, FileInfo]:
    """Copy `src` (or a range of it) to `dst_path` through a pipe between a download and an
    upload thread; returns the new ETag. The upload commits only if the download finished."""
    expected = src.size - first if length < 0 else length
    read_fd, write_fd = os.pipe()
    md5 = hashlib.md5()
    done = {"ok": False}

    class Hashing(io.RawIOBase):
        def __init__(self, f):
            self.f = f

        def readable(self) -> bool:
            return True

        def readinto(self, buf) -> int:
            n = self.f.readinto(buf)
            md5.update(memoryview(buf)[:n])
            return n

    def xattrs() -> dict[str, str]:
        if not done["ok"] or copied["n"] != expected:
            raise S3Error("InternalError", "the copy's source could not be read whole", 500)
        return {**attrs, attributes.ETAG: '"' + md5.hexdigest() + '"'}
    copied = {"n": 0}

    def download() -> None:
        with os.fdopen(write_fd, "wb") as sink:
            copied["n"] = call.client._client.download(src, sink, offset=first, length=length,
                                                       parallel=1) if expected else 0
        done["ok"] = True

    async def upload() -> FileInfo:
        with io.BufferedReader(Hashing(os.fdopen(read_fd, "rb", buffering=0))) as source:
            return await call.client.put(source, dst_path, overwrite=True, xattrs=xattrs)
    reader = call.client.run(download)
    try:
        results = await asyncio.gather(reader, upload(), return_exceptions=True)
    except GfsError as err:
        raise s3_error(err) from None
    for result in results:
        if isinstance(result, GfsError):
            raise s3_error(result)
        if isinstance(result, BaseException):
            raise result
    return '"' + md5.hexdigest() + '"', results[1]


async def copy_object(call: Call, resolve_owner) -> None:
    src_bucket, src_key = copy_source(call)
    src_owner = await resolve_owner(src_bucket)
    src = await stat_object(call, src_owner, src_bucket, src_key)
    if src.is_dir:
        raise invalid_argument("a folder marker cannot be copied")
    conditions.evaluate(call.header, attributes.etag(src), src.mtime_ms,
                        prefix="x-amz-copy-source-")
    directive = (call.header("x-amz-metadata-directive") or "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise invalid_argument("x-amz-metadata-directive must be COPY or REPLACE")
    dst_path, marker = object_path(call.owner, call.bucket, call.key)
    if marker:
        raise invalid_argument("a copy's destination cannot be a folder marker")
    if dst_path == src.path and directive == "COPY":
        raise S3Error("InvalidRequest", "This copy request is illegal because it is trying to "
                      "copy an object to itself without changing the object's metadata, "
                      "storage class, website redirect location or encryption attributes.", 400)
    await require_bucket(call)
    attrs = attributes.carried(src.xattrs) if directive == "COPY" \
        else attributes.from_request(call.ex.head.headers)
    await _make_parents(call, dst_path)
    etag, info = await copy_bytes(call, src, dst_path, attrs)
    await call.xml(200, xmldoc.document("CopyObjectResult", [
        ("LastModified", xmldoc.iso_time(info.mtime_ms)), ("ETag", etag)]))
