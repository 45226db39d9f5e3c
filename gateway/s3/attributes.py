"""What S3 keeps about an object beyond its bytes, as the file's extended attributes
(xattrs `s3.*`, committed with the file): ETag, content headers, user metadata, checksum."""
from __future__ import annotations

import hashlib

from gateway.s3.errors import S3Error
from gfs.client import FileInfo

ETAG = "s3.etag"
CONTENT_HEADERS = ("content-type", "content-encoding", "content-disposition", "cache-control",
                   "content-language", "expires")
META = "s3.meta."
CHECKSUM = "s3.checksum."
MAX_META_BYTES = 2048                 # S3's limit on user metadata
EMPTY_ETAG = '"d41d8cd98f00b204e9800998ecf8427e"'


def from_request(headers: list[tuple[str, str]]) -> dict[str, str]:
    """The content headers and x-amz-meta-* of a PUT (or a REPLACE copy), as xattrs."""
    attrs = {}
    size = 0
    for key, value in headers:
        if key in CONTENT_HEADERS:
            attrs["s3." + key] = value
        elif key.startswith("x-amz-meta-"):
            name = key[len("x-amz-meta-"):]
            attrs[META + name] = attrs[META + name] + "," + value if META + name in attrs \
                else value
            size += len(name) + len(value)
    if size > MAX_META_BYTES:
        raise S3Error("MetadataTooLarge", f"Your metadata headers exceed the maximum allowed "
                      f"metadata size ({MAX_META_BYTES} bytes).", 400)
    return attrs


def carried(attrs: dict[str, str]) -> dict[str, str]:
    """What a COPY directive copies: everything S3 keeps but the ETag and checksum (recomputed)."""
    return {k: v for k, v in attrs.items() if k.startswith("s3.") and k != ETAG
            and not k.startswith(CHECKSUM)}


def etag(info: FileInfo) -> str:
    """The stored ETag; for a file written without one (gfs put, the mount) a stable value
    from its identity, shaped like a multipart ETag so no client takes it for an MD5."""
    stored = info.xattrs.get(ETAG)
    if stored:
        return stored
    if info.is_dir:
        return EMPTY_ETAG
    digest = hashlib.md5(f"{info.inode}:{info.mtime_ms}:{info.size}".encode()).hexdigest()
    return f'"{digest}-1"'


def response_headers(info: FileInfo) -> list[tuple[str, str]]:
    out = []
    for name in CONTENT_HEADERS:
        value = info.xattrs.get("s3." + name)
        if value is not None:
            out.append((name, value))
    if not any(k == "content-type" for k, _ in out):
        out.append(("content-type", "binary/octet-stream"))
    for key, value in info.xattrs.items():
        if key.startswith(META):
            out.append(("x-amz-meta-" + key[len(META):], value))
        elif key.startswith(CHECKSUM):
            out.append(("x-amz-checksum-" + key[len(CHECKSUM):], value))
    return out
