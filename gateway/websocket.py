"""WebSockets over HTTP/2 (RFC 8441) to HTTP/1.1 upstreams.

An HTTP/2 client opens a WebSocket with an extended CONNECT (`:protocol websocket`) and no
Sec-WebSocket-Key; the HTTP/1.1 upstream needs the classic handshake (RFC 6455 4.1). The gateway
makes up the key for the upstream, checks the upstream's Sec-WebSocket-Accept against it, and
answers the HTTP/2 client 200 instead of 101 (RFC 8441 5): the stream is then the tunnel.
"""
from __future__ import annotations

import base64
import hashlib
import os

KEY_HEADER = "sec-websocket-key"
ACCEPT_HEADER = "sec-websocket-accept"
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"      # RFC 6455 1.3


def new_key() -> str:
    """A fresh Sec-WebSocket-Key: 16 random bytes, base64."""
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key: str) -> str:
    """The Sec-WebSocket-Accept an upstream must answer `key` with."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def accepted(key: str, response_headers: list[tuple[str, str]]) -> bool:
    """The upstream's 101 carries the accept value that matches `key`."""
    want = accept_for(key)
    return any(k.lower() == ACCEPT_HEADER and v.strip() == want for k, v in response_headers)
