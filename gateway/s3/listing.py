"""ListObjects (v1) and ListObjectsV2 over a bucket's directory tree.

Keys come out in S3's order (UTF-8 byte order) by walking the tree depth first with each
directory's entries sorted as their keys sort (a directory `a` as `a/`). With the delimiter
`/`, a directory below the prefix is a common prefix and is not entered; with another one, the
names of a directory that share a common prefix listed already are read past, not through
(`SkipNames`: one read however large the group). A listing stops after
max-keys keys and prefixes and says where the next one starts (IsTruncated, NextMarker /
NextContinuationToken). Directories are read from the masters a page at a time from where the
listing resumes (a page of a directory of millions reads about a page of it), and read on in
the background where a truncated page stopped (gateway/s3/readahead.py). An empty directory
lists as its folder marker `dir/`.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import AsyncIterator
from urllib.parse import quote

from gateway.s3 import attributes, xmldoc
from gateway.s3.errors import invalid_argument
from gateway.s3.naming import bucket_path
from gateway.s3.objects import require_bucket
from gateway.s3.readahead import ReadAhead, ReadPage
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


PAGE = 1000          # directory entries read from the masters per call

class NotADirectory(Exception):
    """The path walked is a file, or nothing."""


def _seek(name: str) -> str:
    """The `start_after` that makes the masters list the names ≥ `name` (they list the names
    after it): `name` with its last character replaced by the one before it, then U+10FFFF.
    Only names starting with that string (a noncharacter in a name) could come before `name`,
    and the walker skips what it does not need anyway."""
    if not name:
        return ""
    before = ord(name[-1]) - 1
    if 0xD800 <= before <= 0xDFFF:           # not encodable: the last code point before them
        before = 0xD7FF
    return name[:-1] + chr(before) + "\U0010ffff"


class SkipNames:
    """What a directory walk's consumer no longer needs: the names starting with `prefix`
    (a common prefix's whole group, once it is listed). Set between two entries; the walk
    yields none of them and reads on past them (one read, however large the group)."""
    __slots__ = ("prefix",)

    def __init__(self) -> None:
        self.prefix = ""

    def covers(self, info: FileInfo) -> bool:
        return bool(self.prefix) and info.path.rsplit("/", 1)[1].startswith(self.prefix)


async def directory(read_page: ReadPage, path: str, first: str = "", within: str = "",
                    page: int = PAGE, skip: SkipNames | None = None
                    ) -> AsyncIterator[FileInfo]:
    """The entries of directory `path` in S3 key order (a directory `d` sorts as `d/`), from
    the name `first` on, only names starting with `within`, none that `skip` covers when they
    would come out; read `page` entries first, then twice as many each time up to PAGE, so a
    listing that needs 1,000 keys of a directory of millions reads about 1,000. Raises
    NotADirectory before yielding anything when `path` is a file or missing.

    The masters list in name order; the only difference is a directory `d`, which must come
    after the names `d` + a character below `/` (`d-1`, `d.txt`). Every name not read yet sorts
    after the last name read, and so does its key (a key is its name, or its name + `/`), so
    whatever was read with a key up to that name can go out in order."""
    after = _seek(max(first, within))
    pending: list[tuple[bytes, FileInfo]] = []
    opening = True
    skip = skip or SkipNames()
    while True:
        if skip.prefix:                       # the masters list names after `after`: a name
            after = max(after, skip.prefix + "\U0010ffff")    # starting so is skipped still
        entries, last = await read_page(path, after, page)
        page = max(page, min(page * 2, PAGE))
        if opening and len(entries) == 1 and entries[0].path == path and not entries[0].is_dir:
            raise NotADirectory(path)
        opening = False
        passed = False
        for info in entries:
            name = info.path.rsplit("/", 1)[1]
            if within and not name.startswith(within):
                if name > within:             # past the names that start with `within`
                    passed = True
                    break
                continue
            pending.append((_sort_key(info), info))
        pending.sort(key=lambda item: item[0])
        if passed or not last:
            for _, info in pending:
                if not skip.covers(info):
                    yield info
            return
        bound = last.encode("utf-8", "surrogatepass")
        ready = 0
        while ready < len(pending) and pending[ready][0] <= bound:
            ready += 1
        for _, info in pending[:ready]:
            if not skip.covers(info):
                yield info
        del pending[:ready]
        after = last


class Walker:
    def __init__(self, read_page: ReadPage, top: str, prefix: str, delimiter: str, after: str,
                 page: int = PAGE):
        """`top`: the bucket's directory; keys are paths below it; `page`: entries per read."""
        self.read_page = read_page
        self.page = page
        self.top = top
        self.prefix = prefix
        self.delimiter = delimiter
        self.after = after

    def _bounds(self, key_dir: str) -> tuple[str, str]:
        """(the first name needed, the start every needed name has) in directory `key_dir`,
        from the start point and the prefix. A directory `p` named by a prefix of the start
        point's name `c` is needed when `c` goes on with a character below `/` (then `p/` sorts
        after `c`): so the first name needed is `c` up to such a character."""
        first = ""
        if self.after.startswith(key_dir):
            name = self.after[len(key_dir):].split("/", 1)[0]
            cut = next((i for i, ch in enumerate(name) if ch < "/"), len(name))
            first = name[:cut]
        within = ""
        if self.prefix.startswith(key_dir):
            within = self.prefix[len(key_dir):].split("/", 1)[0]
        return first, within

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
        if start.startswith("/") or "//" in start:
            return          # an empty name on the way: no directory, so no key, is there
        async for entry in self._walk(start):
            yield entry

    async def _walk(self, key_dir: str) -> AsyncIterator[Entry]:
        path = self.top + ("/" + key_dir.rstrip("/") if key_dir else "")
        empty = True
        try:
            first, within = self._bounds(key_dir)
            skip = SkipNames()
            async for info in directory(self.read_page, path, first, within, self.page, skip):
                empty = False
                key = key_dir + info.path.rsplit("/", 1)[1] + ("/" if info.is_dir else "")
                if self._skip(key, info.is_dir):
                    continue
                if self.delimiter and key.startswith(self.prefix):
                    cut = key.find(self.delimiter, len(self.prefix))
                    if cut >= 0:         # everything at or below `key` shares this prefix
                        common = key[:cut + len(self.delimiter)]
                        if not (self.after and common <= self.after):
                            yield Entry(common, None)
                        # So does every name here that starts as `key` does up to there:
                        # the rest of the group is not read (a delimiter other than '/').
                        group = common[len(key_dir):]
                        if len(common) > len(key_dir) and "/" not in group:
                            skip.prefix = group
                        continue
                if info.is_dir:
                    async for entry in self._walk(key):
                        yield entry
                else:
                    yield Entry(key, info)
        except NotADirectory:
            return
        # Nothing read: the directory is empty (a start point or a prefix below it would have
        # kept the marker out anyway), and lists as its folder marker.
        if empty and key_dir.startswith(self.prefix) and key_dir and not (
                self.after and key_dir <= self.after):
            yield Entry(key_dir, _marker(self.top, key_dir))


def read_pages(call: Call) -> ReadPage:
    """The caller's directory pages from the masters; a missing path or a file below is no
    directory, other errors are S3's."""
    async def read_page(path: str, start_after: str, limit: int) -> tuple[list[FileInfo], str]:
        try:
            return await call.client.list_page(path, start_after, limit, brief=True)
        except GfsError as err:
            if err.code in ("NOT_FOUND", "FAILED_PRECONDITION"):
                raise NotADirectory(path) from None
            raise s3_error(err, "NoSuchBucket") from None
    return read_page


def _marker(top: str, key_dir: str) -> FileInfo:
    return FileInfo(path=top + "/" + key_dir.rstrip("/"), inode=0, type="dir", size=0, mode=0,
                    owner="", ctime_ms=0, mtime_ms=0, replication=0, storage_class="",
                    chunk_size=0)


def _contents(entries: list[Entry], enc, owner: str | None) -> list[tuple[str, xmldoc.Raw]]:
    """The <Contents> of `entries` (files; `owner`: with an <Owner>), rendered directly: a
    page is 1,000 of them, on the path of the client's wait (the generic writer took ~5 µs
    each)."""
    escape = xmldoc.escape
    tail = "<StorageClass>STANDARD</StorageClass>"
    if owner is not None:
        who = escape(owner)
        tail += f"<Owner><ID>{who}</ID><DisplayName>{who}</DisplayName></Owner>"
    out = []
    for entry in entries:
        info = entry.info
        out.append(("Contents", xmldoc.Raw(
            f"<Key>{escape(enc(entry.key))}</Key>"
            f"<LastModified>{xmldoc.iso_time(info.mtime_ms)}</LastModified>"
            f"<ETag>{escape(attributes.etag(info))}</ETag>"
            f"<Size>{0 if info.is_dir else info.size}</Size>{tail}")))
    return out


def _token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode("utf-8", "surrogatepass")).decode()


def _untoken(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise invalid_argument("The continuation token provided is incorrect",
                               ArgumentName="continuation-token") from None


async def list_objects(call: Call, v2: bool, ahead: ReadAhead) -> None:
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
    reads = ahead.reader(read_pages(call), call.caller_key, continuing)
    # A page of max-keys needs one more key to know whether it is the last.
    walker = Walker(reads, bucket_path(call.owner, call.bucket), prefix, delimiter, after,
                    max_keys + 1)
    contents: list[Entry] = []
    prefixes: list[str] = []
    listed: set[str] = set()
    truncated = False
    last = ""
    async for entry in walker.entries():
        if entry.info is None and entry.key in listed:
            continue
        if len(contents) + len(prefixes) >= max_keys:
            truncated = True
            break
        if entry.info is None:
            prefixes.append(entry.key)
            listed.add(entry.key)
        else:
            contents.append(entry)
        last = entry.key
    if not contents and not prefixes:
        await require_bucket(call)    # nothing listed: an empty bucket, or none (any key
    if truncated:                     # listed was read below the bucket: it exists)
        reads.read_ahead()
    enc = (lambda s: quote(s, safe="/")) if encoding == "url" else (lambda s: s)
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
    items += _contents(contents, enc, call.owner if not v2 or q.get("fetch-owner") == "true"
                       else None)
    for common in prefixes:
        items.append(("CommonPrefixes", [("Prefix", enc(common))]))
    await call.xml(200, xmldoc.document("ListBucketResult", items))
