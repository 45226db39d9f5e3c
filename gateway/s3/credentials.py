"""Who signed an S3 request: the access key names a gfs token (gfs/auth/s3keys.py), its secret
is derived with the gateway's S3 key, the signature is checked (sigv4.py) and the token resolved
through the permission feed — revoked, expired or disabled: refused, like the token itself."""
from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

from gateway.s3 import sigv4
from gateway.s3.errors import S3Error, access_denied
from gfs.auth import s3keys
from gfs.auth.watcher import PermissionStore
from gfs.errors import GfsError, Unavailable

# A token made a moment ago reaches this gateway through the permission feed within about a
# heartbeat: an access key not known yet is looked for that long before it is refused.
NEW_KEY_WAIT_S = 2.0
# A master failover or a restart of every master leaves the feed silent for a moment: a request
# arriving then waits this long for it to come back before it is refused with 503.
FEED_BACK_WAIT_S = 5.0

_ACCESS_KEY = re.compile(r"^GK[0-9A-F]{%d}$" % (2 * s3keys.ACCESS_KEY_HASH_BYTES))


@dataclass(frozen=True)
class Caller:
    token_hash: bytes | None          # None: anonymous
    user: str                         # "" anonymous
    verified: sigv4.Verified | None


ANONYMOUS = Caller(None, "", None)


def unknown_key() -> S3Error:
    return S3Error("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in "
                   "our records.", 403)


class Credentials:
    def __init__(self, store: PermissionStore, s3_key: bytes):
        self.store = store
        self._key = s3_key

    def user_names(self) -> list[str]:
        return self.store.user_names()

    async def authenticate_soon(self, method: str, raw_path: str,
                                query: list[tuple[str, str]], headers: list[tuple[str, str]],
                                host: str) -> Caller:
        """`authenticate`, giving a well-formed access key the feed has not delivered yet up to
        NEW_KEY_WAIT_S to arrive, and a silent feed up to FEED_BACK_WAIT_S to come back (the
        request waits; nothing else does)."""
        try:
            return self.authenticate(method, raw_path, query, headers, host)
        except S3Error as err:
            if err.code == "ServiceUnavailable":
                await self._wait(lambda: self.store.lag_s <= self.store.max_lag_s,
                                 FEED_BACK_WAIT_S)
                return self.authenticate(method, raw_path, query, headers, host)
            claim = sigv4.parse_auth(headers, query) if err.code == "InvalidAccessKeyId" else None
            if claim is None or not _ACCESS_KEY.match(claim.access_key):
                raise
        prefix = bytes.fromhex(claim.access_key[2:])
        await self._wait(lambda: self.store.hash_with_prefix(prefix) is not None, NEW_KEY_WAIT_S)
        return self.authenticate(method, raw_path, query, headers, host)

    @staticmethod
    async def _wait(ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def authenticate(self, method: str, raw_path: str, query: list[tuple[str, str]],
                     headers: list[tuple[str, str]], host: str) -> Caller:
        claim = sigv4.parse_auth(headers, query)
        if claim is None:
            return ANONYMOUS
        if not _ACCESS_KEY.match(claim.access_key):
            raise unknown_key()
        hashed = self.store.hash_with_prefix(bytes.fromhex(claim.access_key[2:]))
        if hashed is None:
            raise unknown_key()
        verified = sigv4.verify(claim, s3keys.secret_for(self._key, hashed), method, raw_path,
                                query, headers, host)
        try:
            principal = self.store.principal_of_hash(hashed)
        except Unavailable as err:
            raise S3Error("ServiceUnavailable", f"cannot check credentials now: {err.message}",
                          503) from None
        except GfsError as err:
            raise access_denied(f"Access Denied: {err.message}") from None
        return Caller(hashed, principal.user, verified)
