"""Conditional requests (If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since) and
byte ranges, as S3 evaluates them."""
from __future__ import annotations

from email.utils import parsedate_to_datetime

from gateway.s3.errors import S3Error

NOT_MODIFIED = 304


def _etags(value: str) -> set[str]:
    return {v.strip().strip('"') for v in value.split(",")}


def _when(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None                      # an unparsable date is ignored, as S3 does


def evaluate(header, etag: str, mtime_ms: int, prefix: str = "") -> int:
    """0 to go on, 304 for Not Modified; raises PreconditionFailed (412). `header(name)` reads
    the request; `prefix` is "x-amz-copy-source-" for a copy's conditions on its source."""
    bare = etag.strip('"')
    mtime = mtime_ms // 1000
    if_match = header(prefix + "if-match")
    if_none = header(prefix + "if-none-match")
    since = _when(header(prefix + "if-modified-since"))
    unmodified = _when(header(prefix + "if-unmodified-since"))
    if if_match is not None:
        if "*" not in _etags(if_match) and bare not in _etags(if_match):
            raise failed(prefix + "If-Match")
    elif unmodified is not None and mtime > unmodified:
        raise failed(prefix + "If-Unmodified-Since")
    if if_none is not None:
        if "*" in _etags(if_none) or bare in _etags(if_none):
            if prefix:
                raise failed(prefix + "If-None-Match")
            return NOT_MODIFIED
    elif since is not None and mtime <= since:
        if prefix:
            raise failed(prefix + "If-Modified-Since")
        return NOT_MODIFIED
    return 0


def failed(condition: str) -> S3Error:
    return S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did "
                   "not hold", 412, Condition=condition)


def byte_range(value: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) inclusive of a single `bytes=` range over `size` bytes; None to send the
    whole object (no header, or one S3 ignores); InvalidRange (416) when it cannot be met."""
    if not value or not value.startswith("bytes="):
        return None
    spec = value[len("bytes="):].strip()
    if "," in spec:
        return None                      # several ranges: S3 sends the whole object
    first_text, sep, last_text = spec.partition("-")
    if not sep or not (first_text.isdigit() or first_text == "") or not (
            last_text.isdigit() or last_text == "") or (first_text == last_text == ""):
        return None
    if first_text == "":
        length = int(last_text)
        if length == 0 or size == 0:
            raise invalid_range(size)
        return max(0, size - length), size - 1
    first = int(first_text)
    if first >= size:
        raise invalid_range(size)
    last = int(last_text) if last_text else size - 1
    if last < first:
        return None
    return first, min(last, size - 1)


def invalid_range(size: int) -> S3Error:
    return S3Error("InvalidRange", "The requested range is not satisfiable", 416,
                   ActualObjectSize=str(size))
