"""Chunk capabilities: short-lived permissions, signed by the masters, that chunkservers verify
locally (no call to the masters) before they read or write a chunk.

A capability is 62 bytes:

    format (1) | key id (4) | op (1) | handle (8) | version (8) | expires, ms (8) | tag (32)

tag = HMAC-SHA256(signing key, the 30 bytes before it); the signing key of key id K with salt
S is HMAC-SHA256(cluster secret, "gfs-capability" || K || S) (`signing_key`). Key ids and salts
are replicated state (master.capability_keys); no key material crosses the wire. Chunkservers
learn the current and the previous (key id, salt) from heartbeat replies; the previous one
stays accepted until the capabilities signed with it have expired.
"""
from __future__ import annotations

import hashlib
import hmac
import struct
import threading
from typing import Callable, Iterable

from gfs.auth.secret import derive_key
from gfs.errors import PermissionDenied, Unauthenticated, Unavailable
from gfs.clock import now as gfs_now

READ, WRITE = "read", "write"
_OP_CODES = {READ: 1, WRITE: 2}
_OP_NAMES = {v: k for k, v in _OP_CODES.items()}
FORMAT = 1
_BODY = struct.Struct(">BIBQQQ")
_TAG_BYTES = 32
SIZE = _BODY.size + _TAG_BYTES
DEFAULT_TTL_S = 60.0


class UnknownKey(Unauthenticated):
    """Signed with a key id this chunkserver does not accept (yet, or any more)."""

    def __init__(self, message: str, key_id: int):
        super().__init__(message)
        self.key_id = key_id


def signing_key(cluster_secret: bytes, key_id: int, salt: bytes) -> bytes:
    return derive_key(cluster_secret, "gfs-capability", key_id.to_bytes(4, "big"), salt)


class _Keyring:
    """key id -> signing key, derived once per (key id, salt)."""

    def __init__(self, cluster_secret: bytes):
        self._secret = cluster_secret
        self._derived: dict[tuple[int, bytes], bytes] = {}

    def key(self, key_id: int, salt: bytes) -> bytes:
        k = self._derived.get((key_id, salt))
        if k is None:
            if len(self._derived) > 64:
                self._derived.clear()
            k = self._derived[(key_id, salt)] = signing_key(self._secret, key_id, salt)
        return k


def _tag(key: bytes, body: bytes) -> bytes:
    return hmac.digest(key, body, hashlib.sha256)


class CapabilityIssuer:
    """The masters' side: sign capabilities with the current key."""

    def __init__(self, cluster_secret: bytes, ttl_s: float = DEFAULT_TTL_S,
                 clock: Callable[[], float] = gfs_now):
        self.ttl_s = ttl_s
        self._keys = _Keyring(cluster_secret)
        self._clock = clock

    def issue(self, key_id: int, salt: bytes, handle: int, version: int, op: str,
              ttl_s: float | None = None) -> bytes:
        expires = int((self._clock() + (self.ttl_s if ttl_s is None else ttl_s)) * 1000)
        body = _BODY.pack(FORMAT, key_id, _OP_CODES[op], handle, version, max(0, expires))
        return body + _tag(self._keys.key(key_id, salt), body)


class CapabilityVerifier:
    """The chunkservers' side: check a capability against the keys the masters announced."""

    def __init__(self, cluster_secret: bytes, clock: Callable[[], float] = gfs_now):
        self._keyring = _Keyring(cluster_secret)
        self._clock = clock
        self._keys: dict[int, bytes] = {}     # key id -> signing key (current and previous)
        self._changed = threading.Condition()

    def set_keys(self, keys: Iterable[tuple[int, bytes]]) -> None:
        """The (key id, salt) pairs accepted from now on (from a heartbeat reply)."""
        with self._changed:
            self._keys = {key_id: self._keyring.key(key_id, salt) for key_id, salt in keys}
            self._changed.notify_all()

    def may_learn(self, key_id: int) -> bool:
        """Could a heartbeat reply still bring `key_id`? (none known yet, or a newer one)"""
        return not self._keys or key_id > max(self._keys)

    def wait_for_key(self, key_id: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: key_id in self._keys, timeout)

    @property
    def key_ids(self) -> list[int]:
        return sorted(self._keys)

    def verify(self, capability: bytes, handle: int, version: int, op: str) -> None:
        """Raise unless `capability` allows `op` on (handle, version) now: Unauthenticated for
        a missing, malformed, forged or expired one or one signed with a key no longer
        accepted; PermissionDenied for a valid one naming another chunk, version or op."""
        what = f"chunk {handle:016x} v{version}"
        if not capability:
            raise Unauthenticated(f"{op} of {what} needs a capability from the masters")
        if len(capability) != SIZE:
            raise Unauthenticated(f"{op} of {what}: malformed capability ({len(capability)} "
                                  f"bytes)")
        body, tag = capability[:_BODY.size], capability[_BODY.size:]
        fmt, key_id, op_code, c_handle, c_version, expires = _BODY.unpack(body)
        if fmt != FORMAT or op_code not in _OP_NAMES:
            raise Unauthenticated(f"{op} of {what}: malformed capability")
        keys = self._keys
        if not keys:
            raise Unavailable(f"{op} of {what}: this chunkserver has not yet heard the "
                              f"capability keys from the master leader; retry")
        key = keys.get(key_id)
        if key is None:
            why = "newer than any it heard of" if key_id > max(keys) else "rotated out"
            raise UnknownKey(f"{op} of {what}: capability signed with key {key_id}, which is "
                             f"not accepted ({why}; accepted: "
                             f"{', '.join(map(str, sorted(keys)))})", key_id)
        if not hmac.compare_digest(tag, _tag(key, body)):
            raise Unauthenticated(f"{op} of {what}: capability signature does not verify")
        now_ms = int(self._clock() * 1000)
        if now_ms > expires:
            raise Unauthenticated(f"{op} of {what}: capability expired "
                                  f"{(now_ms - expires) / 1000:.1f} s ago")
        if (c_handle, c_version, _OP_NAMES[op_code]) != (handle, version, op):
            raise PermissionDenied(f"{op} of {what}: the capability is for "
                                   f"{_OP_NAMES[op_code]} of chunk {c_handle:016x} v{c_version}")
