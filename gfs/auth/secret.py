"""The cluster secret: 32 random bytes every master and chunkserver of one cluster shares, and
the purpose-bound keys derived from it (so no key is ever used for two things and the secret
itself never crosses the wire).

`gfs cluster up` writes DIR/cluster.secret (mode 0600); daemons on separate machines get a copy
through `--cluster-secret-file` (env GFS_CLUSTER_SECRET_FILE).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import stat

from gfs.errors import FailedPrecondition

SECRET_BYTES = 32
SECRET_FILE_NAME = "cluster.secret"
ENV_VAR = "GFS_CLUSTER_SECRET_FILE"


def create_secret_file(path: str | os.PathLike) -> bytes:
    """Write a fresh random secret to `path` (created 0600, never overwritten); returns it."""
    secret = os.urandom(SECRET_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secret)
        os.fsync(fd)
    finally:
        os.close(fd)
    return secret


def load_secret_file(path: str | os.PathLike | None) -> bytes:
    """The secret in `path`. Refuses (FailedPrecondition, one line) a missing path, an
    unreadable file, one shorter than 32 bytes, or one that group or others may read."""
    if not path:
        raise FailedPrecondition(f"no cluster secret: give --cluster-secret-file FILE (or set "
                                 f"{ENV_VAR}); `gfs cluster up` writes DIR/{SECRET_FILE_NAME}")
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            secret = f.read(4096)
    except OSError as err:
        raise FailedPrecondition(f"cannot read the cluster secret {path}: "
                                 f"{err.strerror or err}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise FailedPrecondition(f"cluster secret {path} is accessible by group or others "
                                 f"(mode {stat.S_IMODE(mode):o}); chmod 600 it")
    if len(secret) < SECRET_BYTES:
        raise FailedPrecondition(f"cluster secret {path} holds {len(secret)} bytes; "
                                 f"it needs at least {SECRET_BYTES} random bytes")
    return secret


def derive_key(secret: bytes, purpose: str, *parts: bytes) -> bytes:
    """HMAC-SHA256(secret, purpose || parts...): a 32-byte key for one purpose only. Parts
    are length-prefixed, so no two different (purpose, parts) give the same input."""
    message = bytearray(purpose.encode())
    for part in parts:
        message += len(part).to_bytes(4, "big") + part
    return hmac.digest(secret, bytes(message), hashlib.sha256)
