"""S3 credentials tied to gfs tokens (docs/s3.md: credentials).

SigV4 is symmetric: whoever verifies a signature must hold the signer's secret. Rather than
store a secret per token, the secret is derived: secret = HMAC-SHA256(S3 key, token hash), where
the S3 key is HMAC-SHA256(cluster secret, "gfs-s3-secret") (gfs/auth/secret.py: derive_key).
The masters store nothing new: they hand a token's S3 secret only to a caller presenting that
very token (Identity.S3Credentials); the gateway holds the S3 key (never the cluster secret,
which could mint chunk capabilities) and derives the secret of the token an access key names.
The access key id is public: "GK" + the first 9 bytes of the token hash, in hex. A revoked or
expired token's credentials stop working with it (the gateway resolves the token each time).
"""
from __future__ import annotations

import base64
import hashlib
import hmac

from gfs.auth.secret import derive_key

PURPOSE = "gfs-s3-secret"
ACCESS_KEY_PREFIX = "GK"
ACCESS_KEY_HASH_BYTES = 9


def s3_key(cluster_secret: bytes) -> bytes:
    """The key S3 secrets derive from (all a gateway needs)."""
    return derive_key(cluster_secret, PURPOSE)


def access_key_id(token_hash: bytes) -> str:
    return ACCESS_KEY_PREFIX + token_hash[:ACCESS_KEY_HASH_BYTES].hex().upper()


def secret_for(key: bytes, token_hash: bytes) -> str:
    """The S3 secret access key of the token with hash `token_hash` (40 characters)."""
    digest = hmac.digest(key, token_hash, hashlib.sha256)
    return base64.b64encode(digest).decode()[:40]
