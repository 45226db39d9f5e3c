"""The plain REST API (docs/rest.md), served by the gateway as `builtin:rest`.

Every request runs as its caller: the `Authorization: Bearer` token (none: anonymous) goes with
each call to the masters, whose state machine decides what it may do, exactly as for the CLI.
Bytes stream both ways through gateway/objectio.py; errors are JSON
`{"error": {"code", "message"}}` with the HTTP status that fits.
"""
from __future__ import annotations

import json
import re
from collections import OrderedDict
from email.utils import formatdate
from urllib.parse import parse_qs, unquote

from gateway.http.exchange import BodyTooLarge, Exchange
from gateway.objectio import (MalformedRange, UnsatisfiableRange, content_range, download,
                              http_status, offload, parse_range, range_span, upload)
from gateway.rest.openapi import document
from gfs import paths
from gfs.client import Client, FileInfo
from gfs.errors import GfsError

PREFIX = "/v1"
FILES = PREFIX + "/files"
OPENAPI = PREFIX + "/openapi.json"
MAX_PAGE = 1000
ALLOWED = "GET, HEAD, PUT, DELETE, POST"
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{1,512}")
_CALLERS = 256                   # clients kept per token (they share the gateway's connections)


class ApiError(Exception):
    """A refusal of the REST layer itself: HTTP status, code and one-line message."""

    def __init__(self, status: int, code: str, message: str,
                 headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or []


def _json(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def describe(info: FileInfo) -> dict:
    """A file or directory as the API shows it."""
    return {"name": paths.split(info.path)[1], "path": info.path, "type": info.type,
            "size": info.size, "mtime_ms": info.mtime_ms, "ctime_ms": info.ctime_ms,
            "mode": info.mode, "owner": info.owner, "visibility": info.visibility,
            "storage_class": info.storage_class, "replication": info.replication}


def _file_headers(info: FileInfo) -> list[tuple[str, str]]:
    return [("x-gfs-type", info.type), ("last-modified", formatdate(info.mtime_ms / 1000,
                                                                    usegmt=True)),
            ("etag", f'"{info.inode:x}-{info.mtime_ms:x}"')]


class _Request:
    """The parts of a request the API reads: gfs path, query flags and values."""

    def __init__(self, ex: Exchange):
        head = ex.head
        raw = head.path[len(FILES):]
        if raw and not raw.startswith("/"):
            raise ApiError(404, "NOT_FOUND", f"no such endpoint {head.path[:200]}")
        try:
            decoded = unquote(raw, errors="strict")
            self.query = parse_qs(head.query, keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            raise ApiError(400, "INVALID_ARGUMENT", "the path or query is not valid UTF-8 "
                           "after percent-decoding") from None
        if len(decoded) > 1 and decoded.endswith("/"):
            decoded = decoded[:-1]
        self.path = paths.normalize(decoded or "/")

    def has(self, name: str) -> bool:
        return name in self.query

    def value(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        if not values:
            return default
        if len(values) > 1:
            raise ApiError(400, "INVALID_ARGUMENT", f"query parameter {name!r} is given twice")
        return values[0]

    def flag(self, name: str, default: bool = False) -> bool:
        if name not in self.query:
            return default
        value = self.value(name).lower()
        if value in ("", "1", "true", "yes"):
            return True
        if value in ("0", "false", "no"):
            return False
        raise ApiError(400, "INVALID_ARGUMENT", f"query parameter {name!r} must be true or "
                       f"false, not {value[:40]!r}")

    def number(self, name: str, default: int, low: int, high: int) -> int:
        text = self.value(name, str(default))
        if not text.isdigit() or not low <= int(text) <= high:
            raise ApiError(400, "INVALID_ARGUMENT", f"query parameter {name!r} must be a whole "
                           f"number from {low} to {high}, not {text[:40]!r}")
        return int(text)


class RestApp:
    """`await app(exchange)` serves one request. `client`: the gateway's own client, whose
    connections every caller's calls share (`Client.for_token`)."""

    def __init__(self, client: Client):
        self._client = client
        self._callers: OrderedDict[str, Client] = OrderedDict()

    def _caller(self, ex: Exchange) -> Client:
        authorization = ex.head.header("authorization")
        token = ""
        if authorization is not None:
            scheme, _, value = authorization.strip().partition(" ")
            token = value.strip()
            if scheme.lower() != "bearer" or not _TOKEN.fullmatch(token):
                raise ApiError(401, "UNAUTHENTICATED", "send Authorization: Bearer <gfs token>",
                               [("www-authenticate", 'Bearer realm="gfs"')])
        client = self._callers.pop(token, None) or self._client.for_token(token)
        self._callers[token] = client
        if len(self._callers) > _CALLERS:
            self._callers.popitem(last=False)
        return client

    async def __call__(self, ex: Exchange) -> None:
        try:
            await self._serve(ex)
        except ApiError as err:
            await self._error(ex, err.status, err.code, err.message, err.headers)
        except GfsError as err:
            extra = [("www-authenticate", 'Bearer realm="gfs"')] if err.code == "UNAUTHENTICATED" \
                else []
            await self._error(ex, http_status(err), err.code, err.message, extra)
        except BodyTooLarge:
            await self._error(ex, 413, "PAYLOAD_TOO_LARGE", "the request body is over the "
                              "gateway's limit (--max-body)")

    async def _error(self, ex: Exchange, status: int, code: str, message: str,
                     headers: list[tuple[str, str]]) -> None:
        if ex.response_started:
            ex.abort()                   # never let a short body pass for a whole one
            return
        if ex.head.method == "HEAD":             # no body, whatever the protocol
            await ex.start_response(status, headers + [("x-gfs-error", code)], end=True)
            return
        await ex.respond(status, _json({"error": {"code": code, "message": message}}) + b"\n",
                         [("content-type", "application/json")] + headers)

    async def _serve(self, ex: Exchange) -> None:
        head = ex.head
        if head.path == OPENAPI and head.method in ("GET", "HEAD"):
            await ex.respond(200, _json(document(PREFIX)), [("content-type", "application/json")])
            return
        if head.path != FILES and not head.path.startswith(FILES + "/"):
            raise ApiError(404, "NOT_FOUND", f"no such endpoint {head.path[:200]} (files are "
                           f"under {FILES}/, the API is described at {OPENAPI})")
        handler = {"GET": self._get, "HEAD": self._head, "PUT": self._put,
                   "DELETE": self._delete, "POST": self._post}.get(head.method)
        if handler is None:
            raise ApiError(405, "METHOD_NOT_ALLOWED", f"{head.method[:20]} is not allowed here",
                           [("allow", ALLOWED)])
        request = _Request(ex)
        await handler(ex, request, self._caller(ex))

    # --- reads -------------------------------------------------------------------------------

    async def _get(self, ex: Exchange, req: _Request, client: Client) -> None:
        if req.has("list"):
            await self._list(ex, req, client)
            return
        info = await offload(client.stat, req.path, for_read=True,
                             span=range_span(ex.head.header("range")))
        if info.is_dir:
            raise ApiError(409, "FAILED_PRECONDITION", f"{req.path} is a directory (list it "
                           "with ?list)")
        try:
            wanted = parse_range(ex.head.header("range"), info.size)
        except UnsatisfiableRange as err:
            raise ApiError(416, "RANGE_NOT_SATISFIABLE", str(err),
                           [("content-range", f"bytes */{info.size}")]) from None
        except MalformedRange as err:
            raise ApiError(400, "INVALID_RANGE", str(err)) from None
        first, end = wanted or (0, info.size)
        headers = _file_headers(info) + [("content-type", "application/octet-stream"),
                                         ("accept-ranges", "bytes"),
                                         ("content-length", str(end - first))]
        if wanted:
            headers.append(("content-range", content_range(first, end, info.size)))
        await ex.start_response(206 if wanted else 200, headers, end=end == first)
        if end > first:
            await download(ex, client, info, first, end)
            await ex.end()

    async def _head(self, ex: Exchange, req: _Request, client: Client) -> None:
        info = await offload(client.stat, req.path, span=(0, 0))       # no chunk list
        headers = _file_headers(info)
        if not info.is_dir:
            headers += [("content-type", "application/octet-stream"), ("accept-ranges", "bytes"),
                        ("content-length", str(info.size))]
        await ex.start_response(200, headers, end=True)

    async def _list(self, ex: Exchange, req: _Request, client: Client) -> None:
        limit = req.number("limit", MAX_PAGE, 1, MAX_PAGE)
        after = req.value("after")
        entries, next_after = await offload(client.list_page, req.path, after, limit,
                                            brief=True)
        await ex.respond(200, _json({"path": req.path, "entries": [describe(e) for e in entries],
                                     "next": next_after or None}),
                         [("content-type", "application/json")])

    # --- changes -----------------------------------------------------------------------------

    async def _put(self, ex: Exchange, req: _Request, client: Client) -> None:
        if req.path == paths.ROOT:
            raise ApiError(400, "INVALID_ARGUMENT", "PUT needs a file path under "
                           f"{FILES}/")
        create_only = (ex.head.header("if-none-match") or "").strip() == "*"
        overwrite = req.flag("overwrite", default=True) and not create_only
        length = ex.head.header("content-length")
        if length is not None and not length.strip().isdigit():
            raise ApiError(400, "INVALID_ARGUMENT", "Content-Length must be a whole number")
        if req.flag("parents"):
            await offload(client.mkdir, paths.split(req.path)[0], True)
        try:
            info = await upload(ex, client, req.path, overwrite=overwrite,
                                expected_size=int(length) if length is not None else None)
        except GfsError as err:
            if create_only and err.code == "ALREADY_EXISTS":
                raise ApiError(412, "PRECONDITION_FAILED", err.message) from None
            raise
        await ex.respond(201, _json(describe(info)), [("content-type", "application/json")])

    async def _delete(self, ex: Exchange, req: _Request, client: Client) -> None:
        trash_id = await offload(client.delete, req.path, req.flag("recursive"))
        await ex.respond(200, _json({"path": req.path, "trash_id": trash_id}),
                         [("content-type", "application/json")])

    async def _post(self, ex: Exchange, req: _Request, client: Client) -> None:
        if req.has("mkdir") == req.has("rename"):
            raise ApiError(400, "INVALID_ARGUMENT", "POST needs ?mkdir or ?rename=NEW_PATH")
        if req.has("mkdir"):
            inode = await offload(client.mkdir, req.path, req.flag("parents"))
            await ex.respond(201, _json({"path": req.path, "inode": inode}),
                             [("content-type", "application/json")])
            return
        target = req.value("rename")
        if target.startswith(FILES + "/"):
            target = target[len(FILES):]           # the URL of the new place works too
        dst = paths.normalize(target, what="rename target")
        await offload(client.rename, req.path, dst, req.flag("overwrite"))
        await ex.respond(200, _json({"path": dst, "from": req.path}),
                         [("content-type", "application/json")])
