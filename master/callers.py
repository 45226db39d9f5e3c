"""Who is calling a master RPC: the bearer token in the gRPC metadata, hashed.

The token itself never goes further than this function: commands in the Raft log and reads of
the state carry only its SHA-256, which is what the state machine stores and checks (at the
command's position in the log for mutations, against the state read for reads)."""
from __future__ import annotations

import functools

from gfs.auth.tokens import ACT_FOR_METADATA_KEY, AUTH_METADATA_KEY, HASH_BYTES, token_hash
from gfs.errors import Unauthenticated
from master.state import AS_SYSTEM

SCHEME = "bearer "


def auth_of(context) -> bytes | None:
    """The token hash of the caller, None for an anonymous call; Unauthenticated for a
    malformed header or token (told apart from a revoked one by the token's check value).

    A call that also carries `gfs-act-for` (the hex hash of another token, or `anonymous`) is
    a service acting for that token: the S3 gateway, which verified the request's signature
    but never holds the token itself. Its auth is then both hashes (service, delegate); the
    state machine allows it only for an administrator's unscoped service token
    (master/identity.py: _delegated)."""
    found, delegate = None, None
    for key, value in context.invocation_metadata() or ():
        if key == ACT_FOR_METADATA_KEY:
            delegate = _delegate(value)
        elif key == AUTH_METADATA_KEY:
            if not isinstance(value, str) or not value.lower().startswith(SCHEME):
                raise Unauthenticated("the authorization metadata must be "
                                      "'Bearer gfs_...'")
            found = _hash_of(value[len(SCHEME):].strip())
    if delegate is None:
        return found
    if found is None:
        raise Unauthenticated("acting for another token needs a token of one's own")
    return found + delegate


def _delegate(value) -> bytes:
    if value == "anonymous":
        return bytes(HASH_BYTES)
    try:
        hashed = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        hashed = b""
    if len(hashed) != HASH_BYTES or hashed == bytes(HASH_BYTES):
        raise Unauthenticated(f"{ACT_FOR_METADATA_KEY} must be a token hash (hex) or "
                              "'anonymous'")
    return hashed


# token -> its hash (a pure function): clients send the same token on every call, and checking
# its form and hashing it twice costs more than the rest of resolving the caller. Malformed
# tokens raise and are not kept. The tokens kept are those of recent callers, which this
# process holds anyway while it serves them.
_hash_of = functools.lru_cache(maxsize=4096)(token_hash)



def caller_of(context, insecure_no_auth: bool):
    """`auth_of(context)`, or in the insecure mode (gfs/auth/insecure.py) AS_SYSTEM: whatever
    the caller sends, it acts as the masters' own administrator. A command made for such a
    caller carries no `auth` field at all (the state machine runs it as SYSTEM)."""
    return AS_SYSTEM if insecure_no_auth else auth_of(context)
