"""ListObjects (v1) and ListObjectsV2 over a bucket's directory tree.

Keys come out in S3's order (UTF-8 byte order) by walking the tree depth first with each
directory's entries sorted as their keys sort (a directory `a` as `a/`). With the delimiter
`/`, a directory below the prefix is a common prefix and is not entered. A listing stops after
max-keys keys and prefixes and says where the next one starts (IsTruncated, NextMarker /
NextContinuationToken); only the directories on the way to the next key are read again for
the next page. An empty directory lists as its folder marker `dir/`.
"""
from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import AsyncIterator
from urllib.parse import quote

from gateway.s3 import attributes, xmldoc
from gateway.s3.errors import invalid_argument
from gateway.s3.naming import bucket_path
from gateway.s3.objects import require_bucket
from gateway.s3.request import Call, s3_error
from gfs.client import FileInfo
from gfs.errors import GfsError

MAX_KEYS = 1000


@dataclass
class Entry:
    key: str
    info: FileInfo | None              # None: a common prefix


def _sort_key(info: FileInfo) -> bytes:
    name = info.path.rsplit("/", 1)[1]
    return (name + "/" if info.is_dir else name).encode("utf-8", "surrogatepass")


class PageCache:
    """Directory listings kept for the next pages of the same listing: a request that
    continues a listing (a continuation token or a marker) reuses, for a few seconds, what the
    pages before it read of the same directories as the same caller, instead of reading a large
    directory again per page. A listing that starts afresh always reads the directories now
    (so it sees every write acknowledged before it)."""

    def __init__(self, keep_s: float = 10.0, entries: int = 8):
        self.keep_s = keep_s
        self.max_entries = entries
        self._entries: dict[tuple, tuple[float, list[FileInfo] | None]] = {}

    def get(self, key: tuple) -> tuple[bool, list[FileInfo] | None]:
        found = self._entries.get(key)
        if found is None or time.monotonic() - found[0] > self.keep_s:
            return False, None
        return True, found[1]

    def put(self, key: tuple, children: list[FileInfo] | None) -> None:
        if len(self._entries) >= self.max_entries:
            del self._entries[min(self._entries, key=lambda k: self._entries[k][0])]
        self._entries[key] = (time.monotonic(), children)


class Walker:
    def __init__(self, call: Call, prefix: str, delimiter: str, after: str,
                 cache: PageCache | None = None, continuing: bool = False):
        self.cache = cache
        self.continuing = continuing
        self.call = call
        self.top = bucket_path(call.owner, call.bucket)
        self.prefix = prefix
        self.delimiter = delimiter
        self.after = after

    async def _children(self, key_dir: str) -> list[FileInfo] | None:
        path = self.top + ("/" + key_dir.rstrip("/") if key_dir else "")
        key = (self.call.caller_key, path)
        if self.cache is not None and self.continuing:
            found, children = self.cache.get(key)
            if found:
                return children
        children = await self._read(path)
        if self.cache is not None:
            self.cache.put(key, children)
        return children

    async def _read(self, path: str) -> list[FileInfo] | None:
        try:
            entries = await self.call.client.list(path, page_size=10_000)
        except GfsError as err:
            if err.code in ("NOT_FOUND", "FAILED_PRECONDITION"):
                return None
            raise s3_error(err, "NoSuchBucket") from None
        if len(entries) == 1 and entries[0].path == path and not entries[0].is_dir:
            return None                  # a file, not a directory
        return sorted(entries, key=_sort_key)

    def _skip(self, key: str, is_dir: bool) -> bool:
        """Is everything at or below `key` at or before the start point (or outside the
        prefix)?"""
        if is_dir:
            if not (key.startswith(self.prefix) or self.prefix.startswith(key)):
                return True
            return bool(self.after) and key < self.after and not self.after.startswith(key)
        return not key.startswith(self.prefix) or (bool(self.after) and key <= self.after)

    async def entries(self) -> AsyncIterator[Entry]:
        start = self.prefix[:self.prefix.rfind("/") + 1]       # the deepest whole directory
        async for entry in self._walk(start):
            yield entry

    async def _walk(self, key_dir: str) -> AsyncIterator[Entry]:
        children = await self._children(key_dir)
        if children is None:
            return
        if not children:
            if key_dir.startswith(self.prefix) and key_dir and not (
                    self.after and key_dir <= self.after):
                yield Entry(key_dir, _marker(self.top, key_dir))
            return
        for info in children:
            key = key_dir + info.path.rsplit("/", 1)[1] + ("/" if info.is_dir else "")
            if self._skip(key, info.is_dir):
                continue
            if self.delimiter and key.startswith(self.prefix):
                cut = key.find(self.delimiter, len(self.prefix))
                if cut >= 0:             # everything at or below `key` shares this prefix
                    common = key[:cut + len(self.delimiter)]
                    if not (self.after and common <= self.after):
                        yield Entry(common, None)
                    continue
            if info.is_dir:
                async for entry in self._walk(key):
                    yield entry
            else:
                yield Entry(key, info)


def _marker(top: str, key_dir: str) -> FileInfo:
    return FileInfo(path=top + "/" + key_dir.rstrip("/"), inode=0, type="dir", size=0, mode=0,
                    owner="", ctime_ms=0, mtime_ms=0, replication=0, storage_class="",
                    chunk_size=0)


def _token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode("utf-8", "surrogatepass")).decode()


def _untoken(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise invalid_argument("The continuation token provided is incorrect",
                               ArgumentName="continuation-token") from None


async def list_objects(call: Call, v2: bool, cache: PageCache | None = None) -> None:
    q = call.query
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
    encoding = q.get("encoding-type", "")
    if encoding not in ("", "url"):
        raise invalid_argument("Invalid Encoding Method specified in Request",
                               ArgumentName="encoding-type")
    max_text = q.get("max-keys", str(MAX_KEYS))
    if not max_text.isdigit():
        raise invalid_argument("max-keys must be a number", ArgumentName="max-keys")
    max_keys = min(int(max_text), MAX_KEYS)
    if v2:
        token = q.get("continuation-token")
        after = _untoken(token) if token is not None else q.get("start-after", "")
    else:
        after = q.get("marker", "")
    continuing = bool(q.get("continuation-token") if v2 else q.get("marker"))
    walker = Walker(call, prefix, delimiter, after, cache, continuing)
    contents: list[Entry] = []
    prefixes: list[str] = []
    truncated = False
    last = ""
    await require_bucket(call)
    async for entry in walker.entries():
        if entry.info is None and entry.key in prefixes:
            continue
        if len(contents) + len(prefixes) >= max_keys:
            truncated = True
            break
        if entry.info is None:
            prefixes.append(entry.key)
        else:
            contents.append(entry)
        last = entry.key
    enc = (lambda s: quote(s, safe="/")) if encoding == "url" else (lambda s: s)
    owner = [("ID", call.owner), ("DisplayName", call.owner)]
    items: list = [("Name", call.bucket), ("Prefix", enc(prefix))]
    if v2:
        if "continuation-token" in q:
            items.append(("ContinuationToken", q["continuation-token"]))
        if "start-after" in q:
            items.append(("StartAfter", enc(q["start-after"])))
        items.append(("KeyCount", len(contents) + len(prefixes)))
    else:
        items.append(("Marker", enc(after)))
    items += [("MaxKeys", max_keys)]
    if delimiter:
        items.append(("Delimiter", enc(delimiter)))
    if encoding:
        items.append(("EncodingType", encoding))
    items.append(("IsTruncated", truncated))
    if truncated:
        if v2:
            items.append(("NextContinuationToken", _token(last)))
        elif delimiter:
            items.append(("NextMarker", enc(last)))
    for entry in contents:
        info = entry.info
        fields = [("Key", enc(entry.key)), ("LastModified", xmldoc.iso_time(info.mtime_ms)),
                  ("ETag", attributes.etag(info)), ("Size", info.size if not info.is_dir else 0),
                  ("StorageClass", "STANDARD")]
        if not v2 or q.get("fetch-owner") == "true":
            fields.append(("Owner", owner))
        items.append(("Contents", fields))
    for common in prefixes:
        items.append(("CommonPrefixes", [("Prefix", enc(common))]))
    await call.xml(200, xmldoc.document("ListBucketResult", items))
