"""Multipart uploads (docs/s3.md: multipart).

An upload is a hidden directory of its bucket's owner, `/OWNER/.s3-multipart/UPLOAD_ID`,
holding an empty file `upload` (its bucket, key and the object's attributes as xattrs) and one
file per part, `part-NNNNN` (its MD5 as xattr). Parts may come in any order, in parallel, and
be replaced. Completion checks the list (ascending, every ETag matching, every part but the
last at least 5 MiB) and makes the object with the master's Compose: the parts' chunks become
the object's in one atomic step, no byte is copied; the ETag is S3's md5-of-part-md5s-N.
"""
from __future__ import annotations

import hashlib
import io
import os
import re

from gateway.objectio import range_span
from gateway.s3 import attributes, xmldoc
from gateway.s3.errors import S3Error, invalid_argument
from gateway.s3.naming import MULTIPART_DIR, object_path
from gateway.s3.objects import (_make_parents, copy_bytes, copy_source, require_bucket,
                                stat_object)
from gateway.s3.request import Call, s3_error
from gfs.client import FileInfo
from gfs.errors import GfsError

MIN_PART = 5 << 20
MAX_PART = 5 << 30
MAX_PARTS = 10_000
UPLOAD_FILE = "upload"
BUCKET, KEY = "s3.upload.bucket", "s3.upload.key"
_ID = re.compile(r"^[0-9a-f]{32}$")


def _upload_dir(call: Call, upload_id: str) -> str:
    if not _ID.match(upload_id):
        raise no_such_upload()
    return f"/{call.owner}/{MULTIPART_DIR}/{upload_id}"


def _part_name(number: int) -> str:
    return f"part-{number:05d}"


def no_such_upload() -> S3Error:
    return S3Error("NoSuchUpload", "The specified multipart upload does not exist. The upload "
                   "ID might be invalid, or the multipart upload might have been aborted or "
                   "completed.", 404)


async def _upload(call: Call, upload_id: str) -> tuple[str, FileInfo]:
    """(upload directory, its `upload` file); NoSuchUpload unless it is this bucket's and key's."""
    directory = _upload_dir(call, upload_id)
    try:
        info = await call.client.stat(directory + "/" + UPLOAD_FILE)
    except GfsError as err:
        if err.code == "NOT_FOUND":
            raise no_such_upload() from None
        raise s3_error(err) from None
    if info.xattrs.get(BUCKET) != call.bucket or (call.key and info.xattrs.get(KEY) != call.key):
        raise no_such_upload()
    return directory, info


def _part_number(call: Call) -> int:
    text = call.query.get("partNumber", "")
    if not text.isdigit() or not 1 <= int(text) <= MAX_PARTS:
        raise invalid_argument(f"Part number must be an integer between 1 and {MAX_PARTS}, "
                               f"inclusive", ArgumentName="partNumber")
    return int(text)


async def create(call: Call) -> None:
    object_path(call.owner, call.bucket, call.key)           # refuses an unrepresentable key
    if call.key.endswith("/"):
        raise invalid_argument("a folder marker cannot be uploaded in parts")
    await require_bucket(call)
    upload_id = os.urandom(16).hex()
    directory = _upload_dir(call, upload_id)
    attrs = {**attributes.from_request(call.ex.head.headers), BUCKET: call.bucket, KEY: call.key}
    try:
        await call.client.mkdir(directory, parents=True)
        await call.client.put(io.BytesIO(b""), directory + "/" + UPLOAD_FILE,
                              xattrs=lambda: attrs)
    except GfsError as err:
        raise s3_error(err) from None
    await call.xml(200, xmldoc.document("InitiateMultipartUploadResult", [
        ("Bucket", call.bucket), ("Key", call.key), ("UploadId", upload_id)]))


async def upload_part(call: Call) -> None:
    number = _part_number(call)
    directory, _ = await _upload(call, call.query["uploadId"])
    payload = call.payload()
    try:
        await call.client.put(payload.thread_source(call.loop, _bounded),
                              f"{directory}/{_part_name(number)}", overwrite=True,
                              xattrs=lambda: {attributes.ETAG: payload.etag})
    except GfsError as err:
        raise s3_error(err) from None
    headers = [("etag", payload.etag)]
    if payload.checksum is not None:
        headers.append((f"x-amz-checksum-{payload.algorithm}", payload.checksum_value()))
    await call.empty(200, headers)


async def _bounded(pieces):
    total = 0
    async for piece in pieces:
        total += len(piece)
        if total > MAX_PART:
            raise S3Error("EntityTooLarge", "Your proposed upload exceeds the maximum allowed "
                          "size (5 GiB per part)", 400)
        yield piece


async def upload_part_copy(call: Call, resolve_owner) -> None:
    number = _part_number(call)
    directory, _ = await _upload(call, call.query["uploadId"])
    src_bucket, src_key = copy_source(call)
    wanted = call.header("x-amz-copy-source-range")
    src = await stat_object(call, await resolve_owner(src_bucket), src_bucket, src_key,
                            range_span(wanted.strip()) if wanted else None)
    if src.is_dir:
        raise invalid_argument("a folder marker cannot be copied")
    first, length = 0, -1
    if wanted:
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", wanted.strip())
        if not m or int(m.group(2)) < int(m.group(1)) or int(m.group(2)) >= src.size:
            raise S3Error("InvalidArgument", "The x-amz-copy-source-range value must be of the "
                          "form bytes=first-last where first and last are the zero-based offsets "
                          "of the first and last bytes to copy", 400)
        first, length = int(m.group(1)), int(m.group(2)) - int(m.group(1)) + 1
    etag, info = await copy_bytes(call, src, f"{directory}/{_part_name(number)}", {}, first,
                                  length)
    await call.xml(200, xmldoc.document("CopyPartResult", [
        ("LastModified", xmldoc.iso_time(info.mtime_ms)), ("ETag", etag)]))


async def _parts(call: Call, directory: str) -> dict[int, FileInfo]:
    try:
        entries = await call.client.list(directory, brief=True)   # names, sizes, ETags
    except GfsError as err:
        raise s3_error(err) from None
    out = {}
    for info in entries:
        name = info.path.rsplit("/", 1)[1]
        if name.startswith("part-") and name[5:].isdigit():
            out[int(name[5:])] = info
    return out


async def complete(call: Call) -> None:
    directory, upload = await _upload(call, call.query["uploadId"])
    body = await call.payload().read_all(xmldoc.MAX_BODY)
    root = xmldoc.parse(body, "CompleteMultipartUpload")
    wanted = []
    for part in xmldoc.children(root, "Part"):
        number, etag = xmldoc.text_of(part, "PartNumber"), xmldoc.text_of(part, "ETag")
        if number is None or not number.strip().isdigit() or etag is None:
            raise S3Error("MalformedXML", "each Part needs a PartNumber and an ETag", 400)
        wanted.append((int(number), etag.strip().strip('"')))
    if not wanted:
        raise S3Error("MalformedXML", "You must specify at least one part", 400)
    if any(b[0] <= a[0] for a, b in zip(wanted, wanted[1:])):
        raise S3Error("InvalidPartOrder", "The list of parts was not in ascending order. The "
                      "parts list must be specified in order by part number.", 400)
    stored = await _parts(call, directory)
    digests = b""
    for i, (number, etag) in enumerate(wanted):
        info = stored.get(number)
        if info is None or info.xattrs.get(attributes.ETAG, "").strip('"') != etag:
            raise S3Error("InvalidPart", "One or more of the specified parts could not be found. "
                          "The part may not have been uploaded, or the specified entity tag may "
                          "not match the part's entity tag.", 400, PartNumber=str(number),
                          ETag=etag)
        if i < len(wanted) - 1 and info.size < MIN_PART:
            raise S3Error("EntityTooSmall", "Your proposed upload is smaller than the minimum "
                          "allowed object size.", 400, PartNumber=str(number),
                          ProposedSize=str(info.size), MinSizeAllowed=str(MIN_PART))
        digests += bytes.fromhex(etag)
    etag = f'"{hashlib.md5(digests).hexdigest()}-{len(wanted)}"'
    path, _ = object_path(call.owner, call.bucket, call.key)
    await _make_parents(call, path)
    attrs = {k: v for k, v in upload.xattrs.items() if k not in (BUCKET, KEY)}
    try:
        await call.client.compose(path, [stored[n].path for n, _ in wanted], overwrite=True,
                                  xattrs={**attrs, attributes.ETAG: etag})
    except GfsError as err:
        raise s3_error(err, Key=call.key) from None
    await _remove(call, directory)
    await call.xml(200, xmldoc.document("CompleteMultipartUploadResult", [
        ("Location", f"/{call.bucket}/{call.key}"), ("Bucket", call.bucket), ("Key", call.key),
        ("ETag", etag)]))


async def _remove(call: Call, directory: str) -> None:
    try:
        await call.client.delete(directory, recursive=True, skip_trash=True)
    except GfsError as err:
        if err.code != "NOT_FOUND":
            raise s3_error(err) from None


async def abort(call: Call) -> None:
    directory, _ = await _upload(call, call.query["uploadId"])
    await _remove(call, directory)
    await call.empty(204)


async def list_parts(call: Call) -> None:
    directory, _ = await _upload(call, call.query["uploadId"])
    marker_text = call.query.get("part-number-marker", "0")
    max_text = call.query.get("max-parts", "1000")
    if not marker_text.isdigit() or not max_text.isdigit():
        raise invalid_argument("part-number-marker and max-parts must be numbers")
    marker, max_parts = int(marker_text), min(int(max_text), 1000)
    parts = sorted((n, i) for n, i in (await _parts(call, directory)).items() if n > marker)
    shown, truncated = parts[:max_parts], len(parts) > max_parts
    items = [("Bucket", call.bucket), ("Key", call.key), ("UploadId", call.query["uploadId"]),
             ("PartNumberMarker", marker), ("MaxParts", max_parts), ("IsTruncated", truncated)]
    if truncated:
        items.append(("NextPartNumberMarker", shown[-1][0]))
    items += [("Part", [("PartNumber", n), ("LastModified", xmldoc.iso_time(i.mtime_ms)),
                        ("ETag", attributes.etag(i)), ("Size", i.size)]) for n, i in shown]
    await call.xml(200, xmldoc.document("ListPartsResult", items))


async def list_uploads(call: Call) -> None:
    await require_bucket(call)
    prefix = call.query.get("prefix", "")
    top = f"/{call.owner}/{MULTIPART_DIR}"
    try:
        entries = await call.client.list(top, brief=True)
    except GfsError as err:
        if err.code != "NOT_FOUND":
            raise s3_error(err) from None
        entries = []
    uploads = []
    for entry in entries:
        try:
            info = await call.client.stat(entry.path + "/" + UPLOAD_FILE)
        except GfsError:
            continue                     # being created or removed
        key = info.xattrs.get(KEY, "")
        if info.xattrs.get(BUCKET) == call.bucket and key.startswith(prefix):
            uploads.append((key, entry.path.rsplit("/", 1)[1], info.ctime_ms))
    uploads.sort()
    max_uploads = min(int(call.query.get("max-uploads", "1000") or 1000), 1000)
    shown = uploads[:max_uploads]
    items = [("Bucket", call.bucket), ("KeyMarker", ""), ("UploadIdMarker", ""),
             ("Prefix", prefix), ("MaxUploads", max_uploads),
             ("IsTruncated", len(uploads) > max_uploads)]
    items += [("Upload", [("Key", k), ("UploadId", u), ("Initiated", xmldoc.iso_time(t)),
                          ("StorageClass", "STANDARD")]) for k, u, t in shown]
    await call.xml(200, xmldoc.document("ListMultipartUploadsResult", items))


async def dispatch(call: Call, resolve_owner) -> None:
    method, q = call.method, call.query
    if method == "POST" and "uploads" in q:
        await create(call)
    elif method == "PUT" and "uploadId" in q and call.header("x-amz-copy-source") is not None:
        await upload_part_copy(call, resolve_owner)
    elif method == "PUT" and "uploadId" in q:
        await upload_part(call)
    elif method == "POST" and "uploadId" in q:
        await complete(call)
    elif method == "DELETE" and "uploadId" in q:
        await abort(call)
    elif method == "GET" and "uploadId" in q:
        await list_parts(call)
    else:
        raise S3Error("MethodNotAllowed", "The specified method is not allowed against this "
                      "resource.", 405)
