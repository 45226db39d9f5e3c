"""The OpenAPI 3.1 description of the REST API (served at /v1/openapi.json)."""
from __future__ import annotations

from functools import lru_cache


def _param(name: str, description: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "boolean"}, "allowEmptyValue": True}


def _json(ref: str, description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


_ERRORS = {str(status): _json("Error", text) for status, text in (
    (400, "bad input (path, query, range, Content-Length)"),
    (401, "no valid token where one is needed (missing, unknown, expired or revoked)"),
    (403, "the token may not do this"), (404, "no such file or directory (or not visible)"),
    (409, "exists already, is a directory, or is not empty"),
    (413, "body over the gateway's limit"), (507, "quota exceeded"),
    (503, "the cluster is not available"))}

_ENTRY = {"type": "object", "properties": {
    "name": {"type": "string"}, "path": {"type": "string"},
    "type": {"type": "string", "enum": ["file", "dir"]}, "size": {"type": "integer"},
    "mtime_ms": {"type": "integer"}, "ctime_ms": {"type": "integer"},
    "mode": {"type": "integer"}, "owner": {"type": "string"},
    "visibility": {"type": "string", "enum": ["private", "visible", "public"]},
    "storage_class": {"type": "string"}, "replication": {"type": "integer"}}}


@lru_cache(maxsize=4)
def document(prefix: str) -> dict:
    files = f"{prefix}/files/{{path}}"
    path_param = {"name": "path", "in": "path", "required": True,
                  "description": "a gfs path without its leading '/', percent-encoded",
                  "schema": {"type": "string"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "gfs REST API", "version": "1",
                 "description": "Files of a gfs cluster over plain HTTP (docs/rest.md)."},
        "components": {
            "securitySchemes": {"gfsToken": {"type": "http", "scheme": "bearer",
                                             "description": "a gfs token (gfs token create)"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"},
                                   "message": {"type": "string"}}}}},
                "Entry": _ENTRY,
                "Listing": {"type": "object", "properties": {
                    "path": {"type": "string"},
                    "entries": {"type": "array", "items": {"$ref": "#/components/schemas/Entry"}},
                    "next": {"type": ["string", "null"],
                             "description": "pass as ?after= for the next page"}}}}},
        "security": [{"gfsToken": []}, {}],
        "paths": {files: {
            "parameters": [path_param],
            "get": {"summary": "Read a file (Range: bytes=...), or list a directory (?list)",
                    "parameters": [_param("list", "list the directory (JSON, paged)"),
                                   _param("limit", "entries per page (1-1000)",
                                          {"type": "integer"}),
                                   _param("after", "the `next` of the previous page",
                                          {"type": "string"})],
                    "responses": {"200": {"description": "the file's bytes, or a Listing",
                                          "content": {"application/octet-stream": {},
                                                      "application/json": {"schema": {
                                                          "$ref": "#/components/schemas/Listing"}}}},
                                  "206": {"description": "the range asked for"},
                                  "416": _json("Error", "the range starts past the end"),
                                  **_ERRORS}},
            "head": {"summary": "A file's size and dates (X-Gfs-Type: file or dir)",
                     "responses": {"200": {"description": "headers only"}, **_ERRORS}},
            "put": {"summary": "Upload a file (streamed); replaces an existing one unless "
                               "?overwrite=false or If-None-Match: *",
                    "parameters": [_param("overwrite", "replace an existing file (default true)"),
                                   _param("parents", "create missing parent directories")],
                    "requestBody": {"content": {"application/octet-stream": {}}},
                    "responses": {"201": _json("Entry", "stored"),
                                  "412": _json("Error", "If-None-Match: * and it exists"),
                                  **_ERRORS}},
            "delete": {"summary": "Delete a file or directory (to the trash when the cluster "
                                  "keeps one)",
                       "parameters": [_param("recursive", "a non-empty directory too")],
                       "responses": {"200": {"description": "deleted"}, **_ERRORS}},
            "post": {"summary": "?mkdir: make a directory; ?rename=NEW_PATH: move",
                     "parameters": [_param("mkdir", "make the directory"),
                                    _param("parents", "with ?mkdir: missing parents too"),
                                    _param("rename", "the new path", {"type": "string"}),
                                    _param("overwrite", "with ?rename: replace a file there")],
                     "responses": {"200": {"description": "renamed"},
                                   "201": {"description": "made"}, **_ERRORS}}},
            f"{prefix}/openapi.json": {"get": {"summary": "This document", "security": [{}],
                                               "responses": {"200": {"description": "OpenAPI"}}}}},
    }
