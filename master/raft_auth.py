"""Authenticated frames for the masters' Raft port.

pysyncobj unpickles every frame it receives. Its TCP connections call an `encryptor` object
(`encrypt_at_time`, `extract_timestamp`, `decrypt`) on every frame, the very first one of a
connection included, *before* anything is decompressed or unpickled; `FrameAuthenticator` is
such an object that signs instead of encrypting: each frame is

    timestamp (8 bytes, big-endian) || HMAC-SHA256(key, timestamp || payload) || payload

with a key derived from the cluster secret. A frame whose tag does not verify raises, and
pysyncobj drops the connection without looking at the payload; so a peer without the secret
can neither get anything deserialized nor inject log entries. Replays are refused by pysyncobj's
own per-connection handshake: each side sends a random 32-byte key in its first (signed) frame
and every later frame must carry the receiver's key, so frames recorded from another connection
are rejected.

Frames are authenticated, not encrypted: metadata crosses the Raft port in clear, so the Raft
port belongs on a private network (see docs/security.md). pysyncobj's own `password` option
(Fernet: AES-CBC + HMAC, base64) was measured as the alternative; signing only costs less per
frame and needs no extra dependency.
"""
from __future__ import annotations

import hashlib
import hmac
import struct

from gfs.auth.secret import derive_key

_TIMESTAMP = struct.Struct(">Q")
_TAG_BYTES = 32
_HEADER_BYTES = _TIMESTAMP.size + _TAG_BYTES


class ForgedFrame(Exception):
    """A frame that is too short or whose tag does not verify."""


class FrameAuthenticator:
    """pysyncobj's `encryptor` interface, signing frames with HMAC-SHA256 (see module doc).
    Used from pysyncobj's single tick thread only."""

    def __init__(self, cluster_secret: bytes, purpose: str = "gfs-raft-frames"):
        self._key = derive_key(cluster_secret, purpose)
        self._verified: bytes | None = None     # the frame extract_timestamp just checked

    def _tag(self, header: bytes, payload) -> bytes:
        mac = hmac.new(self._key, header, hashlib.sha256)
        mac.update(payload)
        return mac.digest()

    def encrypt_at_time(self, data: bytes, timestamp: int) -> bytes:
        header = _TIMESTAMP.pack(timestamp)
        return header + self._tag(header, data) + data

    def _verify(self, frame: bytes) -> None:
        if frame is self._verified:
            return
        if len(frame) < _HEADER_BYTES:
            raise ForgedFrame("frame shorter than its header")
        header = frame[:_TIMESTAMP.size]
        tag = frame[_TIMESTAMP.size:_HEADER_BYTES]
        if not hmac.compare_digest(tag, self._tag(header, memoryview(frame)[_HEADER_BYTES:])):
            raise ForgedFrame("frame tag does not verify")
        self._verified = frame

    def extract_timestamp(self, frame: bytes) -> int:
        self._verify(frame)
        return _TIMESTAMP.unpack_from(frame)[0]

    def decrypt(self, frame: bytes) -> bytes:
        self._verify(frame)
        self._verified = None
        return frame[_HEADER_BYTES:]
