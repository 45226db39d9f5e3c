"""Buckets and keys as gfs paths (docs/s3.md: the mapping).

A bucket is a directory directly under its owner's home: bucket `photos` of alice is
`/alice/photos` (so a directory made with `gfs mkdir` is a bucket too, when its name is a valid
bucket name). A key is the path below it: `2024/a.jpg` is `/alice/photos/2024/a.jpg`; the
directories between are made as needed. Keys that no path can hold are refused, never renamed:
empty segments (`a//b`, a leading `/`), `.` and `..` segments, a NUL, a segment longer than 255
bytes. A key ending in `/` names a directory (a "folder marker": it can be put empty, read as an
empty object, and deleted when empty). A key cannot be both an object and a prefix: with object
`a`, putting `a/b` is refused (and the reverse), since `a` is either a file or a directory.
"""
from __future__ import annotations

import re

from gateway.s3.errors import S3Error

MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
MULTIPART_DIR = ".s3-multipart"          # under the owner's home: never a bucket name


def valid_bucket(name: str) -> bool:
    """S3's bucket naming rules (3-63 characters, lower-case letters, digits, '.', '-')."""
    return bool(_BUCKET.match(name)) and ".." not in name and not _IP.match(name) \
        and ".-" not in name and "-." not in name


def check_bucket(name: str) -> str:
    if not valid_bucket(name):
        raise S3Error("InvalidBucketName", "The specified bucket is not valid: 3-63 lower-case "
                      "letters, digits, '.' and '-', starting and ending with a letter or digit",
                      400, BucketName=name[:100])
    return name


def bucket_path(owner: str, bucket: str) -> str:
    return f"/{owner}/{bucket}"


def key_segments(key: str) -> tuple[list[str], bool]:
    """(path segments, is a folder marker) of `key`; S3Error for a key no path can hold."""
    if not key:
        raise S3Error("InvalidArgument", "the object key is empty", 400)
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", "Your key is too long (at most 1024 bytes)", 400)
    marker = key.endswith("/")
    segments = (key[:-1] if marker else key).split("/")
    for segment in segments:
        problem = _segment_problem(segment)
        if problem:
            raise S3Error("InvalidArgument", f"the key {key[:200]!r} cannot be stored in gfs: "
                          f"{problem} (docs/s3.md: keys map to paths; nothing is renamed)", 400,
                          ArgumentName="key")
    return segments, marker


def _segment_problem(segment: str) -> str:
    if segment == "":
        return "it has an empty segment ('//', or a leading or doubled '/')"
    if segment in (".", ".."):
        return f"it has a {segment!r} segment"
    if "\0" in segment:
        return "it contains a NUL character"
    try:
        size = len(segment.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    if size > MAX_SEGMENT_BYTES:
        return f"a segment is longer than {MAX_SEGMENT_BYTES} bytes"
    return ""


def object_path(owner: str, bucket: str, key: str) -> tuple[str, bool]:
    """(gfs path, is a folder marker) of `key` in `bucket` of `owner`."""
    segments, marker = key_segments(key)
    return bucket_path(owner, bucket) + "/" + "/".join(segments), marker


def key_of(bucket_dir: str, path: str, is_dir: bool) -> str:
    """The key of gfs `path` below `bucket_dir` (directories end in '/')."""
    key = path[len(bucket_dir) + 1:]
    return key + "/" if is_dir else key
