"""A local, current permission store for services outside the masters (the gateway, S3, later
compute): it follows the leader's Watch feed (users, tokens, visibility changes) and resolves
tokens with no call to the masters, through the same resolution the state machine uses.

It fails closed: when the feed has been silent for longer than `max_lag_s` (the leader sends a
heartbeat at least twice a second), `principal()` refuses every token with UNAVAILABLE instead
of trusting what may be stale — a revoked token must never work for long anywhere.
"""
from __future__ import annotations

import threading
import time

from gfs.auth.checker import Principal
from gfs.auth.principals import resolve
from gfs.auth.tokens import token_hash
from gfs.errors import Unavailable
from gfs.watchfeed import FeedFollower
from proto import identity_pb2 as ipb
from proto import identity_pb2_grpc as ipb_grpc
from gfs.clock import now_ms as gfs_now_ms

PREFIX_BYTES = 8


def _user_record(u: ipb.User) -> dict:
    return {"name": u.name, "kind": u.kind, "owner": u.owner, "admin": u.admin,
            "disabled": u.disabled}


def _token_record(t: ipb.Token) -> dict:
    return {"id": t.id, "name": t.name, "principal": t.principal, "expires": t.expires_ms,
            "scopes": list(t.scopes), "revoked": t.revoked_ms}


class PermissionStore:
    """Follows the Watch feed in a background thread (`start`/`stop`, or a `with` block).
    `token` must be an administrator's (or a service account's of one)."""

    def __init__(self, masters: str | list[str] | None, token: str, max_lag_s: float = 2.0,
                 tls_ca: str | None = None):
        """`tls_ca`: CA certificate file of a cluster serving TLS (default: GFS_TLS_CA)."""
        self.max_lag_s = max_lag_s
        self.revision = 0
        self._lock = threading.Lock()
        self._users: dict[str, dict] = {}
        self._tokens: dict[bytes, dict] = {}
        self._visibility: dict[str, str] = {}
        self._by_prefix: dict[bytes, set[bytes]] = {}    # hash[:8] -> hashes (S3 access keys)
        self._feed = FeedFollower(masters, token, "permission", self._open, self._apply, tls_ca)
        self.masters = self._feed.masters

    def _open(self, channels, address: str, metadata):
        return channels.stub(address, ipb_grpc.IdentityStub).Watch(
            ipb.WatchRequest(from_revision=self.revision), metadata=metadata)

    @property
    def reconnects(self) -> int:
        return self._feed.reconnects

    @property
    def last_error(self) -> str:
        return self._feed.last_error

    def start(self) -> "PermissionStore":
        self._feed.start()
        return self

    def stop(self) -> None:
        self._feed.stop()

    def __enter__(self) -> "PermissionStore":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- answers -------------------------------------------------------------------------------

    @property
    def lag_s(self) -> float:
        """Seconds since the feed was last heard (inf before the first event)."""
        return self._feed.lag_s

    def principal(self, token: str, now_ms: int | None = None) -> Principal:
        """Who `token` is, from the local copy; Unauthenticated for a token that is not valid,
        Unavailable while the feed is more than `max_lag_s` behind (failing closed)."""
        return self.principal_of_hash(token_hash(token), now_ms)

    def principal_of_hash(self, hashed: bytes, now_ms: int | None = None) -> Principal:
        """`principal` for a token known by its hash (the S3 gateway's access keys)."""
        if self.lag_s > self.max_lag_s:
            raise Unavailable(f"the permission feed has been silent for {self.lag_s:.1f} s "
                              f"(more than {self.max_lag_s:g} s): refusing every token until it "
                              f"is back ({self.last_error or 'not connected yet'})")
        now = gfs_now_ms() if now_ms is None else now_ms
        with self._lock:
            return resolve(self._tokens.get(hashed), self._users.get, now)

    def hash_with_prefix(self, prefix: bytes) -> bytes | None:
        """The hash of the one known token starting with `prefix` (None: none, or several)."""
        with self._lock:
            found = [h for h in self._by_prefix.get(prefix[:PREFIX_BYTES], ()) if h.startswith(prefix)]
        return found[0] if len(found) == 1 else None

    def user_names(self) -> list[str]:
        """The users (not service accounts) known, sorted."""
        with self._lock:
            return sorted(n for n, u in self._users.items() if u["kind"] == "user")

    def visibility_of(self, path: str) -> str | None:
        """The latest visibility set on exactly `path` seen on the feed (None: no change seen)."""
        with self._lock:
            return self._visibility.get(path)

    def wait_current(self, timeout: float = 10.0) -> None:
        """Block until the feed has been heard from (Unavailable after `timeout`)."""
        end = time.monotonic() + timeout
        while self.lag_s > self.max_lag_s:
            if time.monotonic() > end:
                raise Unavailable(f"no permission feed within {timeout:.0f} s: {self.last_error}")
            time.sleep(0.02)

    # --- following the feed ------------------------------------------------------------------

    def _apply(self, event: ipb.WatchEvent) -> None:
        with self._lock:
            if event.snapshot:
                self._users.clear()
                self._tokens.clear()
            for u in event.users:
                self._users[u.name] = _user_record(u)
            for name in event.deleted_users:
                self._users.pop(name, None)
            if event.snapshot:
                self._by_prefix.clear()
            for t in event.tokens:
                self._tokens[t.hash] = _token_record(t.token)
                self._by_prefix.setdefault(t.hash[:PREFIX_BYTES], set()).add(t.hash)
            for v in event.visibility:
                self._visibility[v.path] = v.visibility
            self.revision = event.revision
