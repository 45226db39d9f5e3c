"""The bearer token format.

A token is `gfs_` + 43 base64url characters (256 random bits) + 6 base64url characters of a
check value (the first 4 bytes of SHA-256 over the random bits). The prefix makes a leaked token
easy to recognise (secret scanners, logs); the check value tells a mistyped or truncated token
apart from a revoked one without asking anybody. The masters store only `token_hash(token)`.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re

from gfs.errors import Unauthenticated

PREFIX = "gfs_"
SECRET_BYTES = 32
CHECK_BYTES = 4
_SECRET_CHARS = 43            # base64url of 32 bytes, unpadded
_CHECK_CHARS = 6              # base64url of 4 bytes, unpadded
TOKEN_CHARS = len(PREFIX) + _SECRET_CHARS + _CHECK_CHARS
HASH_BYTES = 32
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
AUTH_METADATA_KEY = "authorization"      # gRPC metadata: "Bearer gfs_..."
ACT_FOR_METADATA_KEY = "gfs-act-for"     # a service acting for a token: its hash (hex)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check(secret: bytes) -> bytes:
    return hashlib.sha256(b"gfs-token-check" + secret).digest()[:CHECK_BYTES]


def new_token() -> str:
    """A fresh random token."""
    secret = os.urandom(SECRET_BYTES)
    return PREFIX + _b64(secret) + _b64(_check(secret))


def parse_token(token: str) -> bytes:
    """The 32 secret bytes of a well-formed token; Unauthenticated saying what is wrong."""
    if not isinstance(token, str) or not token.startswith(PREFIX):
        raise Unauthenticated("malformed token: a gfs token starts with 'gfs_'")
    if len(token) != TOKEN_CHARS:
        raise Unauthenticated(f"malformed token: {len(token)} characters, a gfs token has "
                              f"{TOKEN_CHARS} (truncated or mistyped?)")
    body = token[len(PREFIX):]
    try:
        secret, check = _unb64(body[:_SECRET_CHARS]), _unb64(body[_SECRET_CHARS:])
    except (ValueError, TypeError):
        raise Unauthenticated("malformed token: not base64url (mistyped?)") from None
    if len(secret) != SECRET_BYTES or not hmac.compare_digest(check, _check(secret)):
        raise Unauthenticated("malformed token: its check value does not match (mistyped?)")
    return secret


def token_hash(token: str) -> bytes:
    """What the masters store and look a token up by (after checking its form)."""
    return hashlib.sha256(parse_token(token)).digest()


def short_id(hashed: bytes) -> str:
    """A token's public id: the first 12 hex digits of its hash (for listings and revoke)."""
    return hashed.hex()[:12]


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """The gRPC call metadata that carries `token` ("" = anonymous: none)."""
    return ((AUTH_METADATA_KEY, f"Bearer {token}"),) if token else ()


def acting_for(token: str, delegate: bytes | None) -> tuple[tuple[str, str], ...]:
    """Metadata for a service (an administrator's token) acting for the token with hash
    `delegate` (None: anonymous), see master/callers.py."""
    return bearer(token) + ((ACT_FOR_METADATA_KEY, delegate.hex() if delegate else "anonymous"),)
