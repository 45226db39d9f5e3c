"""Token hash -> Principal, remembered per identity revision.

Every master RPC resolves its caller (gfs/auth/principals.py: two LMDB reads and a record
check), on the leader for reads and on every master for each command it applies. The answer
depends only on the token and user records, and every change to those bumps the state's
identity revision (master.identity.changed: AUTH_REV, in the same transaction); `last_used`,
which does not bump it, plays no part in the answer. So a principal resolved at revision R is
the answer for any transaction that reads revision R — a revoke, a disable or a scope change
bumps the revision and takes effect at its exact position in the log, the next command of the
same entry included. Expiry depends on the clock, not the revision: it is checked on every hit.

Only successful resolutions are kept (a refusal is resolved again each time, with its precise
message). An entry made inside a write transaction that is then aborted could name a revision
that a different history reaches later, so the state machine clears the cache whenever it
aborts one (`clear`). The cache belongs to one MetadataState: a snapshot install makes a new
state, and a new cache.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from gfs.auth.checker import Principal

MAX_ENTRIES = 10_000


class _Entry(NamedTuple):
    revision: int
    expires: int          # ms; 0: never
    principal: Principal


class PrincipalCache:
    """Thread-safe without a lock: one dict, each entry replaced whole (a race costs a miss)."""

    def __init__(self, max_entries: int = MAX_ENTRIES):
        self._entries: dict[bytes, _Entry] = {}
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0

    def resolve(self, auth: bytes, revision: int, now: int,
                resolve: Callable[[], tuple[Principal, int]]) -> Principal:
        """The principal of token hash `auth` at identity `revision` and time `now` (ms);
        `resolve()` computes (principal, token expiry ms) when it is not known, or raises."""
        entry = self._entries.get(auth)
        if entry is not None and entry.revision == revision and (
                not entry.expires or now < entry.expires):
            self.hits += 1
            return entry.principal
        self.misses += 1
        principal, expires = resolve()
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[auth] = _Entry(revision, expires, principal)
        return principal

    def clear(self) -> None:
        self._entries.clear()
