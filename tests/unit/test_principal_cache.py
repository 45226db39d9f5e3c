"""master/principal_cache.py: a caller resolved once per identity revision, never past a change
to it, nor past its token's expiry."""
from __future__ import annotations

import pytest

from gfs.auth.checker import Principal
from gfs.auth.tokens import new_token, token_hash
from gfs.errors import Unauthenticated
from master.principal_cache import PrincipalCache
from master.state import MetadataState

NOW = 1_000_000


def test_entries_hold_for_one_revision_and_until_expiry():
    cache, calls = PrincipalCache(), []
    alice = Principal(user="alice")

    def resolve(p=alice, expires=NOW + 10):
        calls.append(p)
        return p, expires
    assert cache.resolve(b"h", 5, NOW, resolve) is alice
    assert cache.resolve(b"h", 5, NOW + 9, resolve) is alice and len(calls) == 1
    bob = Principal(user="bob")
    assert cache.resolve(b"h", 6, NOW, lambda: resolve(bob)) is bob      # the revision moved
    assert cache.resolve(b"h", 5, NOW, resolve) is alice and len(calls) == 3   # and back: miss

    def refused():
        raise Unauthenticated("token 't' expired")
    with pytest.raises(Unauthenticated):                                  # expired: resolved
        cache.resolve(b"h", 5, NOW + 10, refused)
    with pytest.raises(Unauthenticated):                                  # refusals not kept
        cache.resolve(b"h", 5, NOW + 10, refused)
    cache.clear()
    assert cache.resolve(b"h", 5, NOW, resolve) is alice and len(calls) == 4


def test_a_bounded_cache_starts_over_when_full():
    cache = PrincipalCache(max_entries=2)
    for i in range(5):
        cache.resolve(bytes([i]), 1, NOW, lambda: (Principal(user="u"), 0))
    assert len(cache._entries) <= 2


def test_the_state_machine_sees_a_revocation_at_once_through_the_cache(tmp_path):
    with MetadataState(str(tmp_path / "meta"), map_size=1 << 26) as state:
        admin, index = new_token(), iter(range(1, 100))
        auth = token_hash(admin)
        assert state.apply(next(index), {"op": "bootstrap", "token_hash": auth, "now": NOW})["ok"]
        ci = new_token()
        assert state.apply(next(index), {"op": "token_create", "token_hash": token_hash(ci),
                                         "name": "ci", "principal": "admin", "expires": 0,
                                         "scopes": ["*"], "auth": auth, "now": NOW})["ok"]
        for _ in range(3):
            assert state.principal(token_hash(ci), NOW).token == "ci"
        assert state._principals.hits >= 2
        # Revoke and use it in one log entry: the second command is refused.
        mkdir = {"op": "mkdir", "path": "/x", "parents": False, "mode": 0o755, "owner": "",
                 "auth": token_hash(ci), "now": NOW}
        results = state.apply_batch(next(index), [
            {"op": "token_revoke", "token": "ci", "auth": auth, "now": NOW}, mkdir])
        assert "ok" in results[0] and results[1]["err"][0] == "UNAUTHENTICATED"
        with pytest.raises(Unauthenticated, match="revoked"):
            state.principal(token_hash(ci), NOW)
