"""Multipart uploads. Completion must assemble the object from its parts' chunks without
copying bytes (the file-model change and Compose on branch `rest`); until that is merged every
multipart operation answers NotImplemented — never a byte-copying fallback."""
from __future__ import annotations

from gateway.s3.errors import not_implemented
from gateway.s3.request import Call


async def dispatch(call: Call, owners) -> None:
    raise not_implemented("multipart upload (waits for the Compose operation)")


async def list_uploads(call: Call) -> None:
    raise not_implemented("multipart upload (waits for the Compose operation)")
